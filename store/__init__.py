"""The store: entities, validation, the database, TOML import/export and request records.

Imports neither :mod:`proxy` nor :mod:`tui`; both depend on it, never the reverse.
"""

__version__ = "0.1.0"
