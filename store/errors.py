"""Typed store errors that name the table, the entry and the field.

Every writer (console form, TOML import, CLI) turns these into user-facing text in
one place, so the message a user reads is always "where" + "what to fix".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One broken rule: ``table[entry].field: message``."""

    table: str
    entry: str
    field: str
    message: str

    def __str__(self) -> str:
        where = self.table
        if self.entry:
            where += f"[{self.entry}]"
        if self.field:
            where += f".{self.field}"
        return f"{where}: {self.message}"


class StoreError(Exception):
    """A refused change. Carries every :class:`FieldError` found, first one in ``str``."""

    def __init__(self, errors: list[FieldError] | FieldError | str) -> None:
        if isinstance(errors, str):
            errors = [FieldError("", "", "", errors)]
        elif isinstance(errors, FieldError):
            errors = [errors]
        self.errors: list[FieldError] = list(errors)
        super().__init__(str(self.errors[0]) if self.errors else "invalid change")

    def __str__(self) -> str:
        if not self.errors:
            return "invalid change"
        first = str(self.errors[0]).lstrip(": ")
        more = len(self.errors) - 1
        return first if more == 0 else f"{first} (and {more} more problem{'s' if more > 1 else ''})"

    def for_field(self, name: str) -> str | None:
        """The first message about ``name`` — what a console form shows under that input."""
        for err in self.errors:
            if err.field == name or err.field.startswith(name + "."):
                return err.message
        return None


class ReferencedError(StoreError):
    """Deleting an entity others still use."""


class NotFoundError(StoreError):
    """The named entity does not exist."""


@dataclass
class ErrorList:
    """Collects :class:`FieldError` while validating, raised once at the end."""

    items: list[FieldError] = field(default_factory=list)

    def add(self, table: str, entry: str, fld: str, message: str) -> None:
        self.items.append(FieldError(table, entry, fld, message))

    def raise_if_any(self) -> None:
        if self.items:
            raise StoreError(self.items)
