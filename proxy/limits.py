"""Traffic control (SPEC §2): per-consumer rpm/tpm windows and period quotas, in memory.

The pipeline calls :meth:`Limiter.check` before forwarding and :meth:`Limiter.settle`
once the answer is accounted (tokens of a stream are known only at its end), so
another backend (one shared by several gateway processes) can replace
:class:`MemoryLimiter` without touching the pipeline.

* ``requests_per_minute`` / ``tokens_per_minute`` come from the snapshot (the most
  generous granting group) per (consumer, API) and are counted over a sliding 60 s
  window: exact, and O(1) amortised per request.
* ``quota`` is counted per consumer and period from the request records: restored
  from the store before serving, then kept up to date by ``settle``; a new period or a
  changed unit is loaded lazily in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from store.usage import period_end, period_start

from .context import RequestContext, Usage
from .errors import GatewayError, rate_limited
from .routes import Consumer, Snapshot

log = logging.getLogger("aigw.limits")

WINDOW_S = 60.0
#: ``Retry-After`` for a spent ``total`` quota (it never resets by itself).
TOTAL_RETRY_S = 3600.0

#: ``(consumer, unit, since, until) -> used``: what the records say (runs off the loop).
QuotaLoader = Callable[[str, str, float, float], Awaitable[float]]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool = True
    #: The refusal, as the client will read it (429 with Retry-After).
    error: GatewayError | None = None
    #: ``x-ratelimit-*`` headers for the response, refused or not.
    headers: dict[str, str] | None = None


ALLOW = Decision()


class Limiter(Protocol):
    def check(self, ctx: RequestContext) -> Decision:
        """Admit or refuse ``ctx`` (its consumer and API are known); never blocks."""
        ...

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        """Account what the request used once it is done (tokens for tpm and quotas)."""
        ...

    async def restore(self, snapshot: Snapshot) -> None:
        """Load what the store knows (quota use this period) before serving."""
        ...

    def current_use(self, snapshot: Snapshot) -> dict[str, Any]:
        """Each consumer's limits and what it uses now (``GET /limits`` for the console)."""
        ...


