"""Traffic control: per-consumer rpm/tpm windows and period quotas, in memory.

The pipeline calls :meth:`Limiter.check` before forwarding and :meth:`Limiter.settle`
once the answer is accounted (tokens of a stream are known only at its end), so
another backend (one shared by several gateway processes) can replace
:class:`MemoryLimiter` without touching the pipeline.

* ``requests_per_minute`` / ``tokens_per_minute`` come from the snapshot (the most
  generous granting group) per (consumer, API) and are counted over a sliding 60 s
  window: O(1) amortised per request, in bounded memory (entries of one 10 ms slot
  merge; a count leaves the window at most 10 ms late, never early).
* ``quota`` is counted per consumer and period from the request records: loaded by
  :meth:`Limiter.restore` before serving and again for every consumer a new snapshot
  brings (a new consumer, a quota given, a changed unit or period) *before* that
  snapshot serves a request, then kept up to date by ``settle``. So a counter exists
  and is complete before the first request that can use it is checked: admission is
  exact from the first request, with no query on the request path. A new period starts
  a counter at 0 (this process's requests are the only ones it counts until the next
  load; gateways sharing a store see each other's use from then).

Concurrency: ``check`` *reserves* what an admitted request may use (one request; an
estimate of its tokens — prompt from the body size plus ``max_tokens`` /
``max_completion_tokens``, else :data:`DEFAULT_COMPLETION_TOKENS` — and their cost at the
API's highest price), and ``settle`` swaps the reservation for the real usage (or drops
it when nothing was forwarded). A request is admitted while ``used + reserved < limit``,
so requests in flight count against the limit. Bound: a ``requests`` quota and rpm are
exact; for tokens, tpm and cost the total can end above the limit by at most the last
admitted request's own usage plus what requests in flight at that moment used beyond
their reservations (zero when clients send ``max_tokens`` and the vendor honours it). An
admitted answer is never cut off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from store.times import iso_utc
from store.usage import period_end, period_start

from .context import RequestContext, Usage
from .errors import GatewayError, rate_limited
from .routes import Consumer, Snapshot

log = logging.getLogger("aigw.limits")

#: The response headers the limiter sets (a vendor's own of these names are replaced).
LIMIT_HEADERS = frozenset(
    {
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-tokens",
    }
)
WINDOW_S = 60.0
#: Window entries closer than this are merged (see :class:`_Window`).
SLOT_S = 0.01
SLOTS_PER_S = round(1 / SLOT_S)
#: ``Retry-After`` for a spent ``total`` quota (it never resets by itself).
TOTAL_RETRY_S = 3600.0

#: Completion tokens reserved for a request that does not say ``max_tokens``.
DEFAULT_COMPLETION_TOKENS = 256
#: Body bytes per reserved prompt token: JSON overhead makes this an over-estimate for
#: English; UTF-8 CJK text (3 bytes ≈ 1 token) is still covered.
BYTES_PER_TOKEN = 3
#: ``Retry-After`` when only reservations of requests in flight are in the way.
RESERVED_RETRY_S = 1.0

#: ``(consumer, unit, since, until) -> used``: what the records say (runs off the loop).
QuotaLoader = Callable[[str, str, float, float], Awaitable[float]]


class Decision:
    """Admitted or refused, with the ``x-ratelimit-*`` header lines for the response.

    A plain slotted class, not a frozen dataclass: one is made per limited request, and a
    frozen ``__init__`` costs a ``object.__setattr__`` per field.
    """

    __slots__ = ("allowed", "error", "headers")

    def __init__(self, allowed: bool = True, error: GatewayError | None = None, headers: bytes = b"") -> None:
        self.allowed = allowed
        #: The refusal, as the client will read it (429 with Retry-After).
        self.error = error
        #: ``x-ratelimit-*`` header lines for the response (refused or not), ready for the
        #: wire: formatted once, here, not as a dict encoded again by every response.
        self.headers = headers

    def header(self, name: str) -> str | None:
        """One header's value (for tests and tools; the response takes :attr:`headers`)."""
        for line in self.headers.decode("latin-1").split("\r\n"):
            k, _, v = line.partition(": ")
            if k == name:
                return v
        return None


