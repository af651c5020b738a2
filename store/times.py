"""Times as aigw writes them for machines: ISO 8601 in UTC with a ``Z``, one shape everywhere.

Records, ``/events``, ``aigw usage --json``, quota messages and the console's request
detail all call :func:`iso_utc`, so a time read in one place matches the same time
read in another character for character.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ts: float, timespec: str = "milliseconds") -> str:
    """``2025-01-31T12:00:00.000Z`` for a Unix time (``timespec`` as ``datetime.isoformat``)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
