"""The console (Textual) and the ``aigw`` command line."""