class PassThroughLimiter:
    """Admits everything (benchmarks of the bare request path)."""

    def check(self, ctx: RequestContext) -> Decision:
        return ALLOW

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        return None

    async def restore(self, snapshot: Snapshot) -> None:
        return None

    def current_use(self, snapshot: Snapshot) -> dict[str, Any]:
        return {}


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    s = math.ceil(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"


@dataclass(slots=True)
class _Tokens:
    """Tokens charged in the last minute: (time, n) entries and their running sum."""

    entries: deque[tuple[float, int]] = field(default_factory=deque)
    used: int = 0

    def expire(self, now: float) -> None:
        e = self.entries
        while e and e[0][0] <= now - WINDOW_S:
            self.used -= e.popleft()[1]

    def retry_after(self, now: float, limit: int) -> float:
        """Seconds until enough charged tokens leave the window to be under ``limit``."""
        over = self.used - limit + 1
        for t, n in self.entries:
            over -= n
            if over <= 0:
                return t + WINDOW_S - now
        return WINDOW_S


@dataclass(slots=True)
class _Quota:
    used: float = 0.0
    created: float = 0.0
    loaded: bool = False


class MemoryLimiter:
    """One process's limits. Everything runs on the event loop: counts are exact."""

    def __init__(self, loader: QuotaLoader | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.loader = loader
        self.clock = clock
        self._requests: dict[tuple[str, str], deque[float]] = {}
        self._tokens: dict[tuple[str, str], _Tokens] = {}
        self._quotas: dict[tuple[str, str, float], _Quota] = {}
        self._loading: set[asyncio.Task[None]] = set()

    # ---------------------------------------------------------------- check

    def check(self, ctx: RequestContext) -> Decision:
        consumer, api = ctx.consumer, ctx.api
        if consumer is None or api is None:
            return ALLOW
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        rpm = limits.requests_per_minute if limits else 0
        tpm = limits.tokens_per_minute if limits else 0
        if not rpm and not tpm and not consumer.quota:
            return ALLOW
        now = self.clock()
        key = (consumer.name, api.name)
        headers: dict[str, str] = {}
        error: GatewayError | None = None

        window: deque[float] | None = None
        if rpm:
            window = self._requests.get(key)
            if window is None:
                window = self._requests[key] = deque()
            while window and window[0] <= now - WINDOW_S:
                window.popleft()
            if len(window) >= rpm:
                wait = window[0] + WINDOW_S - now
                error = rate_limited(
                    f"consumer {consumer.name!r} reached {rpm} requests per minute on model API "
                    f"{api.name!r}; retry in {duration(wait)}", wait)
        if tpm:
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = _Tokens()
            tokens.expire(now)
            headers["x-ratelimit-limit-tokens"] = str(tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, tpm - tokens.used))
            headers["x-ratelimit-reset-tokens"] = duration(
                tokens.entries[0][0] + WINDOW_S - now if tokens.entries else 0)
            if error is None and tokens.used >= tpm:
                wait = tokens.retry_after(now, tpm)
                error = rate_limited(
                    f"consumer {consumer.name!r} reached {tpm} tokens per minute on model API "
                    f"{api.name!r}; retry in {duration(wait)}", wait)
        if error is None and consumer.quota:
            error = self._check_quota(consumer, now)

        if window is not None:
            if error is None:
                window.append(now)  # admitted: it takes a slot
            headers["x-ratelimit-limit-requests"] = str(rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, rpm - len(window)))
            headers["x-ratelimit-reset-requests"] = duration(
                window[0] + WINDOW_S - now if window else 0)
        if error is not None:
            if error.headers is not None:
                error.headers.update(headers)
            return Decision(False, error, headers or None)
        return Decision(True, None, headers or None)

    def _check_quota(self, consumer: Consumer, now: float) -> GatewayError | None:
        q = self._quota(consumer, now)
        if q.used < consumer.quota:
            return None
        unit = consumer.quota_unit
        amount = f"{consumer.quota:g} {unit}" if unit != "cost" else f"a cost of {consumer.quota:g}"
        end = period_end(consumer.quota_period, now)
        if end is None:  # a total quota never resets: only an operator can raise it
            return rate_limited(f"consumer {consumer.name!r} has used its total quota of {amount}; "
                                "ask the gateway operator to raise it", TOTAL_RETRY_S,
                                code="insufficient_quota")
        when = datetime.fromtimestamp(end, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        return rate_limited(f"consumer {consumer.name!r} has used its quota of {amount} per "
                            f"{consumer.quota_period}; it resets at {when}", end - now,
                            code="insufficient_quota")

    def _quota(self, consumer: Consumer, now: float) -> _Quota:
        key = (consumer.name, consumer.quota_unit, period_start(consumer.quota_period, now))
        q = self._quotas.get(key)
        if q is None:
            q = self._quotas[key] = _Quota(created=now, loaded=self.loader is None)
            if self.loader is not None:
                self._schedule_load(key, q)
        return q

    def _schedule_load(self, key: tuple[str, str, float], q: _Quota) -> None:
        assert self.loader is not None
        loader = self.loader

        async def load() -> None:
            try:
                q.used += await loader(key[0], key[1], key[2], q.created)
            except Exception as exc:  # keep counting from what we saw; the log says why
                log.error("cannot restore quota use of consumer %r: %s", key[0], type(exc).__name__)
            finally:
                q.loaded = True

        with contextlib.suppress(RuntimeError):  # no running loop (unit tests without one)
            task = asyncio.get_running_loop().create_task(load())
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)

    # ---------------------------------------------------------------- settle

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        consumer, api = ctx.consumer, ctx.api
        if consumer is None or api is None or ctx.service is None:
            return  # refused before forwarding: uses neither tokens nor quota
        now = self.clock()
        total = usage.total_tokens if usage else 0
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        if total and limits and limits.tokens_per_minute:
            key = (consumer.name, api.name)
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = _Tokens()
            tokens.expire(now)
            tokens.entries.append((now, total))
            tokens.used += total
        if consumer.quota:
            q = self._quota(consumer, ctx.ts)
            # A request older than a lazily loaded counter is in the records it loads from.
            if ctx.ts >= q.created or q.loaded:
                unit = consumer.quota_unit
                q.used += 1 if unit == "requests" else ctx.cost if unit == "cost" else total

    # ---------------------------------------------------------------- restore

    async def restore(self, snapshot: Snapshot) -> None:
        """Quota use of every consumer with a quota, from the records, before serving."""
        now = self.clock()
        for consumer in snapshot.consumers.values():
            if consumer.quota:
                self._quota(consumer, now)
        if self._loading:
            await asyncio.gather(*self._loading, return_exceptions=True)

    # ---------------------------------------------------------------- reporting

    def current_use(self, snapshot: Snapshot) -> dict[str, Any]:
        now = self.clock()
        out: dict[str, Any] = {}
        for name, consumer in snapshot.consumers.items():
            apis: dict[str, Any] = {}
            for api in sorted(snapshot.grants.get(name, ())):
                limits = snapshot.limits.get((name, api))
                if limits is None:
                    continue
                window = self._requests.get((name, api))
                used_requests = sum(1 for t in window if t > now - WINDOW_S) if window else 0
                tokens = self._tokens.get((name, api))
                used_tokens = sum(n for t, n in tokens.entries if t > now - WINDOW_S) if tokens else 0
                apis[api] = {
                    "requests_per_minute": {"limit": limits.requests_per_minute,
                                            "used": used_requests},
                    "tokens_per_minute": {"limit": limits.tokens_per_minute, "used": used_tokens},
                }
            entry: dict[str, Any] = {"apis": apis, "quota": None}
            if consumer.quota:
                key = (name, consumer.quota_unit, period_start(consumer.quota_period, now))
                q = self._quotas.get(key)
                entry["quota"] = {
                    "limit": consumer.quota, "unit": consumer.quota_unit,
                    "period": consumer.quota_period, "used": q.used if q else None,
                    "resets_at": period_end(consumer.quota_period, now),
                }
            out[name] = entry
        return out
