"""The response cache: canonical keys, exact byte accounting, LRU and expiry on an
injected clock, the per-API index, the stream recorder, and a model-based property test."""

from __future__ import annotations

import os
import string
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import memory
from proxy.response_cache import (
    ENTRY_OVERHEAD,
    PART_OVERHEAD,
    CacheBackend,
    CachedAnswer,
    CacheKeyMode,
    CacheScope,
    MemoryCache,
    StreamRecorder,
    answer_of,
    cache_key,
    entry_size,
)

pytestmark = pytest.mark.timeout(60)

JSON = [(b"content-type", b"application/json")]
SSE = [(b"Content-Type", b"text/event-stream")]
SSE_H = ((b"content-type", b"text/event-stream"),)
BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "temperature": 0.2,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def key(
    body: dict[str, Any] = BODY,
    *,
    api: str = "a",
    scope: CacheScope = "consumer",
    consumer: str = "c",
    model: str = "m",
    mode: CacheKeyMode = "full",
    stream: bool = False,
) -> str:
    k = cache_key(api=api, scope=scope, consumer=consumer, model=model, mode=mode, body=body, stream=stream)
    assert k is not None
    return k


def answer(body: bytes = b'{"ok":1}', *, ttl: float = 60, now: float = 1_700_000_000.0) -> CachedAnswer:
    a = answer_of(200, JSON, body, prompt_tokens=3, completion_tokens=5, ttl_s=ttl, now=now)
    assert a is not None
    return a


# ------------------------------------------------------------------ keys


def test_key_is_a_sha256_hex_digest_without_names_or_secrets() -> None:
    k = key(consumer="alice-sk-aigw-secret")
    assert len(k) == 64 and set(k) <= set(string.hexdigits.lower())
    assert "alice" not in k


def test_equal_canonical_bodies_give_equal_keys() -> None:
    reordered = {
        "temperature": 0.2,
        "messages": [{"content": "be brief", "role": "system"}, {"content": "hi", "role": "user"}],
        "model": "m",
    }
    assert key(reordered) == key(BODY)
    assert key({**BODY, "stream": False}) == key(BODY)  # absent and false ask the same


@pytest.mark.parametrize(
    "other",
    [
        {"stream": True},
        {"api": "b"},
        {"consumer": "d"},
        {"scope": "api"},
        {"model": "m2"},
        {"mode": "last_user_message"},
    ],
)
def test_each_part_of_the_key_changes_it(other: dict[str, Any]) -> None:
    assert key(**other) != key()


def test_a_body_difference_changes_a_full_key() -> None:
    assert key({**BODY, "temperature": 0.3}) != key(BODY)
    assert key({**BODY, "messages": []}) != key(BODY)


def test_api_scope_ignores_the_consumer() -> None:
    assert key(scope="api", consumer="c") == key(scope="api", consumer="d") == key(scope="api", consumer="")


def test_consumer_scope_needs_the_consumer() -> None:
    with pytest.raises(ValueError):
        key(consumer="")


def test_last_user_message_keys_on_the_last_user_content_and_stream() -> None:
    lum = "last_user_message"
    other_system = {**BODY, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]}
    assert key(other_system, mode=lum) == key(BODY, mode=lum)
    assert key({**BODY, "temperature": 1}, mode=lum) == key(BODY, mode=lum)
    later = {**BODY, "messages": [*BODY["messages"], {"role": "assistant", "content": "hello"}]}
    assert key(later, mode=lum) == key(BODY, mode=lum)  # the last *user* message
    asked_else = {**BODY, "messages": [{"role": "user", "content": "bye"}]}
    assert key(asked_else, mode=lum) != key(BODY, mode=lum)
    assert key(BODY, mode=lum, stream=True) != key(BODY, mode=lum)
    usage = {**BODY, "stream_options": {"include_usage": True}}
    assert key(usage, mode=lum, stream=True) != key(BODY, mode=lum, stream=True)
    assert key(usage, mode=lum) == key(BODY, mode=lum)  # without a stream the option changes nothing
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert key(parts, mode=lum) != key(BODY, mode=lum)


def test_last_user_message_without_one_falls_back_to_the_whole_body() -> None:
    lum = "last_user_message"
    a = {"model": "m", "prompt": "one"}
    b = {"model": "m", "prompt": "two"}
    assert key(a, mode=lum) != key(b, mode=lum)
    assert key(a, mode=lum) == key(a, mode="full")


def test_a_body_nested_past_orjson_still_has_a_key() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    assert key({"model": "m", "messages": deep}) != key(BODY)


