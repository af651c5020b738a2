"""The response cache: exact-match answers of a Model API, replayed without a vendor call.

* **Key** (:func:`cache_key`): the sha256 of one canonical JSON array of everything that
  decides the answer — the API, the scope (``consumer``: the consumer's *name*, so a
  consumer only ever gets its own answers; ``api``: shared), the model, and either the
  whole request body with its keys sorted (``full``, ``stream`` included) or the last
  user message's content and the ``stream`` flag (``last_user_message``). Keys are
  digests of names and request content only: never a credential or a consumer's key.
* **Entry** (:class:`CachedAnswer`): a complete 200 answer — the headers to replay, the
  body (or, for a stream, its SSE events, replayed one by one), the usage of the stored
  answer (a hit is recorded with it and charged nothing), when it was stored and for
  how long it holds.
* **Backend** (:class:`CacheBackend`): async get/put/drop_api/clear, so one shared by
  several nodes (:class:`~proxy.redis_cache.RedisCache`) can replace :class:`MemoryCache`,
  which keeps entries in this process, least recently used out first, within an exact
  byte budget.
* **Definition** (:func:`config_digest`): part of every key, so an answer made under an
  API's old definition is never found under its new one, on any node.
* **Streams** (:class:`StreamRecorder`): collects the events of a stream while it is
  relayed, gives up (and frees what it held) past the per-entry bound, and hands over
  an entry only for a stream that ended cleanly.

What is counted against the budget, per entry (:func:`entry_size`):
:data:`ENTRY_OVERHEAD` + the key's and the API name's bytes + for every part (each
header name, each header value, the body, each event) its bytes + :data:`PART_OVERHEAD`.
The overheads stand for the Python objects around the data, so the budget tracks the
memory really held; the per-API index holds the same key strings and is not counted twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import hmac
import itertools
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import orjson

from proxy import memory

CacheKeyMode = Literal["full", "last_user_message"]
CacheScope = Literal["consumer", "api"]
Clock = Callable[[], float]

#: Bumped when the key's canonical form changes, so old shared entries are never matched.
KEY_VERSION: Final = "aigw-cache-2"
#: The vendor headers a replayed answer carries (the gateway adds its own around them).
REPLAY_HEADERS: Final = frozenset({b"content-type"})
ENTRY_OVERHEAD: Final = 512
PART_OVERHEAD: Final = 48
#: No single answer above this is stored, however large the budget.
MAX_ENTRY_BYTES: Final = 16 * 1024 * 1024
DEFAULT_MAX_MB: Final = 64
#: Dropping at least this much at once (a clear, an API's answers) hands the freed heap
#: back to the system; LRU evictions do not, as the room they free is taken again at once.
GIVE_BACK_BYTES: Final = 4 * 1024 * 1024

_EVENT_END = re.compile(rb"\r?\n\r?\n")


def canonical_json(value: Any) -> bytes | None:
    """Sorted keys, no spaces: equal for bodies that differ only in key order or layout.

    None when the value is nested past what either encoder writes (such a request is not cached).
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # deeper than orjson goes (255 levels)
        try:
            return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        except (RecursionError, ValueError, TypeError):
            return None


