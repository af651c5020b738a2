"""The one place that turns an exception from a worker into words for the user."""

from __future__ import annotations

import httpx
from sqlalchemy.exc import SQLAlchemyError

from store.errors import FieldError, StoreError
from store.repo import LABEL


def entry_problem(e: FieldError) -> str:
    """A problem of an entry other than the one on screen, named in the console's words
    (``model API 'b', base path: …``) rather than the store's ``model_apis[b].base_path``."""
    where = f"{LABEL.get(e.table, e.table)} {e.entry!r}" if e.entry else ""
    if e.field:
        where += (", " if where else "") + e.field.split(".")[0].replace("_", " ")
    return f"{where}: {e.message}" if where else e.message


def user_message(exc: BaseException) -> str:
    """A one-line, secret-free explanation of ``exc`` (no traceback, no credentials)."""
    if isinstance(exc, StoreError):
        if not exc.errors:
            return str(exc)
        more = len(exc.errors) - 1
        first = exc.errors[0].message
        return first if more == 0 else f"{first} (and {more} more problem{'s' if more > 1 else ''})"
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect (nothing is listening at that address)"
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.HTTPError):
        return f"network error: {type(exc).__name__}"
    if isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        return f"database error: {str(orig or exc).splitlines()[0]}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"