ALLOW = Decision()


class Limiter(Protocol):
    def check(self, ctx: RequestContext) -> Decision | Awaitable[Decision]:
        """Admit or refuse ``ctx`` (its consumer and API are known); never blocks the loop.

        In-memory state answers at once (a :class:`Decision`); state held elsewhere (Redis)
        answers with an awaitable, one round trip. Admitting reserves what the request may
        use until :meth:`settle` for it.
        """
        ...

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        """Account what the request used once it is done (tokens for tpm and quotas).

        Called once for every checked request, admitted or not, forwarded or not: it
        releases the reservation made by :meth:`check`.
        """
        ...

    async def restore(self, snapshot: Snapshot) -> None:
        """Load what the store knows (quota use this period) before ``snapshot`` serves.

        Called before serving and before each new snapshot is swapped in, for the
        consumers whose quota counter the limiter does not hold yet.
        """
        ...

    def current_use(self, snapshot: Snapshot) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Each consumer's limits and what it uses now (``GET /limits`` for the console);
        an awaitable where the counts live elsewhere."""
        ...

    @property
    def shared(self) -> bool:
        """Whether the counts are shared with other processes right now (``aigw_limits_shared``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where the counts live, for ``/healthz``."""
        ...

    async def close(self) -> None:
        """Let go of connections (after the data plane has drained)."""
        ...


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    s = math.ceil(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60}s"


def duration_bytes(seconds: float) -> bytes:
    """:func:`duration` for a header line, straight to bytes (once per limited request)."""
    if seconds < 1:
        return duration(seconds).encode()
    s = math.ceil(seconds)
    return b"%ds" % s if s < 60 else b"%dm%ds" % divmod(s, 60)


_REQUEST_LINES = (
    b"x-ratelimit-limit-requests: %d\r\nx-ratelimit-remaining-requests: %d\r\nx-ratelimit-reset-requests: %b\r\n"
)
_TOKEN_LINES = b"x-ratelimit-limit-tokens: %d\r\nx-ratelimit-remaining-tokens: %d\r\nx-ratelimit-reset-tokens: %b\r\n"


def rpm_error(consumer: str, api: str, rpm: int, wait: float) -> GatewayError:
    return rate_limited(
        f"consumer {consumer!r} reached {rpm} requests per minute on model API {api!r}; retry in {duration(wait)}",
        wait,
    )


def tpm_error(consumer: str, api: str, tpm: int, wait: float, *, reserved_only: bool) -> GatewayError:
    return rate_limited(
        f"consumer {consumer!r} reached {tpm} tokens per minute on model API {api!r}"
        + (" (counting requests in progress)" if reserved_only else "")
        + f"; retry in {duration(wait)}",
        wait,
    )


def quota_error(consumer: Consumer, used: float, reserved: float, now: float) -> GatewayError | None:
    """The refusal of a spent quota (``None`` while ``used + reserved`` is under it)."""
    if used + reserved < consumer.quota:
        return None
    unit = consumer.quota_unit
    amount = f"{consumer.quota:g} {unit}" if unit != "cost" else f"a cost of {consumer.quota:g}"
    if used < consumer.quota:  # only requests in progress hold the rest: they settle soon
        return rate_limited(
            f"consumer {consumer.name!r} has {amount} per "
            f"{consumer.quota_period} left to spend, all held by its requests "
            f"in progress; retry in {duration(RESERVED_RETRY_S)}",
            RESERVED_RETRY_S,
            code="insufficient_quota",
        )
    end = period_end(consumer.quota_period, now)
    if end is None:  # a total quota never resets: only an operator can raise it
        return rate_limited(
            f"consumer {consumer.name!r} has used its total quota of {amount}; ask the gateway operator to raise it",
            TOTAL_RETRY_S,
            code="insufficient_quota",
        )
    when = iso_utc(end, "seconds")
    return rate_limited(
        f"consumer {consumer.name!r} has used its quota of {amount} per {consumer.quota_period}; it resets at {when}",
        end - now,
        code="insufficient_quota",
    )


def limited(ctx: RequestContext) -> bool:
    """Whether any limit applies to ``ctx``'s consumer on its API (else no state is touched)."""
    consumer, api = ctx.consumer, ctx.api
    if consumer is None or api is None:
        return False
    if consumer.quota:
        return True
    limits = ctx.snapshot.limits.get((consumer.name, api.name))
    return limits is not None and bool(limits.requests_per_minute or limits.tokens_per_minute)


class PeriodStarts:
    """``period_start`` cached until the period ends: the calendar math stays off the hot path."""

    def __init__(self) -> None:
        self._periods: dict[str, tuple[float, float]] = {}

    def __call__(self, period: str, now: float) -> float:
        cached = self._periods.get(period)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[0]
        start = period_start(period, now)
        end = period_end(period, now)
        self._periods[period] = (start, end if end is not None else math.inf)
        return start


@dataclass(slots=True)
class _Window:
    """Requests or tokens counted in the last minute: ``[time, n, slot]`` entries and their sum.

    Entries of one :data:`SLOT_S` slot are merged, keeping the later time: the memory of a
    window is bounded (60 s / 10 ms = 6,000 entries) however fast requests come, where one
    entry per request grew with the rate (tens of MB at a few thousand requests a second).
    A merged count leaves the window at most 10 ms late, never early: a limit is never
    exceeded, and a request alone in its slot is counted exactly.
    """

    entries: deque[list[float]] = field(default_factory=deque)
    used: int = 0
    #: Estimates held by admitted requests still in flight (tokens only).
    reserved: int = 0

    def add(self, now: float, n: int) -> None:
        slot = int(now * SLOTS_PER_S)
        e = self.entries
        if e and e[-1][2] == slot:
            last = e[-1]
            last[0] = now
            last[1] += n
        else:
            e.append([now, n, slot])
        self.used += n

    def expire(self, now: float) -> None:
        e = self.entries
        while e and e[0][0] <= now - WINDOW_S:
            self.used -= int(e.popleft()[1])

    def reset_in(self, now: float) -> float:
        """Seconds until the oldest counted entry leaves the window."""
        return self.entries[0][0] + WINDOW_S - now if self.entries else 0.0

    def retry_after(self, now: float, limit: int) -> float:
        """Seconds until enough leaves the window to be under ``limit``."""
        over: float = float(self.used - limit + 1)
        for t, n, _ in self.entries:
            over -= n
            if over <= 0:
                return t + WINDOW_S - now
        return WINDOW_S


@dataclass(slots=True)
class _Quota:
    used: float = 0.0
    #: Held by admitted requests still in flight (1 each for a ``requests`` quota).
    reserved: float = 0.0
    #: Records of requests that started before this are in ``used`` (loaded from the store).
    created: float = 0.0


@dataclass(slots=True)
class _Hold:
    """What one admitted request reserved, returned by ``settle``."""

    tokens: _Window | None = None
    tokens_n: int = 0
    quota: _Quota | None = None
    quota_n: float = 0.0


def estimate_tokens(ctx: RequestContext) -> int:
    """An upper-leaning guess of a request's tokens before it is forwarded (O(1))."""
    body = ctx.body or {}
    out = body.get("max_completion_tokens")
    if out is None:
        out = body.get("max_tokens")
    if not isinstance(out, int) or isinstance(out, bool) or out < 0:
        out = DEFAULT_COMPLETION_TOKENS
    prompt = len(ctx.raw_body) // BYTES_PER_TOKEN + 1
    return prompt + out


def estimates(ctx: RequestContext, consumer: Consumer, tpm: int) -> tuple[int, float]:
    """The tokens and cost ``ctx`` may use, computed only where a limit counts them."""
    unit = consumer.quota_unit if consumer.quota else ""
    tokens = estimate_tokens(ctx) if tpm or unit in ("tokens", "cost") else 0
    return tokens, estimate_cost(ctx, tokens) if unit == "cost" else 0.0


def estimate_cost(ctx: RequestContext, tokens: int) -> float:
    """The estimate priced at the API's dearest service for the model (all tokens as output)."""
    api = ctx.api
    if api is None:
        return 0.0
    asked = (ctx.body or {}).get("model")
    top = 0.0
    for svc in (*api.services, *api.fallbacks):
        model = asked if isinstance(asked, str) and asked else svc.default_model
        price = svc.price_for(model) if model else None
        if price is not None:
            top = max(top, price.input, price.output)
    return tokens * top / 1_000_000


class MemoryLimiter:
    """One process's limits. Everything runs on the event loop: counts are exact."""

    def __init__(self, loader: QuotaLoader | None = None, clock: Callable[[], float] = time.time) -> None:
        self.loader = loader
        self.clock = clock
        self._requests: dict[tuple[str, str], _Window] = {}
        self._tokens: dict[tuple[str, str], _Window] = {}
        self._quotas: dict[tuple[str, str, float], _Quota] = {}
        self._period_start = PeriodStarts()
        #: Reservations of admitted requests, by ``id(ctx)`` until ``settle``.
        self._holds: dict[int, _Hold] = {}

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
        tokens, cost = estimates(ctx, consumer, tpm)
        return self.admit(id(ctx), consumer, api.name, rpm, tpm, tokens, cost)

    def admit(
        self, hold: int, consumer: Consumer, api: str, rpm: int, tpm: int, estimate: int, cost: float
    ) -> Decision:
        """:meth:`check` by names and numbers: what another process asks for its request
        ``hold`` (its estimates made there, where the body is)."""
        now = self.clock()
        key = (consumer.name, api)
        error: GatewayError | None = None
        token_lines = b""

        window: _Window | None = None
        if rpm:
            window = self._requests.get(key)
            if window is None:
                window = self._requests[key] = _Window()
            window.expire(now)
            if window.used >= rpm:
                error = rpm_error(consumer.name, api, rpm, window.retry_after(now, rpm))
        tokens: _Window | None = None
        if tpm:
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = _Window()
            tokens.expire(now)
            taken = tokens.used + tokens.reserved
            token_lines = _TOKEN_LINES % (tpm, max(0, tpm - taken), duration_bytes(tokens.reset_in(now)))
            if error is None and taken >= tpm:
                wait = tokens.retry_after(now, tpm) if tokens.used >= tpm else RESERVED_RETRY_S
                error = tpm_error(consumer.name, api, tpm, wait, reserved_only=tokens.used < tpm)
        quota: _Quota | None = None
        if error is None and consumer.quota:
            quota = self._quota(consumer, now)
            error = quota_error(consumer, quota.used, quota.reserved, now)

        lines = token_lines
        if window is not None:
            if error is None:
                window.add(now, 1)  # admitted: it takes a slot
            lines = _REQUEST_LINES % (rpm, max(0, rpm - window.used), duration_bytes(window.reset_in(now))) + lines
        if error is not None:
            return Decision(False, error, lines)
        if tokens is not None or quota is not None:
            # Hold what the admitted request may use, so concurrent checks see it.
            h = self._holds[hold] = _Hold()
            if tokens is not None:
                h.tokens, h.tokens_n = tokens, estimate
                tokens.reserved += estimate
            if quota is not None:
                unit = consumer.quota_unit
                n = 1.0 if unit == "requests" else cost if unit == "cost" else float(estimate)
                h.quota, h.quota_n = quota, n
                quota.reserved += n
        return Decision(True, None, lines)

    def _quota(self, consumer: Consumer, ts: float) -> _Quota:
        """The counter of the period holding ``ts``; one not loaded by :meth:`restore` is a new
        period's, which no request of this process has used yet: it starts at 0."""
        key = (consumer.name, consumer.quota_unit, self._period_start(consumer.quota_period, ts))
        q = self._quotas.get(key)
        if q is None:
            q = self._quotas[key] = _Quota(created=key[2])
        return q

    # ---------------------------------------------------------------- settle

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        consumer, api = ctx.consumer, ctx.api
        if consumer is None or api is None:
            self._holds.pop(id(ctx), None)
            return
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        tpm = bool(limits and limits.tokens_per_minute)
        total = usage.total_tokens if usage else 0
        # A cache hit counts as a request (its usage is none: no tokens, no cost).
        forwarded = ctx.service is not None or ctx.cache == "hit"
        self.account(id(ctx), consumer, api.name, tpm, forwarded, ctx.ts, total, ctx.cost)

    def account(
        self, hold: int, consumer: Consumer, api: str, tpm: bool, forwarded: bool, ts: float, total: int, cost: float
    ) -> None:
        """:meth:`settle` by names and numbers (for a request checked by :meth:`admit`)."""
        h = self._holds.pop(hold, None)
        if h is not None:  # the estimate gives way to what was really used
            if h.tokens is not None:
                h.tokens.reserved -= h.tokens_n
            if h.quota is not None:
                h.quota.reserved = max(0.0, h.quota.reserved - h.quota_n)
        if not forwarded:
            return  # refused before forwarding: uses neither tokens nor quota
        now = self.clock()
        if total and tpm:
            key = (consumer.name, api)
            tokens = self._tokens.get(key)
            if tokens is None:
                tokens = self._tokens[key] = _Window()
            tokens.expire(now)
            tokens.add(now, total)
        if consumer.quota:
            q = h.quota if h is not None and h.quota is not None else self._quota(consumer, ts)
            # A request older than the counter is in the records it was loaded from.
            if ts >= q.created:
                unit = consumer.quota_unit
                q.used += 1 if unit == "requests" else cost if unit == "cost" else total

    # ---------------------------------------------------------------- restore

    async def restore(self, snapshot: Snapshot) -> None:
        """Quota use of each consumer of ``snapshot`` whose counter is not held yet, from the records.

        Awaited before ``snapshot`` serves (at start and on every reload): its requests all
        start after ``now``, so the records up to ``now`` plus what ``settle`` counts from
        then on is the whole period, and no request is admitted on a counter still loading.
        """
        await self.restore_consumers(snapshot.consumers.values())

    def holds_quota(self, consumer: Consumer) -> bool:
        """Whether the counter of ``consumer``'s current period is here (loaded or counted)."""
        now = self.clock()
        return (consumer.name, consumer.quota_unit, self._period_start(consumer.quota_period, now)) in self._quotas

    async def restore_consumers(self, consumers: Iterable[Consumer]) -> None:
        """:meth:`restore` for the given consumers (those of a snapshot, or one a worker asks for)."""
        if self.loader is None:
            return
        now = self.clock()
        todo: list[tuple[str, str, float]] = []
        for consumer in consumers:
            if consumer.quota:
                key = (consumer.name, consumer.quota_unit, self._period_start(consumer.quota_period, now))
                if key not in self._quotas and key not in todo:
                    todo.append(key)
        if not todo:
            return
        loader = self.loader
        found = await asyncio.gather(*(loader(c, unit, start, now) for c, unit, start in todo), return_exceptions=True)
        for key, used in zip(todo, found, strict=True):
            if isinstance(used, BaseException):  # count from 0; the log says why
                log.error("cannot restore quota use of consumer %r: %s", key[0], type(used).__name__)
                used = 0.0
            # A counter a request made meanwhile (a new period) already counts all of it.
            self._quotas.setdefault(key, _Quota(used=used, created=now))

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
                if window is not None:
                    window.expire(now)
                tokens = self._tokens.get((name, api))
                if tokens is not None:
                    tokens.expire(now)
                used_requests = window.used if window else 0
                used_tokens = tokens.used if tokens else 0
                apis[api] = {
                    "requests_per_minute": {"limit": limits.requests_per_minute, "used": used_requests},
                    "tokens_per_minute": {
                        "limit": limits.tokens_per_minute,
                        "used": used_tokens,
                        "reserved": tokens.reserved if tokens else 0,
                    },
                }
            entry: dict[str, Any] = {"apis": apis, "quota": None}
            if consumer.quota:
                q = self._quota(consumer, now)
                entry["quota"] = {
                    "limit": consumer.quota,
                    "unit": consumer.quota_unit,
                    "period": consumer.quota_period,
                    "used": q.used,
                    "reserved": q.reserved,
                    "resets_at": period_end(consumer.quota_period, now),
                }
            out[name] = entry
        return out

    @property
    def shared(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory", "shared": False}

    async def close(self) -> None:
        return None
