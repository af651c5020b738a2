"""Bounded waits for thread workers inside a Pilot session (import: ``from pilot_helpers import wait_until``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helpers import Polls
from textual.pilot import Pilot


async def wait_until(pilot: Pilot[Any], cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Pause the pilot until ``cond()`` is truthy (workers run in threads), or fail.

    The async twin of ``helpers.wait_for`` (same deadline and failure, :class:`helpers.Polls`):
    inside a Pilot session the app runs on this event loop, so a wait must ``await
    pilot.pause`` to let it process the workers' messages; ``time.sleep`` would block it.
    """
    polls = Polls(cond, timeout, what)
    for value in polls:
        if value:
            return value
        await pilot.pause(0.05)
    raise polls.failure()
