"""Limits shared through Redis by every gateway process that names the same ``redis_url``.

Each limited request costs one round trip: a Lua script (``EVALSHA``, loaded again by the
client when Redis answers ``NOSCRIPT``) checks the consumer's rpm window, tpm window and
quota and reserves what the request may use, atomically, on Redis's clock. So a burst
landing on any number of processes and hosts is admitted exactly ``requests_per_minute``
times, and a ``requests`` quota exactly ``quota`` times. Token and cost limits reserve an
estimate like the in-memory limiter and keep its bound. ``settle`` sends a second script
off the request path (released reservation, tokens used, quota spent).

The keys of one consumer carry its name as a hash tag (``aigw:{consumer}:…``): every
script touches one cluster slot. Reservations carry a deadline (:data:`HOLD_TTL_S`), so a
process that dies with requests in flight does not hold its share for ever.

A quota counter missing from Redis (a new or flushed Redis, a new period) is loaded from
the request records before the first request it counts, like the in-memory limiter at
start: flushing Redis does not reset a quota.

While Redis cannot be reached, ``redis_failure = "local"`` counts in this process's
memory (the :class:`~proxy.limits.MemoryLimiter` it keeps up to date all along), and
``"refuse"`` answers 503 ``limits_unavailable``. A probe every
:data:`~proxy.redis_link.PROBE_S` seconds brings the process back to Redis by itself
(:class:`~proxy.redis_link.RedisLink`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from store.usage import period_end

from .context import RequestContext, Usage
from .errors import GatewayError, limits_unavailable
from .limits import (
    _REQUEST_LINES,
    _TOKEN_LINES,
    ALLOW,
    RESERVED_RETRY_S,
    Decision,
    MemoryLimiter,
    PeriodStarts,
    QuotaLoader,
    duration_bytes,
    estimates,
    limited,
    quota_error,
    rpm_error,
    tpm_error,
)
from .redis_link import REDIS_FAILURES, RedisLink, masked
from .routes import Consumer, Snapshot

log = logging.getLogger("aigw.limits")

#: Seconds a reservation lives in Redis at most (longer than any request may take).
HOLD_TTL_S = 900
#: Seconds one Redis command may take before the gateway counts Redis as down.
COMMAND_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 1.0
#: Seconds a quota counter outlives its period (for requests that end after it).
QUOTA_GRACE_S = 86_400

#: Check and reserve. KEYS: rpm window, tpm buckets, tpm holds, tpm deadlines, quota, quota
#: deadlines. ARGV: rpm, tpm, quota, token estimate, quota estimate, hold id, hold ttl.
#: Answers {status, wait, rpm used, rpm reset, tokens taken, tokens reset, quota used,
#: quota reserved}; status 0 admitted, 1 rpm, 2 tpm, 3 tpm held by requests in
#: progress, 4 quota counter missing (load it, then ask again), 5 quota.
CHECK_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rpm, tpm, qlimit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local est, qn, id, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])

local function sweep(h, d)
  local old = redis.call('ZRANGEBYSCORE', d, '-inf', now, 'LIMIT', 0, 100)
  for _, k in ipairs(old) do
    local n = redis.call('HGET', h, k)
    if n then
      redis.call('HDEL', h, k)
      redis.call('HINCRBYFLOAT', h, 'r', -tonumber(n))
    end
    redis.call('ZREM', d, k)
  end
end

local status, wait = 0, 0
local rused, rreset = 0, 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
  rused = redis.call('ZCARD', KEYS[1])
  if rused > 0 then
    rreset = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]) + 60 - now
  end
  if rused >= rpm then
    local e = redis.call('ZRANGE', KEYS[1], rused - rpm, rused - rpm, 'WITHSCORES')
    status, wait = 1, tonumber(e[2]) + 60 - now
  end
end

local taken, treset = 0, 0
if tpm > 0 then
  sweep(KEYS[3], KEYS[4])
  local b = redis.call('HGETALL', KEYS[2])
  local buckets, used = {}, 0
  for i = 1, #b, 2 do
    local s = tonumber(b[i])
    if s + 1 <= now - 60 then
      redis.call('HDEL', KEYS[2], b[i])
    else
      local n = tonumber(b[i + 1])
      used = used + n
      table.insert(buckets, {s, n})
    end
  end
  table.sort(buckets, function(x, y) return x[1] < y[1] end)
  if #buckets > 0 then treset = buckets[1][1] + 61 - now end
  taken = used + tonumber(redis.call('HGET', KEYS[3], 'r') or '0')
  if status == 0 and taken >= tpm then
    if used >= tpm then
      local over = used - tpm + 1
      wait = 60
      for _, e in ipairs(buckets) do
        over = over - e[2]
        if over <= 0 then wait = e[1] + 61 - now break end
      end
      status = 2
    else
      status, wait = 3, 0
    end
  end
end

local qused, qres = 0, 0
if status == 0 and qlimit > 0 then
  local u = redis.call('HGET', KEYS[5], 'u')
  if not u then return {4, '0', 0, '0', '0', '0', '0', '0'} end
  sweep(KEYS[5], KEYS[6])
  qused = tonumber(u)
  qres = tonumber(redis.call('HGET', KEYS[5], 'r') or '0')
  if qused + qres >= qlimit then status = 5 end
end

if status == 0 then
  if rpm > 0 then
    redis.call('ZADD', KEYS[1], now, id)
    redis.call('PEXPIRE', KEYS[1], 61000)
    if rused == 0 then rreset = 60 end
    rused = rused + 1
  end
  if tpm > 0 then
    redis.call('HSET', KEYS[3], id, est)
    redis.call('HINCRBYFLOAT', KEYS[3], 'r', est)
    redis.call('ZADD', KEYS[4], now + ttl, id)
    redis.call('EXPIRE', KEYS[3], ttl + 60)
    redis.call('EXPIRE', KEYS[4], ttl + 60)
  end
  if qlimit > 0 then
    redis.call('HSET', KEYS[5], id, qn)
    redis.call('HINCRBYFLOAT', KEYS[5], 'r', qn)
    redis.call('ZADD', KEYS[6], now + ttl, id)
    redis.call('EXPIRE', KEYS[6], ttl + 60)
  end
end
return {status, tostring(wait), rused, tostring(rreset), tostring(taken), tostring(treset),
        tostring(qused), tostring(qres)}
"""

