"""The Redis backend of the response cache against a real ``redis-server``: the stored
value round-trips byte for byte, its expiry is the answer's TTL, clears touch only cache
keys, and a stopped or silent Redis is a miss that never waits long, then comes back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_py
from helpers import wait_for_async
from servers import RedisServer, redis_server

from proxy import redis_link
from proxy.redis_cache import PREFIX, RedisCache, decode, encode, redis_key
from proxy.response_cache import CacheBackend, CachedAnswer, answer_of

__all__ = ["redis_server"]  # the fixture, used by name

#: Starts a real server: with the gateway tests, not in the quick unit run.
pytestmark = [pytest.mark.gateway, pytest.mark.timeout(60)]

JSON = [(b"Content-Type", b"application/json"), (b"x-vendor", b"dropped")]


def plain(body: bytes = b'{"ok":1}', ttl: float = 60) -> CachedAnswer:
    a = answer_of(200, JSON, body, prompt_tokens=3, completion_tokens=5, ttl_s=ttl, now=1e9, model="m", cost=0.25)
    assert a is not None
    return a


def stream() -> CachedAnswer:
    events = (b'data: {"a":1}\n\n', b"data: \xe2\x9c\x93\r\n\r\n", b"", b"data: [DONE]\n\n")
    return CachedAnswer(((b"content-type", b"text/event-stream"),), None, events, 7, 9, 1e9, 30.0, "m2", 0.5)


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[redis_py.Redis]:
    with redis_py.Redis.from_url(redis_server.url) as r:
        r.flushall()
        yield r


@pytest.fixture
async def cache(redis_server: RedisServer) -> AsyncIterator[RedisCache]:
    c = RedisCache(redis_server.url)
    try:
        yield c
    finally:
        await c.close()


def test_values_round_trip_byte_for_byte() -> None:
    for entry in (plain(), plain(b""), stream()):
        assert decode(encode(entry)) == entry
    assert decode(b"not a value") is None
    assert decode(encode(plain()).replace(b'"v":1', b'"v":9')) is None  # another gateway's layout
    assert decode(encode(plain()) + b"x") is None  # damaged


def test_redis_cache_is_a_backend(redis_server: RedisServer) -> None:
    backend: CacheBackend = RedisCache(redis_server.url)
    assert backend.max_entry_bytes > 0


async def test_put_then_get_with_the_ttl_as_expiry(cache: RedisCache, redis: redis_py.Redis) -> None:
    assert await cache.get("k1", "a") is None
    assert await cache.put("k1", "a", plain(ttl=60))
    assert await cache.put("k2", "a", stream())
    assert await cache.get("k1", "a") == plain(ttl=60)
    assert await cache.get("k2", "a") == stream()
    assert await cache.get("k1", "other") is None  # the API is part of where it lives
    assert 55_000 < int(redis.pttl(redis_key("a", "k1"))) <= 60_000
    assert 25_000 < int(redis.pttl(redis_key("a", "k2"))) <= 30_000
    stats = await cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.max_bytes, stats.errors) == (2, 2, 2, 0, 0)
    assert stats.bytes == len(encode(plain(ttl=60))) + len(encode(stream()))


async def test_an_entry_past_the_bound_is_not_stored(redis_server: RedisServer, redis: redis_py.Redis) -> None:
    small = RedisCache(redis_server.url, max_entry_bytes=1000)
    try:
        assert not await small.put("big", "a", plain(b"x" * 2000))
        assert await small.put("ok", "a", plain(b"x" * 10))
        assert (await small.stats()).rejected == 1
        assert redis.exists(redis_key("a", "big")) == 0
    finally:
        await small.close()


async def test_clears_touch_only_the_cache_keys(cache: RedisCache, redis: redis_py.Redis) -> None:
    for api in ("a", "b"):
        for i in range(3):
            assert await cache.put(f"k{i}", api, plain())
    redis.set("aigw:{alice}:rpm:a", "limits stay")
    redis.set("aigw:cache-not-ours", "stays")
    assert await cache.drop_api("a") == 3
    assert await cache.get("k0", "a") is None and await cache.get("k0", "b") is not None
    assert await cache.api_changed("b") == 0  # a reload frees nothing: the new keys differ
    assert await cache.clear() == 3
    assert await cache.clear() == 0
    assert sorted(redis.keys("*")) == [b"aigw:cache-not-ours", b"aigw:{alice}:rpm:a"]
    assert not redis.keys(f"{PREFIX}*")


async def test_a_stopped_redis_is_a_miss_then_comes_back(
    redis_server: RedisServer, cache: RedisCache, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_link, "PROBE_S", 0.1)
    assert await cache.put("k", "a", plain())
    redis_server.stop()
    try:
        assert await cache.get("k", "a") is None  # finds it gone
        assert not cache.shared
        assert await cache.get("k", "a") is None  # does not ask again meanwhile
        assert not await cache.put("k2", "a", plain())
        with pytest.raises(redis_link.REDIS_FAILURES):
            await cache.clear()  # the admin endpoint says it could not
        assert (await cache.stats()).errors >= 1
    finally:
        redis_server.start()
    await wait_for_async(lambda: cache.shared, 15, what="the cache to reach Redis again")
    assert await cache.put("k", "a", plain())
    assert await cache.get("k", "a") == plain()
    lost = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert len(lost) == 1 and "x-cache: MISS" in lost[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_a_silent_redis_does_not_hold_a_request() -> None:
    """A server that accepts and never answers: the lookup gives up by itself, a miss, and
    the cache stops asking it."""
    conns: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0")
    try:
        # Far below the client timeout a request would otherwise wait out.
        assert await asyncio.wait_for(cache.get("k", "a"), 10) is None
        # Late is not yet down (the process may only be busy): a ping with a longer deadline decides.
        await wait_for_async(lambda: not cache.shared, 15, what="the silent Redis counted as down")
        assert await cache.get("k", "a") is None  # not asked any more
        assert not await cache.put("k", "a", plain())
        stats = await cache.stats()
        assert stats.misses == 2 and stats.errors == 1
    finally:
        await cache.close()
        for w in conns:
            w.close()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()


async def test_a_full_redis_keeps_nothing_new_but_is_still_used(
    cache: RedisCache, redis: redis_py.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """``maxmemory`` reached under ``noeviction``: stores are refused, lookups still answered."""
    assert await cache.put("old", "a", plain())
    redis.config_set("maxmemory-policy", "noeviction")
    redis.config_set("maxmemory", "1")
    try:
        assert not await cache.put("new", "a", plain())
        assert not await cache.put("newer", "a", plain())
        assert cache.shared  # Redis answered: not counted as down
        assert await cache.get("old", "a") == plain()
    finally:
        redis.config_set("maxmemory", "0")
    assert (await cache.stats()).errors == 2
    assert len([r for r in caplog.records if "does not store cached answers" in r.getMessage()]) == 1
    assert await cache.put("new", "a", plain())


async def test_a_late_answer_from_a_live_redis_does_not_turn_the_cache_off(redis_server: RedisServer) -> None:
    """Redis's answers held back (as a gateway too busy to read them in time sees them):
    the lookup is a miss, and Redis answering the check keeps the cache on."""
    gate = asyncio.Event()
    gate.set()
    pumps: list[asyncio.Task[None]] = []

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gated: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if gated:
                    await gate.wait()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
        pumps.append(asyncio.create_task(pump(reader, up_writer, False)))
        pumps.append(asyncio.create_task(pump(up_reader, writer, True)))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    cache = RedisCache(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    try:
        assert await cache.put("k", "a", plain())
        gate.clear()  # answers held back from here
        assert await cache.get("k", "a") is None  # past its deadline: a miss
        verify = cache.link._verify
        assert verify is not None and not verify.done() and cache.shared
        gate.set()  # Redis was there all along: the check's PING is answered
        await asyncio.wait_for(verify, 10)
        assert cache.shared
        assert await cache.get("k", "a") == plain()
        assert (await cache.stats()).errors == 1
    finally:
        await cache.close()
        for t in pumps:
            t.cancel()
        server.close()
