"""One connection to the Redis named by ``redis_url``: the pool, its deadlines, and up or down.

Shared limits (:mod:`proxy.shared_limits`) and the response cache
(:mod:`proxy.redis_cache`) each hold a :class:`RedisLink` of their own, built here the
same way, so a slow or huge cache answer never queues a limits check behind it and each
part keeps the deadlines its requests can afford. A link that failed is *down*: its
owner stops asking Redis (nothing waits on a server that does not answer) and one
line is logged; a probe every :data:`PROBE_S` seconds brings it back by itself, with
one line more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from .redis_url import masked

__all__ = ["REDIS_FAILURES", "RedisLink", "masked", "redis_client"]

#: Seconds between tries to reach Redis again while it is down.
PROBE_S = 1.0
#: Connections to Redis at most per link and process (requests queue for one beyond it).
MAX_CONNECTIONS = 32

#: What a Redis call raises when the server cannot be reached or answers too late.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


def redis_client(
    url: str, *, command_timeout_s: float, connect_timeout_s: float, pool_timeout_s: float | None
) -> Redis:
    """A client on a bounded pool: connecting and every answer have a deadline; so has the
    wait for a free connection, unless ``pool_timeout_s`` is None (the caller bounds the
    whole call itself)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=pool_timeout_s,
        socket_timeout=command_timeout_s,
        socket_connect_timeout=connect_timeout_s,
    )
    return Redis(connection_pool=pool)


class RedisLink:
    """A client and whether its Redis answers; ``down`` is logged once per outage.

    ``logger``, ``lost`` and ``back`` are the owner's: each part says in its own words
    what it does while Redis is away (the limits count alone or refuse, as set at that
    moment; the cache answers from the vendor).
    """

    def __init__(
        self,
        url: str,
        *,
        command_timeout_s: float,
        connect_timeout_s: float,
        logger: logging.Logger,
        lost: Callable[[], str],
        back: str,
        pool_timeout_s: float | None,
        verify_timeout_s: float = 2.0,
    ) -> None:
        self.url = url
        self.redis: Redis = redis_client(
            url,
            command_timeout_s=command_timeout_s,
            connect_timeout_s=connect_timeout_s,
            pool_timeout_s=pool_timeout_s,
        )
        self.up = True
        self._log = logger
        self._lost = lost
        self._back = back
        self._verify_s = verify_timeout_s
        self._probe: asyncio.Task[None] | None = None
        self._verify: asyncio.Task[None] | None = None

    def down(self, exc: BaseException) -> None:
        """A call failed: stop asking until a probe gets an answer (logged once per outage)."""
        if self.up:
            self.up = False
            self._log.error("cannot reach Redis at %s (%s): %s", masked(self.url), type(exc).__name__, self._lost())
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis(), name="aigw-redis-probe")

    def suspect(self, exc: BaseException) -> None:
        """A call came back too late: a silent Redis, or only this process too busy to read
        the answer in time. One ``PING`` with a longer deadline decides; only a failed one
        makes the link down, so a loaded gateway does not turn Redis off when it is busiest."""
        if not self.up or (self._verify is not None and not self._verify.done()):
            return
        self._verify = asyncio.get_running_loop().create_task(self._check(), name="aigw-redis-verify")

    async def _check(self) -> None:
        try:
            async with asyncio.timeout(self._verify_s):
                await self.redis.ping()
        except REDIS_FAILURES as exc:
            self.down(exc)

    async def _wait_for_redis(self) -> None:
        while True:
            await asyncio.sleep(PROBE_S)
            try:
                async with asyncio.timeout(self._verify_s):  # a probe never hangs on a silent server
                    await self.redis.ping()
            except REDIS_FAILURES:
                continue
            self.up = True
            self._log.warning("Redis at %s answers again: %s", masked(self.url), self._back)
            return

    async def close(self) -> None:
        for task in (self._probe, self._verify):
            if task is not None:
                task.cancel()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()