# ------------------------------------------------------------------ entries and accounting


def test_only_200_answers_with_a_ttl_make_entries() -> None:
    assert answer_of(500, JSON, b"{}", prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0) is None
    assert answer_of(200, JSON, b"{}", prompt_tokens=0, completion_tokens=0, ttl_s=0, now=0) is None
    a = answer_of(200, [*JSON, (b"x-vendor", b"1")], b"{}", prompt_tokens=1, completion_tokens=2, ttl_s=5, now=10)
    assert a is not None and a.headers == ((b"content-type", b"application/json"),)
    assert (a.prompt_tokens, a.completion_tokens, a.stored_at, a.expires_at, a.stream) == (1, 2, 10, 15, False)


def test_entry_size_counts_key_api_parts_and_overheads() -> None:
    a = answer(b"0123456789")
    parts = len(b"content-type") + len(b"application/json") + 10
    assert entry_size("k" * 64, "api", a) == ENTRY_OVERHEAD + 64 + 3 + 3 * PART_OVERHEAD + parts


async def test_put_get_and_byte_accounting_exact() -> None:
    clock = Clock()
    cache = MemoryCache(1 << 20, clock=clock)
    k1, k2 = key(), key(stream=True)
    a1, a2 = answer(b"x" * 100), answer(b"y" * 200)
    assert await cache.put(k1, "a", a1)
    assert await cache.put(k2, "a", a2)
    assert cache.bytes == entry_size(k1, "a", a1) + entry_size(k2, "a", a2)
    assert await cache.get(k1) is a1
    # Overwriting replaces the old entry's bytes, not adds to them.
    a3 = answer(b"z" * 7)
    assert await cache.put(k1, "a", a3)
    assert cache.bytes == entry_size(k1, "a", a3) + entry_size(k2, "a", a2)
    s = await cache.stats()
    assert (s.entries, s.hits, s.misses, s.bytes) == (2, 1, 0, cache.bytes)
    assert await cache.get(key(api="other")) is None
    assert (await cache.stats()).misses == 1


async def test_least_recently_used_goes_first() -> None:
    clock = Clock()
    a = answer(b"x" * 1000)
    size = entry_size(key(consumer="c0"), "a", a)
    cache = MemoryCache(3 * size, clock=clock, max_entry_bytes=size)
    keys = [key(consumer=f"c{i}") for i in range(4)]
    for k in keys[:3]:
        assert await cache.put(k, "a", a)
    assert await cache.get(keys[0]) is a  # now the most recently used
    assert await cache.put(keys[3], "a", a)
    assert await cache.get(keys[1]) is None
    for k in (keys[0], keys[2], keys[3]):
        assert await cache.get(k) is a
    s = await cache.stats()
    assert s.evictions == 1 and s.entries == 3 and s.bytes == 3 * size <= s.max_bytes


async def test_expired_entries_drop_on_access() -> None:
    clock = Clock()
    cache = MemoryCache(1 << 20, clock=clock)
    k = key()
    await cache.put(k, "a", answer(ttl=10, now=clock.now))
    clock.now += 9.999
    assert await cache.get(k) is not None
    clock.now += 0.001
    assert await cache.get(k) is None
    s = await cache.stats()
    assert (s.entries, s.bytes, s.expired, s.evictions) == (0, 0, 1, 0)


async def test_size_pressure_drops_expired_entries_before_live_ones() -> None:
    clock = Clock()
    a_short, a_long = answer(ttl=5, now=clock.now), answer(ttl=500, now=clock.now)
    size = entry_size(key(consumer="c0"), "a", a_long)
    cache = MemoryCache(2 * size, clock=clock, max_entry_bytes=size)
    old_live, short = key(consumer="c0"), key(consumer="c1")
    await cache.put(old_live, "a", a_long)  # the least recently used ...
    await cache.put(short, "a", a_short)  # ... but this one has expired when room is needed
    clock.now += 6
    await cache.put(key(consumer="c2"), "a", answer(ttl=500, now=clock.now))
    assert await cache.get(old_live) is a_long
    s = await cache.stats()
    assert (s.expired, s.evictions, s.entries, s.bytes) == (1, 0, 2, 2 * size)


async def test_entries_past_the_per_entry_bound_are_not_stored() -> None:
    cache = MemoryCache(4000, clock=Clock())
    assert cache.max_entry_bytes == 1000
    assert not await cache.put(key(), "a", answer(b"x" * 1000))
    assert await cache.put(key(), "a", answer(b"x" * 100))
    s = await cache.stats()
    assert s.rejected == 1 and s.entries == 1