#: Release a reservation and count what was used. KEYS as :data:`CHECK_LUA`. ARGV: hold
#: id, tokens used, quota spent, tpm on (1/0), quota on (1/0).
SETTLE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1])
local id = ARGV[1]
local function release(h, d)
  local n = redis.call('HGET', h, id)
  if n then
    redis.call('HDEL', h, id)
    redis.call('HINCRBYFLOAT', h, 'r', -tonumber(n))
  end
  redis.call('ZREM', d, id)
end
if ARGV[4] == '1' then
  release(KEYS[3], KEYS[4])
  local total = tonumber(ARGV[2])
  if total > 0 then
    redis.call('HINCRBY', KEYS[2], now, total)
    redis.call('EXPIRE', KEYS[2], 62)
  end
end
if ARGV[5] == '1' then
  release(KEYS[5], KEYS[6])
  local add = tonumber(ARGV[3])
  -- Counted once the counter exists: a request that settled before it was loaded is in
  -- the records it was loaded from (it is recorded after it settles), one after is not.
  if add > 0 and redis.call('HEXISTS', KEYS[5], 'u') == 1 then
    redis.call('HINCRBYFLOAT', KEYS[5], 'u', add)
  end
end
return 0
"""

#: Set a quota counter loaded from the records, unless another process did first.
#: KEYS: quota. ARGV: used, expires at (unix s, 0 = never).
RESTORE_LUA = """
if redis.call('HEXISTS', KEYS[1], 'u') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'u', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return 1
"""

_ADMITTED, _RPM, _TPM, _TPM_HELD, _QUOTA_MISSING, _QUOTA = range(6)


@dataclass(slots=True)
class _Keys:
    """One request's Redis keys (all in its consumer's hash slot) and what it reserved."""

    keys: list[str]
    hold_id: str
    tpm: bool
    quota: bool


class RedisLimiter:
    """The :class:`~proxy.limits.Limiter` whose state is in Redis; ``local`` answers while it is down."""

    def __init__(
        self,
        url: str,
        *,
        failure: str = "local",
        loader: QuotaLoader | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.failure = failure
        self.loader = loader
        self.clock = clock
        self.local = MemoryLimiter(loader=loader, clock=clock)
        self.link = RedisLink(
            url,
            command_timeout_s=COMMAND_TIMEOUT_S,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            pool_timeout_s=COMMAND_TIMEOUT_S,
            logger=log,
            lost=self._lost,
            back="limits are shared again",
        )
        self.redis: Redis = self.link.redis
        self._check = self.redis.register_script(CHECK_LUA)
        self._settle = self.redis.register_script(SETTLE_LUA)
        self._restore = self.redis.register_script(RESTORE_LUA)
        #: Requests checked in Redis, by ``id(ctx)`` until ``settle``.
        self._holds: dict[int, _Keys] = {}
        #: Quota counters being loaded from the records (one load per counter at a time).
        self._loading: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._period_start = PeriodStarts()
        self._ids = itertools.count()
        #: Names this process in Redis (hold and lease ids).
        self.node = os.urandom(6).hex()

    # ---------------------------------------------------------------- state

    @property
    def _up(self) -> bool:
        return self.link.up

    @property
    def shared(self) -> bool:
        return self.link.up

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "redis", "shared": self._up, "redis": masked(self.url)}
        out["redis_failure"] = self.failure
        if not self._up:
            out["detail"] = (
                "Redis unreachable: counting in this process only"
                if self.failure == "local"
                else "Redis unreachable: refusing limited requests"
            )
        return out

    def _lost(self) -> str:
        what = "counting limits in this process only" if self.failure == "local" else "refusing limited requests"
        return f"{what} until it answers"

    def mark_down(self, exc: BaseException) -> None:
        """A command of another part on this Redis (the shared key slots) failed: the same as one of ours."""
        self._down(exc)

    def _down(self, exc: BaseException) -> None:
        self.link.down(exc)

    # ---------------------------------------------------------------- check

    def check(self, ctx: RequestContext) -> Decision | Awaitable[Decision]:
        if not limited(ctx):
            return ALLOW
        if not self._up:
            return self._unshared(ctx)
        return self._check_shared(ctx)

    def _unshared(self, ctx: RequestContext) -> Decision:
        if ctx.snapshot.gateway.redis_failure == "refuse":
            return Decision(False, limits_unavailable())
        return self.local.check(ctx)

    def _keys(self, consumer: Consumer, api: str, ts: float) -> list[str]:
        tag = f"aigw:{{{consumer.name}}}"
        start = self._period_start(consumer.quota_period, ts) if consumer.quota else 0.0
        quota = f"{tag}:quota:{consumer.quota_unit}:{consumer.quota_period}:{start:.0f}"
        return [
            f"{tag}:rpm:{api}",
            f"{tag}:tpm:{api}",
            f"{tag}:tpm-held:{api}",
            f"{tag}:tpm-due:{api}",
            quota,
            f"{quota}:due",
        ]

    async def _check_shared(self, ctx: RequestContext) -> Decision:
        consumer, api = ctx.consumer, ctx.api
        assert consumer is not None and api is not None
        limits = ctx.snapshot.limits.get((consumer.name, api.name))
        rpm = limits.requests_per_minute if limits else 0
        tpm = limits.tokens_per_minute if limits else 0
        unit = consumer.quota_unit
        estimate, cost = estimates(ctx, consumer, tpm)
        quota_n = 0.0
        if consumer.quota:
            quota_n = 1.0 if unit == "requests" else cost if unit == "cost" else float(estimate)
        keys = self._keys(consumer, api.name, ctx.ts)
        hold_id = f"h:{self.node}:{next(self._ids)}"
        args: list[str | int | float] = [rpm, tpm, consumer.quota, estimate, quota_n, hold_id, HOLD_TTL_S]
        try:
            for _ in range(2):
                res = await self._check(keys=keys, args=args)
                if int(res[0]) != _QUOTA_MISSING:
                    break
                await self._load_quota(consumer, keys[4], ctx.ts)
        except REDIS_FAILURES as exc:
            self._down(exc)
            return self._unshared(ctx)
        status = int(res[0])
        if status == _QUOTA_MISSING:  # loaded, then gone again at once (a flush in between)
            return self._unshared(ctx)
        wait = float(res[1])
        lines = b""
        if tpm:
            taken = round(float(res[4]))
            lines = _TOKEN_LINES % (tpm, max(0, tpm - taken), duration_bytes(float(res[5])))
        if rpm:
            used = int(res[2])
            lines = _REQUEST_LINES % (rpm, max(0, rpm - used), duration_bytes(float(res[3]))) + lines
        error: GatewayError | None = None
        if status == _RPM:
            error = rpm_error(consumer.name, api.name, rpm, wait)
        elif status in (_TPM, _TPM_HELD):
            held = status == _TPM_HELD
            error = tpm_error(consumer.name, api.name, tpm, RESERVED_RETRY_S if held else wait, reserved_only=held)
        elif status == _QUOTA:
            error = quota_error(consumer, float(res[6]), float(res[7]), self.clock())
        if error is not None:
            return Decision(False, error, lines)
        if tpm or consumer.quota:  # something to release and count at the end
            self._holds[id(ctx)] = _Keys(keys, hold_id, bool(tpm), bool(consumer.quota))
        return Decision(True, None, lines)

    async def _load_quota(self, consumer: Consumer, key: str, ts: float) -> None:
        """Put the period's use from the records into Redis (once, however many ask)."""
        pending = self._loading.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._loading[key] = fut
        try:
            await self._restore_counter(consumer, key, ts)
            fut.set_result(None)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: the waiters re-raise it
            raise
        finally:
            del self._loading[key]

    async def _restore_counter(self, consumer: Consumer, key: str, ts: float) -> None:
        now = self.clock()
        start = self._period_start(consumer.quota_period, ts)
        used = 0.0
        if self.loader is not None:
            used = await self.loader(consumer.name, consumer.quota_unit, start, now)
        end = period_end(consumer.quota_period, now)
        expires = 0 if end is None else int(end) + QUOTA_GRACE_S
        await self._restore(keys=[key], args=[repr(float(used)), expires])

    # ---------------------------------------------------------------- settle

    def settle(self, ctx: RequestContext, usage: Usage | None) -> None:
        held = self._holds.pop(id(ctx), None)
        # The local counts follow every request, so a fall-back starts from this process's use.
        self.local.settle(ctx, usage)
        if held is None or ctx.consumer is None:
            return
        forwarded = ctx.service is not None
        total = usage.total_tokens if usage and forwarded else 0
        spent = 0.0
        if held.quota and forwarded:
            unit = ctx.consumer.quota_unit
            spent = 1.0 if unit == "requests" else ctx.cost if unit == "cost" else float(total)
        args: list[str | int | float] = [held.hold_id, total, repr(spent), int(held.tpm), int(held.quota)]
        self.background(self._send_settle(held.keys, args))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` off the request path; :meth:`close` waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_settle(self, keys: list[str], args: list[str | int | float]) -> None:
        try:
            await self._settle(keys=keys, args=args)
        except REDIS_FAILURES as exc:  # the reservation expires by itself
            self._down(exc)

    # ---------------------------------------------------------------- restore

    async def restore(self, snapshot: Snapshot) -> None:
        self.failure = snapshot.gateway.redis_failure  # a change applies from the next request
        await self.local.restore(snapshot)
        if not self._up:
            return
        now = self.clock()
        todo = [(c, self._keys(c, "", now)[4]) for c in snapshot.consumers.values() if c.quota]
        if not todo:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for _, key in todo:
                    pipe.hexists(key, "u")
                found = await pipe.execute()
            for (consumer, key), present in zip(todo, found, strict=True):
                if not present:
                    await self._load_quota(consumer, key, now)
        except REDIS_FAILURES as exc:
            self._down(exc)

    # ---------------------------------------------------------------- reporting

    def current_use(self, snapshot: Snapshot) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        if not self._up:  # what this process counts alone meanwhile
            return self.local.current_use(snapshot)
        return self._shared_use(snapshot)

    async def _shared_use(self, snapshot: Snapshot) -> dict[str, Any]:
        """The local report's shape with the numbers every process shares, in one pipeline."""
        out = self.local.current_use(snapshot)
        now = self.clock()
        reads: list[tuple[dict[str, Any], str]] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, entry in out.items():
                    consumer = snapshot.consumers[name]
                    for api, use in entry["apis"].items():
                        rpm, tpm, held = self._keys(consumer, api, now)[:3]
                        pipe.zcount(rpm, now - 60, "+inf")
                        pipe.hgetall(tpm)
                        pipe.hget(held, "r")
                        reads.append((use, "window"))
                    if entry["quota"] is not None:
                        quota = self._keys(consumer, "", now)[4]
                        pipe.hget(quota, "u")
                        pipe.hget(quota, "r")
                        reads.append((entry["quota"], "quota"))
                got = iter(await pipe.execute())
        except REDIS_FAILURES as exc:
            self._down(exc)
            return out
        for use, kind in reads:
            if kind == "window":
                use["requests_per_minute"]["used"] = int(next(got))
                buckets = next(got)
                use["tokens_per_minute"]["used"] = sum(int(n) for s, n in buckets.items() if float(s) + 1 > now - 60)
                use["tokens_per_minute"]["reserved"] = round(float(next(got) or 0))
            else:
                use["used"] = float(next(got) or use["used"])
                use["reserved"] = max(0.0, float(next(got) or 0))
        return out

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=COMMAND_TIMEOUT_S)
        await self.link.close()
