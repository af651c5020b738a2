"""A digest of the schema this aigw's models describe, so opening a current database is cheap.

Migrating means ``create_all`` plus an inspection of every table's columns and indexes:
tens of milliseconds on each open, and the console and the gateway open the store often.
The digest is stored beside ``schema_version`` after a migration; an open that finds the
same digest knows the full migration has nothing left to do. Anything a migration acts on
goes into it: tables, columns (type, nullability, key, default), indexes and their
uniqueness, constraints.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from sqlalchemy import Column, ForeignKeyConstraint, MetaData, UniqueConstraint
from sqlmodel import SQLModel

from . import models

KEY = "schema_fingerprint"


def _default(value: Any) -> str:
    """A default as it would change the schema: a factory by its name (``utcnow`` gives a new
    value on every call), a constant by its value."""
    if value is None:
        return ""
    arg = getattr(value, "arg", value)
    if callable(arg):
        return f"{getattr(arg, '__module__', '')}.{getattr(arg, '__qualname__', type(arg).__name__)}()"
    return repr(arg)


def _column(column: Column[Any]) -> list[Any]:
    return [
        column.name,
        repr(column.type),
        bool(column.nullable),
        bool(column.primary_key),
        bool(column.unique),
        _default(column.default),
        _default(column.server_default),
    ]


def describe(metadata: MetaData) -> list[Any]:
    """Every part of ``metadata`` a migration creates or reconciles, in a stable order."""
    tables: list[Any] = []
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        indexes = sorted([ix.name or "", bool(ix.unique), [c.name for c in ix.columns]] for ix in table.indexes)
        constraints = sorted(
            [
                type(con).__name__,
                [c.name for c in con.columns],
                sorted(fk.target_fullname for fk in con.elements) if isinstance(con, ForeignKeyConstraint) else [],
            ]
            for con in table.constraints
            if isinstance(con, (ForeignKeyConstraint, UniqueConstraint))
        )
        tables.append([table.name, [_column(c) for c in table.columns], indexes, constraints])
    return tables


@cache
def fingerprint() -> str:
    """The digest of this aigw's schema (and its schema version)."""
    text = json.dumps([models.SCHEMA_VERSION, describe(SQLModel.metadata)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
