"""The one place that turns an exception from a worker into words for the user."""

from __future__ import annotations

import httpx
from sqlalchemy.exc import SQLAlchemyError

from store.errors import StoreError


def user_message(exc: BaseException) -> str:
    """A one-line, secret-free explanation of ``exc`` (no traceback, no credentials)."""
    if isinstance(exc, StoreError):
        return str(exc)
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
