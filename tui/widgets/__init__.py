"""Reusable widgets of the console (sidebar, gateway header, form fields)."""