def last_user_content(body: Mapping[str, Any]) -> tuple[bool, Any]:
    """``(found, content)`` of the last message with role ``user``."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                return True, msg.get("content")
    return False, None


def cache_key(
    *,
    api: str,
    scope: CacheScope,
    consumer: str,
    model: str,
    mode: CacheKeyMode,
    body: Mapping[str, Any],
    stream: bool,
    config: str = "",
) -> str | None:
    """The entry's key, or None when this request cannot be cached (nested too deeply).

    ``config`` is the API's :func:`config_digest`: an answer made under one definition of
    the API is never found under another, on any node, whenever each loads the change.

    ``consumer`` is the consumer's name (never its key); it is part of the key only with
    the ``consumer`` scope. With ``last_user_message`` and no user message in the body,
    the whole body decides, so two different requests never share an answer; a stream
    asking for ``stream_options.include_usage`` is told apart from one that does not
    (the usage chunk is part of what it gets).
    """
    if scope == "consumer" and not consumer:
        raise ValueError("a consumer-scoped cache key needs the consumer's name")
    payload: Any = {**body, "stream": stream}  # an absent flag and ``false`` ask the same
    decides: CacheKeyMode = "full"
    if mode == "last_user_message":
        found, content = last_user_content(body)
        if found:
            payload, decides = {"content": content, "stream": stream}, mode
            options = body.get("stream_options")
            if stream and isinstance(options, Mapping) and options.get("include_usage") is True:
                payload["include_usage"] = True  # a stream that ends with its usage chunk is another answer
    part = consumer if scope == "consumer" else ""
    text = canonical_json([KEY_VERSION, api, config, scope, part, model, decides, payload])
    return None if text is None else hashlib.sha256(text).hexdigest()


def _fields(obj: Any) -> dict[str, Any]:
    """A dataclass as the map of its fields, read through attribute access.

    orjson's own dataclass support reads slots from the object's memory layout, which a
    class compiled to C (the gateway's request path is) does not have; reading the
    fields by name gives the same map either way, so every node keys an answer alike.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    raise TypeError(f"cannot digest {type(obj).__name__}")


def config_digest(definition: Any, secret: str) -> str:
    """A digest of everything an API's answers depend on, equal on every node that loaded it.

    ``definition`` is the compiled API (its services, and their keys, with it); the digest
    is keyed with ``secret`` — the admin token every node of a store shares — so the
    cache's keys say nothing about the configuration, a weak model key credential
    included, even to whoever can read the shared store.
    """
    text = orjson.dumps(definition, default=_fields, option=orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS)
    return hmac.new(secret.encode(), text, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored 200 answer: ``body`` for a plain one, ``events`` for a stream."""

    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes | None
    events: tuple[bytes, ...] | None
    prompt_tokens: int
    completion_tokens: int
    stored_at: float
    ttl_s: float
    #: The model that answered, and what the answer cost then: a hit records them as saved.
    model: str = ""
    cost: float = 0.0

    @property
    def expires_at(self) -> float:
        return self.stored_at + self.ttl_s

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    @property
    def stream(self) -> bool:
        return self.events is not None

    def parts(self) -> Iterable[bytes]:
        for name, value in self.headers:
            yield name
            yield value
        if self.body is not None:
            yield self.body
        if self.events is not None:
            yield from self.events


def replay_headers(vendor: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.lower(), v) for k, v in vendor if k.lower() in REPLAY_HEADERS)


def entry_size(key: str, api: str, entry: CachedAnswer) -> int:
    """The bytes an entry counts against the budget (see the module's notes)."""
    return ENTRY_OVERHEAD + len(key.encode()) + len(api.encode()) + sum(PART_OVERHEAD + len(p) for p in entry.parts())


def answer_of(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    ttl_s: float,
    now: float,
    model: str = "",
    cost: float = 0.0,
) -> CachedAnswer | None:
    """The entry for a plain (not streamed) answer; None unless it is a 200 worth keeping."""
    if status != 200 or ttl_s <= 0:
        return None
    return CachedAnswer(replay_headers(headers), body, None, prompt_tokens, completion_tokens, now, ttl_s, model, cost)


class StreamRecorder:
    """Collects a relayed stream's events; the entry comes only from :meth:`finish`.

    Feed it the bytes as the client receives them, in any chunking; events are cut at
    their blank line (kept with the event, so a replay is byte-identical). Past
    ``max_bytes`` (counted as :func:`entry_size` counts) it stops and frees its buffers.
    """

    def __init__(self, status: int, headers: Iterable[tuple[bytes, bytes]], max_bytes: int) -> None:
        self._headers = replay_headers(headers)
        self._max = max_bytes
        self._events: list[bytes] = []
        self._pending = bytearray()
        self._scanned = 0
        self._size = ENTRY_OVERHEAD + sum(2 * PART_OVERHEAD + len(k) + len(v) for k, v in self._headers)
        self._on = status == 200 and self._size <= max_bytes

    @property
    def recording(self) -> bool:
        return self._on

    def feed(self, data: bytes) -> None:
        if not self._on:
            return
        buf = self._pending
        buf += data
        pos = max(0, self._scanned - 3)  # a separator may straddle the previous chunk's end
        cut = 0
        while (m := _EVENT_END.search(buf, pos)) is not None:
            event = bytes(buf[cut : m.end()])
            self._events.append(event)
            self._size += PART_OVERHEAD + len(event)
            cut = pos = m.end()
        if cut:
            del buf[:cut]
        self._scanned = len(buf)
        if self._size + len(buf) > self._max:
            self._stop()

    def _stop(self) -> None:
        self._on = False
        self._events = []
        self._pending = bytearray()

    def finish(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        ttl_s: float,
        now: float,
        model: str = "",
        cost: float = 0.0,
    ) -> CachedAnswer | None:
        """The stream ended cleanly: its entry, unless it grew too large (or was not a 200)."""
        if not self._on or ttl_s <= 0:
            return None
        if self._pending:  # the last event without its blank line
            if self._size + PART_OVERHEAD + len(self._pending) > self._max:
                self._stop()
                return None
            self._events.append(bytes(self._pending))
        entry = CachedAnswer(
            self._headers, None, tuple(self._events), prompt_tokens, completion_tokens, now, ttl_s, model, cost
        )
        self._stop()
        return entry


@dataclass(frozen=True, slots=True)
class CacheStats:
    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int
    #: Live entries pushed out to make room (least recently used first).
    evictions: int
    #: Entries dropped because their time was up (on access or to make room).
    expired: int
    #: Answers not stored: larger than the per-entry bound.
    rejected: int
    #: Lookups and stores the backend failed (a shared store unreachable or too slow).
    errors: int = 0


class CacheBackend(Protocol):
    """Where entries live; the request path sees only this."""

    @property
    def max_entry_bytes(self) -> int:
        """The largest entry ``put`` accepts (a :class:`StreamRecorder`'s bound)."""
        ...

    async def get(self, key: str, api: str) -> CachedAnswer | None:
        """The live entry of ``key`` (stored for the API ``api``), or None."""
        ...

    async def put(self, key: str, api: str, entry: CachedAnswer) -> bool:
        """Store (or replace) an entry; False when it is not kept (too large, expired)."""
        ...

    async def drop_api(self, api: str) -> int:
        """Drop every entry of an API (cleared by hand); how many were dropped."""
        ...

    async def api_changed(self, api: str) -> int:
        """The API's configuration changed: its entries are never asked for again (the
        key names the configuration that made them); how many were freed now."""
        ...

    async def clear(self) -> int:
        """Drop every entry; how many were dropped."""
        ...

    async def stats(self) -> CacheStats:
        """This process's view, without asking a shared store (``/metrics`` must not wait on it)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where entries live, for ``/healthz`` (never a password)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Stored:
    entry: CachedAnswer
    api: str
    size: int
    seq: int


class MemoryCache:
    """Entries in this process's memory within ``max_bytes``; least recently used out first.

    To make room, entries whose time is up go first (soonest expired first), then the
    least recently used live ones. Every method runs without awaiting, so one event
    loop never sees the cache half-updated.
    """

    def __init__(self, max_bytes: int, *, clock: Clock = time.time, max_entry_bytes: int | None = None) -> None:
        self.max_bytes = max(0, max_bytes)
        limit = min(self.max_bytes // 4, MAX_ENTRY_BYTES)
        self._max_entry = limit if max_entry_bytes is None else min(max_entry_bytes, self.max_bytes)
        self._clock = clock
        self._entries: OrderedDict[str, _Stored] = OrderedDict()
        self._by_api: dict[str, set[str]] = {}
        #: ``(expires_at, seq, key)``; items of replaced or removed entries are skipped lazily.
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self.bytes = 0
        self._hits = self._misses = self._evictions = self._expired = self._rejected = 0

    @classmethod
    def of_megabytes(cls, cache_max_mb: float, *, clock: Clock = time.time) -> MemoryCache:
        return cls(int(cache_max_mb * 1024 * 1024), clock=clock)

    @property
    def max_entry_bytes(self) -> int:
        return self._max_entry

    async def get(self, key: str, api: str = "") -> CachedAnswer | None:
        stored = self._entries.get(key)
        if stored is None:
            self._misses += 1
            return None
        if stored.entry.expired(self._clock()):
            self._remove(key)
            self._expired += 1
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return stored.entry

    async def put(self, key: str, api: str, entry: CachedAnswer) -> bool:
        if entry.expired(self._clock()):
            return False
        size = entry_size(key, api, entry)
        if size > self._max_entry:
            self._rejected += 1
            return False
        if key in self._entries:
            self._remove(key)
        seq = next(self._seq)
        self._entries[key] = _Stored(entry, api, size, seq)
        self._by_api.setdefault(api, set()).add(key)
        self.bytes += size
        heapq.heappush(self._expiry, (entry.expires_at, seq, key))
        self._make_room()
        if len(self._expiry) > 2 * len(self._entries) + 64:
            self._expiry = [(s.entry.expires_at, s.seq, k) for k, s in self._entries.items()]
            heapq.heapify(self._expiry)
        return True

    async def drop_api(self, api: str) -> int:
        keys = self._by_api.get(api, set())
        n = len(keys)
        held = self.bytes
        for key in list(keys):
            self._remove(key)
        self._released(held - self.bytes)
        return n

    async def api_changed(self, api: str) -> int:
        return await self.drop_api(api)  # the memory is this process's: free it at once

    async def clear(self) -> int:
        n = len(self._entries)
        self._entries.clear()
        self._by_api.clear()
        self._expiry.clear()
        held, self.bytes = self.bytes, 0
        self._released(held)
        return n

    @staticmethod
    def _released(size: int) -> None:
        """After a large drop, return the freed heap: otherwise it stays in the process's RSS."""
        if size >= GIVE_BACK_BYTES:
            memory.give_back()

    def describe(self) -> dict[str, Any]:
        return {"backend": "memory", "shared": False, "max_bytes": self.max_bytes}

    async def close(self) -> None:
        return None

    async def stats(self) -> CacheStats:
        return CacheStats(
            self._hits,
            self._misses,
            len(self._entries),
            self.bytes,
            self.max_bytes,
            self._evictions,
            self._expired,
            self._rejected,
        )

    def _remove(self, key: str) -> None:
        stored = self._entries.pop(key)
        self.bytes -= stored.size
        keys = self._by_api[stored.api]
        keys.discard(key)
        if not keys:
            del self._by_api[stored.api]

    def _make_room(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        now = self._clock()
        heap = self._expiry
        while self.bytes > self.max_bytes and heap and heap[0][0] <= now:
            _, seq, key = heapq.heappop(heap)
            stored = self._entries.get(key)
            if stored is not None and stored.seq == seq:
                self._remove(key)
                self._expired += 1
        while self.bytes > self.max_bytes:
            key = next(iter(self._entries))
            self._remove(key)
            self._evictions += 1