async def test_an_already_expired_entry_is_not_stored() -> None:
    clock = Clock()
    cache = MemoryCache(1 << 20, clock=clock)
    assert not await cache.put(key(), "a", answer(ttl=1, now=clock.now - 2))
    assert cache.bytes == 0


async def test_drop_api_drops_only_that_api_and_clear_drops_all() -> None:
    cache = MemoryCache(1 << 20, clock=Clock())
    for api in ("a", "b"):
        for c in ("x", "y"):
            await cache.put(key(api=api, consumer=c), api, answer())
    assert await cache.drop_api("a") == 2
    assert await cache.drop_api("a") == 0
    assert await cache.get(key(api="a", consumer="x")) is None
    assert await cache.get(key(api="b", consumer="x")) is not None
    s = await cache.stats()
    assert s.entries == 2 and s.bytes == 2 * entry_size(key(api="b", consumer="x"), "b", answer())
    await cache.clear()
    assert (await cache.stats()).entries == 0 and cache.bytes == 0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


@pytest.mark.skipif(not memory.can_give_back(), reason="only glibc lets a process return freed heap")
@pytest.mark.parametrize("how", ["clear", "drop_api"])
async def test_a_large_drop_hands_the_freed_memory_back(how: str) -> None:
    """Answers freed amid live objects stay in RSS until the heap is trimmed: a cleared
    cache must not leave the process as large as a full one."""
    cache = MemoryCache(96 << 20, clock=Clock())
    live: list[bytes] = []  # what the gateway keeps meanwhile: it pins the heap's pages
    before = _rss_mb()
    for i in range(40_000):
        await cache.put(f"k{i}", "a", CachedAnswer(tuple(JSON), os.urandom(1200), None, 1, 2, Clock()(), 60.0))
        if i % 16 == 0:
            live.append(os.urandom(700))
    full = _rss_mb()
    assert full - before > 40  # the cache really took the memory
    assert await (cache.clear() if how == "clear" else cache.drop_api("a")) == 40_000
    after = _rss_mb()
    assert after - before < (full - before) / 2, (before, full, after)
    assert len(live) == 2_500


async def test_a_zero_budget_stores_nothing() -> None:
    cache = MemoryCache(0, clock=Clock())
    assert not await cache.put(key(), "a", answer(b""))
    assert (await cache.stats()).entries == 0


def test_memory_cache_is_a_backend() -> None:
    backend: CacheBackend = MemoryCache.of_megabytes(64)
    assert backend.max_entry_bytes == 16 * 1024 * 1024


# ------------------------------------------------------------------ stream recorder


EVENTS = [b'data: {"choices":[{"delta":{"content":"h"}}]}\n\n', b"data: {}\r\n\r\n", b"data: [DONE]\n\n"]


def test_recorder_cuts_events_whatever_the_chunking() -> None:
    raw = b"".join(EVENTS)
    for step in (1, 2, 3, 7, len(raw)):
        rec = StreamRecorder(200, SSE, 1 << 20)
        for i in range(0, len(raw), step):
            rec.feed(raw[i : i + step])
        entry = rec.finish(prompt_tokens=1, completion_tokens=2, ttl_s=60, now=5)
        assert entry is not None and entry.events == tuple(EVENTS), step
        assert entry.body is None and entry.stream and entry.headers == ((b"content-type", b"text/event-stream"),)


def test_recorder_keeps_a_last_event_without_its_blank_line() -> None:
    rec = StreamRecorder(200, SSE, 1 << 20)
    rec.feed(EVENTS[0] + b"data: [DONE]")
    entry = rec.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0)
    assert entry is not None and entry.events == (EVENTS[0], b"data: [DONE]")


def test_recorder_size_matches_the_cache_accounting() -> None:
    rec = StreamRecorder(200, SSE, 1 << 20)
    for e in EVENTS:
        rec.feed(e)
    entry = rec.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0)
    assert entry is not None
    exact = entry_size("", "", entry)
    fits = StreamRecorder(200, SSE, exact)
    over = StreamRecorder(200, SSE, exact - 1)
    for e in EVENTS:
        fits.feed(e)
        over.feed(e)
    assert fits.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0) is not None
    assert not over.recording
    assert over.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0) is None


def test_recorder_stops_past_its_bound_and_never_resumes() -> None:
    rec = StreamRecorder(200, SSE, 2000)
    rec.feed(b"data: " + b"x" * 3000)  # one event still open, already too large
    assert not rec.recording
    rec.feed(b"\n\ndata: [DONE]\n\n")
    assert rec.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0) is None


