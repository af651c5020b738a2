"""Bounded waits for thread workers inside a Pilot session (import: ``from pilot_helpers import wait_until``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot


async def wait_until(pilot: Pilot[Any], cond: Callable[[], Any], timeout: float = 15.0,
                     what: str = "condition") -> Any:
    """Pause the pilot until ``cond()`` is truthy (workers run in threads), or fail."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
            if value:
                return value
        except Exception as exc:
            last = exc
        await pilot.pause(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last!r}" if last else ""))

