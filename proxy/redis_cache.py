"""The response cache in Redis: one store of answers for every node and worker naming it.

* **Keys**: ``aigw:cache:<api>:<digest>`` — the API's name (so one API's entries can be
  cleared by prefix) and the :func:`~proxy.response_cache.cache_key` digest, which
  already names the API's configuration: a node that loaded a change never finds an
  entry made under the old definition, and one that has not loaded it yet keeps
  serving its own, so two nodes reloading at different moments are each exact. The
  old definition's entries are left to expire (:meth:`RedisCache.api_changed` frees
  nothing): scanning the keyspace on every reload of every worker would cost more
  than the memory they hold until Redis's expiry or eviction takes them.
* **Values** (:func:`encode`): one JSON line of what the answer is (headers, sizes,
  tokens, model, cost) followed by the raw bytes of the body or of each event, so a
  stream is replayed event by event, byte for byte.
* **Time**: ``cache_ttl_s`` is the key's expiry in Redis (``SET … PX``).
* **Bound**: Redis's own memory policy (``maxmemory`` with ``allkeys-lru`` or
  ``volatile-lru``); ``cache_max_mb`` bounds only the in-memory backend. No answer
  above :data:`MAX_ENTRY_BYTES` is stored.
* **Failure**: every call has a deadline of :data:`COMMAND_TIMEOUT_S` (the wait for a
  pooled connection included); a failed or late one is a miss (lookup) or an answer not
  kept (store). A refused or broken connection makes the link down at once: logged
  once, the cache stops asking Redis until its probe gets an answer
  (:class:`~proxy.redis_link.RedisLink`). A late answer makes it check with one ``PING``
  of a longer deadline first: a gateway too busy to read Redis's answers in time (every
  deadline counts the event loop's delay) does not turn its cache off when it needs it
  most, and a silent Redis is down within that deadline. A Redis
  that answers with an error (full under ``noeviction``) is not down: the answer is
  not kept, and that is logged once a minute.

:meth:`RedisCache.stats` is this process's: its hits and misses, and as ``entries`` and
``bytes`` the answers it stored (and their encoded size) since it started — what Redis
holds now is Redis's to say (``INFO memory``), and asking it on every scrape would make
``/metrics`` wait on Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import orjson
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeout

from .redis_link import REDIS_FAILURES, RedisLink, masked
from .response_cache import CachedAnswer, CacheStats

log = logging.getLogger("aigw.cache")

PREFIX: Final = "aigw:cache:"
#: The value's layout; another one (an older or newer gateway) is read as a miss.
VALUE_VERSION: Final = 1
#: No answer larger than this (encoded) goes to Redis: one value that size is a
#: long stall for every other client of the server, the limits included.
MAX_ENTRY_BYTES: Final = 8 * 1024 * 1024
#: Seconds a cache call may take: past it the request goes on as a miss.
COMMAND_TIMEOUT_S: Final = 0.5
#: A call past its deadline: Redis silent, or this process too busy to read the answer.
LATE = (TimeoutError, RedisTimeout)
CONNECT_TIMEOUT_S: Final = 0.5
#: Keys asked per SCAN step, and deleted per UNLINK, when clearing.
SCAN_COUNT: Final = 1000
#: Seconds a clear may take in all (a big keyspace is scanned step by step).
CLEAR_TIMEOUT_S: Final = 30.0
#: A Redis that answers but refuses to store (full) is logged once per this many seconds.
REFUSED_LOG_EVERY_S: Final = 60.0


def redis_key(api: str, key: str) -> str:
    return f"{PREFIX}{api}:{key}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def encode(entry: CachedAnswer) -> bytes:
    meta: dict[str, Any] = {
        "v": VALUE_VERSION,
        "h": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in entry.headers],
        "b": None if entry.body is None else len(entry.body),
        "e": None if entry.events is None else [len(e) for e in entry.events],
        "pt": entry.prompt_tokens,
        "ct": entry.completion_tokens,
        "at": entry.stored_at,
        "ttl": entry.ttl_s,
        "m": entry.model,
        "cost": entry.cost,
    }
    parts = [entry.body] if entry.body is not None else list(entry.events or ())
    return b"".join([orjson.dumps(meta), b"\n", *parts])


def decode(raw: bytes) -> CachedAnswer | None:
    """The entry, or None for a value this gateway cannot read (another layout, damaged)."""
    try:
        cut = raw.index(b"\n")
        meta = orjson.loads(raw[:cut])
        if not isinstance(meta, dict) or meta.get("v") != VALUE_VERSION:
            return None
        pos = cut + 1
        body: bytes | None = None
        events: tuple[bytes, ...] | None = None
        if meta["b"] is not None:
            body = raw[pos : pos + int(meta["b"])]
            pos += len(body)
        else:
            out = []
            for n in meta["e"]:
                out.append(raw[pos : pos + int(n)])
                pos += int(n)
            events = tuple(out)
        if pos != len(raw):
            return None
        headers = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["h"])
        return CachedAnswer(
            headers,
            body,
            events,
            int(meta["pt"]),
            int(meta["ct"]),
            float(meta["at"]),
            float(meta["ttl"]),
            str(meta["m"]),
            float(meta["cost"]),
        )
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None


class RedisCache:
    """The :class:`~proxy.response_cache.CacheBackend` whose entries live in Redis."""

    def __init__(self, url: str, *, max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:
        self.link = RedisLink(
            url,
            command_timeout_s=COMMAND_TIMEOUT_S,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            pool_timeout_s=None,  # each call is bounded as a whole (a wait for a connection included)
            logger=log,
            lost=lambda: "the response cache answers every request from the vendor (x-cache: MISS) until it answers",
            back="the response cache is shared again",
        )
        self._max_entry = max_entry_bytes
        self._hits = self._misses = self._stored = self._bytes = self._rejected = self._errors = 0
        self._refused_logged = -REFUSED_LOG_EVERY_S

    @property
    def max_entry_bytes(self) -> int:
        return self._max_entry

    @property
    def shared(self) -> bool:
        return self.link.up

    def _failed(self, exc: BaseException) -> None:
        self._errors += 1
        self.link.down(exc)

    def _late(self, exc: BaseException) -> None:
        self._errors += 1
        self.link.suspect(exc)

    def _refused(self, exc: ResponseError) -> None:
        """Redis refuses to store (its answer, e.g. OOM): logged once a minute, Redis still used."""
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_EVERY_S:
            self._refused_logged = now
            log.warning("Redis at %s does not store cached answers: %s", masked(self.link.url), str(exc)[:200])

    async def get(self, key: str, api: str) -> CachedAnswer | None:
        if not self.link.up:  # nothing waits on a Redis known to be away
            self._misses += 1
            return None
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                raw = await self.link.redis.get(redis_key(api, key))
        except LATE as exc:
            self._late(exc)
            self._misses += 1
            return None
        except ResponseError:  # Redis answered, with an error: a miss, and Redis is still there
            self._errors += 1
            self._misses += 1
            return None
        except REDIS_FAILURES as exc:
            self._failed(exc)
            self._misses += 1
            return None
        entry = decode(raw) if isinstance(raw, bytes) else None
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        return entry

    async def put(self, key: str, api: str, entry: CachedAnswer) -> bool:
        if not self.link.up:
            return False
        ttl_ms = int(entry.ttl_s * 1000)
        if ttl_ms <= 0:
            return False
        value = encode(entry)
        if len(value) > self._max_entry:
            self._rejected += 1
            return False
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await self.link.redis.set(redis_key(api, key), value, px=ttl_ms)
        except LATE as exc:
            self._late(exc)
            return False
        except ResponseError as exc:  # full (maxmemory with noeviction), read-only replica: not kept
            self._errors += 1
            self._refused(exc)
            return False
        except REDIS_FAILURES as exc:
            self._failed(exc)
            return False
        self._stored += 1
        self._bytes += len(value)
        return True

    async def drop_api(self, api: str) -> int:
        return await self._drop(f"{PREFIX}{_glob_escape(api)}:*")

    async def api_changed(self, api: str) -> int:
        return 0  # unreachable already; expiry or Redis's eviction frees them (see the module's notes)

    async def clear(self) -> int:
        return await self._drop(f"{PREFIX}*")

    async def _drop(self, pattern: str) -> int:
        """Delete the keys matching ``pattern``; how many this call deleted.

        ``UNLINK`` counts only the keys it removed, so several processes clearing at once
        (a supervisor's workers) add up to the number of entries there were. Raises when
        Redis cannot be reached: the admin endpoint says so.
        """
        dropped = 0
        redis = self.link.redis
        try:
            async with asyncio.timeout(CLEAR_TIMEOUT_S):
                cursor = 0
                while True:
                    cursor, keys = await redis.scan(cursor, match=pattern, count=SCAN_COUNT)
                    if keys:
                        dropped += int(await redis.unlink(*keys))
                    if cursor == 0:
                        return dropped
        except LATE as exc:
            self._late(exc)
            raise
        except REDIS_FAILURES as exc:
            self._failed(exc)
            raise

    async def stats(self) -> CacheStats:
        return CacheStats(self._hits, self._misses, self._stored, self._bytes, 0, 0, 0, self._rejected, self._errors)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "redis", "shared": self.link.up, "redis": masked(self.link.url)}
        if not self.link.up:
            out["detail"] = "Redis unreachable: every request is answered by the vendor"
        return out

    async def close(self) -> None:
        await self.link.close()