def test_recorder_ignores_non_200_streams() -> None:
    rec = StreamRecorder(429, SSE, 1 << 20)
    rec.feed(EVENTS[0])
    assert rec.finish(prompt_tokens=0, completion_tokens=0, ttl_s=60, now=0) is None


async def test_recorded_stream_round_trips_through_the_cache() -> None:
    clock = Clock()
    cache = MemoryCache(1 << 20, clock=clock)
    rec = StreamRecorder(200, SSE, cache.max_entry_bytes)
    for e in EVENTS:
        rec.feed(e)
    entry = rec.finish(prompt_tokens=4, completion_tokens=9, ttl_s=60, now=clock.now)
    assert entry is not None
    k = key(stream=True)
    assert await cache.put(k, "a", entry)
    got = await cache.get(k)
    assert got is not None and got.events == tuple(EVENTS) and (got.prompt_tokens, got.completion_tokens) == (4, 9)
    assert cache.bytes == entry_size(k, "a", entry)


# ------------------------------------------------------------------ property: the accounting invariant


@dataclass
class Model:
    """The policy in its plainest form: a list in LRU order, expired first under pressure."""

    max_bytes: int
    max_entry: int
    items: list[tuple[str, str, CachedAnswer, int]] = field(default_factory=list)  # key, api, entry, seq

    def find(self, k: str) -> int | None:
        return next((i for i, it in enumerate(self.items) if it[0] == k), None)

    def bytes(self) -> int:
        return sum(entry_size(k, api, e) for k, api, e, _ in self.items)

    def get(self, k: str, now: float) -> CachedAnswer | None:
        i = self.find(k)
        if i is None:
            return None
        item = self.items.pop(i)
        if item[2].expired(now):
            return None
        self.items.append(item)
        return item[2]

    def put(self, k: str, api: str, e: CachedAnswer, seq: int, now: float) -> bool:
        if e.expired(now) or entry_size(k, api, e) > self.max_entry:
            return False
        i = self.find(k)
        if i is not None:
            self.items.pop(i)
        self.items.append((k, api, e, seq))
        while self.bytes() > self.max_bytes:
            expired = [it for it in self.items if it[2].expired(now)]
            if not expired:
                break
            self.items.remove(min(expired, key=lambda it: (it[2].expires_at, it[3])))
        while self.bytes() > self.max_bytes:
            self.items.pop(0)
        return True


put_op = st.tuples(
    st.just("put"),
    st.integers(0, 5),  # which key
    st.sampled_from(["a", "b"]),  # which API
    st.integers(0, 600),  # body bytes
    st.integers(0, 4),  # events (0 = a plain answer)
    st.integers(1, 50),  # ttl
)
op = st.one_of(
    put_op,
    put_op,
    st.tuples(st.just("get"), st.integers(0, 5)),
    st.tuples(st.just("get"), st.integers(0, 5)),
    st.tuples(st.just("drop"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("tick"), st.integers(1, 30)),
    st.just(("clear",)),
)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(op, min_size=5, max_size=80), budget=st.integers(1600, 3200))
async def test_accounting_matches_a_plain_model(ops: list[tuple[Any, ...]], budget: int) -> None:
    clock = Clock()
    cache = MemoryCache(budget, clock=clock, max_entry_bytes=budget // 2)
    model = Model(budget, budget // 2)
    keys = [f"{i:064x}" for i in range(6)]
    seq = 0
    for o in ops:
        if o[0] == "put":
            _, i, api, body_len, events, ttl = o
            entry = (
                answer(b"b" * body_len, ttl=ttl, now=clock.now)
                if events == 0
                else CachedAnswer(SSE_H, None, (b"e" * (body_len // events),) * events, 0, 0, clock.now, ttl)
            )
            seq += 1
            assert await cache.put(keys[i], api, entry) == model.put(keys[i], api, entry, seq, clock.now)
        elif o[0] == "get":
            assert await cache.get(keys[o[1]]) is model.get(keys[o[1]], clock.now)
        elif o[0] == "drop":
            dropped = [it for it in model.items if it[1] == o[1]]
            model.items = [it for it in model.items if it[1] != o[1]]
            assert await cache.drop_api(o[1]) == len(dropped)
        elif o[0] == "tick":
            clock.now += o[1]
        else:
            await cache.clear()
            model.items = []
        s = await cache.stats()
        assert cache.bytes == model.bytes() == s.bytes <= budget
        assert s.entries == len(model.items)
