"""Model keys' ``max_concurrency`` held through Redis by every gateway process that names
the same ``redis_url``, on the connections of the :class:`~proxy.shared_limits.RedisLimiter`.

Each key's slots in flight are a sorted set of leases (``aigw:slots:{key}``), one per
request holding a slot, scored by its deadline. Taking one is a Lua script run
atomically on Redis's clock: drop the leases past their deadline, count the rest, add
ours if the count is below the limit. Giving it back removes it. A holder renews its
leases every :data:`RENEW_S` seconds, so the slots of a process that dies come back by
themselves within :data:`LEASE_S` seconds.

Nothing tells a process when another frees a slot: while requests wait here,
:class:`~proxy.key_slots.KeySlots` asks again with a backoff up to :data:`POLL_S` — a
round trip now and then, only while something waits, on the connections already there.

While Redis cannot be reached the limiter's ``redis_failure`` decides, as for the other
limits: ``local`` bounds each process by its own count of the slots it holds, and
``refuse`` answers 503 ``limits_unavailable`` to requests that need a slot of a limited
key. Unlimited keys never reach Redis.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable

from redis.exceptions import RedisError

from .errors import limits_unavailable
from .key_slots import LOCAL, Lease, LocalSlotCounter
from .shared_limits import RedisLimiter

#: Seconds a lease lives without being renewed: how long a dead process's slots stay taken.
LEASE_S = 10.0
#: Seconds between renewals of this process's leases (a renewal may take up to 2 s).
RENEW_S = 3.0
#: Seconds at most between asks again while requests wait for a slot.
POLL_S = 0.1

#: Take a slot. KEYS: the key's leases. ARGV: limit, lease id, lease seconds. 1 = taken.
TAKE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
return 1
"""

#: Renew leases still held (a lease given back meanwhile is not brought back). KEYS: the
#: key's leases. ARGV: lease seconds, lease ids.
RENEW_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local ttl = tonumber(ARGV[1])
local due = tonumber(t[1]) + tonumber(t[2]) / 1000000 + ttl
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', due, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000) + 1000)
return 0
"""

#: Slots in flight. KEYS: the key's leases.
COUNT_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1000000)
return redis.call('ZCARD', KEYS[1])
"""


#: The lease of a slot taken while Redis was away: counted by this process alone.
ALONE: Lease = -1


def slots_key(key: str) -> str:
    return f"aigw:slots:{{{key}}}"


class RedisSlotCounter:
    """The :class:`~proxy.key_slots.SlotCounter` whose counts are in Redis."""

    poll_s = POLL_S

    def __init__(self, limiter: RedisLimiter) -> None:
        self.limiter = limiter
        redis = limiter.redis
        self._take = redis.register_script(TAKE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._count = redis.register_script(COUNT_LUA)
        #: This process's slots of limited keys, whatever holds them: the bound while Redis is away.
        self.local = LocalSlotCounter()
        self._ids = itertools.count(1)
        #: Leases held in Redis, per key.
        self._leases: dict[str, set[Lease]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._on_free: Callable[[str], None] | None = None

    def bind(self, on_free: Callable[[str], None]) -> None:
        self._on_free = on_free

    def _member(self, lease: Lease) -> str:
        return f"{self.limiter.node}:{lease}"

    # ---------------------------------------------------------------- take, give back

    def try_take(self, key: str, limit: int) -> Lease | asyncio.Task[Lease | None] | None:
        if limit <= 0:
            return LOCAL  # unlimited: nothing to count anywhere
        if not self.limiter.shared:
            return self._unshared(key, limit)
        return asyncio.get_running_loop().create_task(self._take_shared(key, limit))

    def _unshared(self, key: str, limit: int) -> Lease | None:
        if self.limiter.failure == "refuse":
            raise limits_unavailable()
        return ALONE if self.local.try_take(key, limit) is not None else None

    async def _take_shared(self, key: str, limit: int) -> Lease | None:
        lease = next(self._ids)
        try:
            got = await self._take(keys=[slots_key(key)], args=[limit, self._member(lease), LEASE_S])
        except (RedisError, OSError) as exc:
            self.limiter.mark_down(exc)
            return self._unshared(key, limit)
        if not int(got):
            return None
        self.local.try_take(key, 0)
        self._leases.setdefault(key, set()).add(lease)
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_all(), name="aigw-slot-leases")
        return lease

    def give_back(self, key: str, lease: Lease) -> None:
        if lease == LOCAL:  # an unlimited key's: never counted
            self._freed(key)
            return
        self.local.give_back(key, lease)
        held = self._leases.get(key)
        if lease == ALONE or held is None or lease not in held:
            self._freed(key)
            return
        held.discard(lease)
        if not held:
            del self._leases[key]
        self.limiter.background(self._give_back(key, lease))

    async def _give_back(self, key: str, lease: Lease) -> None:
        try:
            await self.limiter.redis.zrem(slots_key(key), self._member(lease))
        except (RedisError, OSError) as exc:  # the lease expires by itself
            self.limiter.mark_down(exc)
        self._freed(key)  # after Redis has it: a waiter asking now finds it free

    def _freed(self, key: str) -> None:
        if self._on_free is not None:
            self._on_free(key)

    async def _renew_all(self) -> None:
        """Every :data:`RENEW_S` seconds, while this process holds leases: renew them."""
        while self._leases:
            await asyncio.sleep(RENEW_S)
            if not self._leases:
                return
            try:
                async with self.limiter.redis.pipeline(transaction=False) as pipe:
                    for key, leases in self._leases.items():
                        members = [self._member(n) for n in leases]
                        await self._renew(keys=[slots_key(key)], args=[LEASE_S, *members], client=pipe)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self.limiter.mark_down(exc)

    # ---------------------------------------------------------------- figures

    async def shared_in_flight(self, keys: Iterable[str]) -> dict[str, int]:
        """Slots in flight per key over every process, read from Redis ({} while it is away)."""
        names = list(keys)
        if not names or not self.limiter.shared:
            return {}
        try:
            async with self.limiter.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    await self._count(keys=[slots_key(name)], client=pipe)
                got = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.limiter.mark_down(exc)
            return {}
        return {name: int(n) for name, n in zip(names, got, strict=True)}

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
