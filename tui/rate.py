"""The console's one request rate: requests finished per second over the last ten seconds.

Read from the gateway's own ``requests_total`` counter (``/healthz``), so it counts every
request, whether or not a Traffic pane is following ``/events``. The header and the
Traffic pane both show this number, so they never disagree at the same moment.
"""

from __future__ import annotations

from collections import deque

#: Seconds the rate is averaged over (one poll's difference is too jumpy to read).
RATE_WINDOW_S = 10.0


class RequestRate:
    """Samples of ``(time, requests_total)``; :meth:`observe` adds one and returns the rate."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def observe(self, total: int, now: float) -> float | None:
        """``None`` until two samples exist (or after the counter went back: a new gateway)."""
        if self._samples and (total < self._samples[-1][1] or now <= self._samples[-1][0]):
            self._samples.clear()
        self._samples.append((now, total))
        # Keep one sample at or before the window's start, so the span covers the window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        if len(self._samples) < 2:
            return None
        t0, n0 = self._samples[0]
        return (total - n0) / (now - t0)


def rate_text(rate: float | None) -> str:
    return f"{rate:.1f} req/s" if rate is not None else "– req/s"
