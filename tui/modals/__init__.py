"""Modal screens: confirmations, entity forms, the show-once secret, quit."""
