"""Concurrency slots per model key, with one first-come-first-served queue of waiters.

A model key's ``max_concurrency`` (0 = unlimited) bounds the requests in flight with
it (vendors cap concurrent sessions per account). :meth:`KeySlots.acquire` takes a
slot of the first key of the service (in the order the key policy gave) that has one
free; when all are busy it waits, in arrival order, for whichever of those keys frees
first, up to the service's ``queue_timeout_s``, and then answers ``None`` (the request
path tries the next fallback service, else answers 429).

A released slot is handed straight to the oldest waiter that can use its key, so a
request arriving meanwhile cannot overtake the queue. Cancellation is safe: a
cancelled waiter leaves the queue, and a slot handed to it in the instant it was
being cancelled passes on to the next waiter instead of leaking.

Counting in-flight requests sits behind :class:`SlotCounter`, so counts shared by
several gateway processes can replace the in-process :class:`LocalSlotCounter`
without touching the queue. Limits and counts are keyed by key *name*: a model key
used by two services shares one bound, and a reload keeps the counts.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

Clock = Callable[[], float]


class KeyRef(Protocol):
    """What the slots read from a model key of the snapshot."""

    @property
    def name(self) -> str: ...
    @property
    def max_concurrency(self) -> int: ...


class SlotCounter(Protocol):
    """In-flight requests per key: the part that becomes shared across processes."""

    def try_take(self, key: str, limit: int) -> bool:
        """Count one more request with ``key`` if fewer than ``limit`` are in flight (0 = no limit)."""
        ...

    def give_back(self, key: str) -> None: ...

    def in_flight(self, key: str) -> int: ...


class LocalSlotCounter:
    """This process's counts."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def try_take(self, key: str, limit: int) -> bool:
        n = self._counts.get(key, 0)
        if limit > 0 and n >= limit:
            return False
        self._counts[key] = n + 1
        return True

    def give_back(self, key: str) -> None:
        n = self._counts.get(key, 0) - 1
        if n > 0:
            self._counts[key] = n
        else:
            self._counts.pop(key, None)

    def in_flight(self, key: str) -> int:
        return self._counts.get(key, 0)


@dataclass(frozen=True, slots=True)
class KeyLoad:
    """One key's figures for metrics and the console."""

    in_flight: int
    #: Waiters that could use this key (a waiter for several keys counts for each).
    queued: int
    #: Requests that got a slot of this key after waiting, and their total wait.
    waits: int
    wait_s: float
    #: Waiters that could use this key and gave up (``queue_timeout_s`` passed).
    timeouts: int = 0
    limit: int = 0


@dataclass(frozen=True, slots=True)
class SlotsStats:
    keys: dict[str, KeyLoad]
    queued: int
    #: Waiters that gave up: ``queue_timeout_s`` passed with no slot free.
    timeouts: int
    timeout_wait_s: float


class Slot:
    """One request's hold on a key; ``release`` (or leaving ``async with``) gives it back, once."""

    __slots__ = ("_owner", "_released", "key")

    def __init__(self, owner: KeySlots, key: KeyRef) -> None:
        self._owner = owner
        self.key = key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._release(self.key.name)

    @property
    def released(self) -> bool:
        return self._released

    async def __aenter__(self) -> Slot:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


@dataclass(slots=True)
class _Waiter:
    keys: Sequence[KeyRef]
    future: asyncio.Future[Slot | None]
    since: float


class KeySlots:
    """Every key's slots and the waiters' queue; one per gateway process, kept across reloads."""

    def __init__(self, counter: SlotCounter | None = None, clock: Clock = time.monotonic) -> None:
        self._counter: SlotCounter = counter or LocalSlotCounter()
        self._clock = clock
        #: The latest ``max_concurrency`` seen per key (a reload may change it while requests wait).
        self._limits: dict[str, int] = {}
        #: Waiters in arrival order (dicts keep insertion order; removal is O(1)).
        self._queue: dict[int, _Waiter] = {}
        self._seq = itertools.count()
        self._waits: dict[str, tuple[int, float]] = {}
        self._timeouts = 0
        self._timeout_wait_s = 0.0
        self._key_timeouts: dict[str, int] = {}

    def _take_free(self, keys: Sequence[KeyRef]) -> Slot | None:
        for key in keys:
            if self._counter.try_take(key.name, self._limits.get(key.name, key.max_concurrency)):
                return Slot(self, key)
        return None

    def _note_limits(self, keys: Sequence[KeyRef]) -> bool:
        """Remember the keys' current limits; True when one grew (waiters may fit now)."""
        grew = False
        for key in keys:
            new, old = key.max_concurrency, self._limits.get(key.name)
            if old != new:
                self._limits[key.name] = new
                grew = grew or (old is not None and old != 0 and (new == 0 or new > old))
        return grew

    async def acquire(self, keys: Sequence[KeyRef], timeout_s: float) -> Slot | None:
        """A slot of one of ``keys`` (tried in order), waiting up to ``timeout_s``; None when none came."""
        if not keys:
            raise ValueError("a model service has at least one key")
        if self._note_limits(keys) and self._queue:
            self._dispatch()
        # Free capacity always went to the waiters first (see _dispatch), so a key with a
        # free slot now is one nobody queued for can use: taking it overtakes no one.
        slot = self._take_free(keys)
        if slot is not None:
            return slot
        if timeout_s <= 0:
            return None
        loop = asyncio.get_running_loop()
        seq = next(self._seq)
        waiter = _Waiter(keys, loop.create_future(), self._clock())
        self._queue[seq] = waiter
        timer = loop.call_later(timeout_s, self._expire, seq)
        try:
            got = await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and (handed := fut.result()) is not None:
                handed.release()  # handed over while we were being cancelled: pass it on
            raise
        finally:
            timer.cancel()
            self._queue.pop(seq, None)
        if got is None:
            self._timeouts += 1
            self._timeout_wait_s += self._clock() - waiter.since
            for key in keys:
                self._key_timeouts[key.name] = self._key_timeouts.get(key.name, 0) + 1
        return got

    def _expire(self, seq: int) -> None:
        waiter = self._queue.pop(seq, None)
        if waiter is not None and not waiter.future.done():
            waiter.future.set_result(None)

    def _release(self, name: str) -> None:
        self._counter.give_back(name)
        if self._queue:
            self._dispatch(name)

    def _dispatch(self, freed: str | None = None) -> None:
        """Hand free slots to waiters, oldest first (only those wanting ``freed``, when given)."""
        for seq, waiter in list(self._queue.items()):
            if waiter.future.done():  # cancelled or timed out, not yet out of the queue
                self._queue.pop(seq, None)
                continue
            if freed is not None and all(k.name != freed for k in waiter.keys):
                continue
            slot = self._take_free(waiter.keys)
            if slot is None:
                if freed is not None:
                    return  # the freed slot is gone again (a lower limit): nobody else fits
                continue
            del self._queue[seq]
            n, total = self._waits.get(slot.key.name, (0, 0.0))
            self._waits[slot.key.name] = (n + 1, total + self._clock() - waiter.since)
            waiter.future.set_result(slot)
            if freed is not None:
                return

    def in_flight(self, key: str) -> int:
        return self._counter.in_flight(key)

    def queued(self, key: str) -> int:
        return sum(1 for w in self._queue.values() if any(k.name == key for k in w.keys))

    def retain(self, names: Iterable[str]) -> None:
        """Forget the figures of keys no longer configured (after a reload); counts in flight stay."""
        keep = set(names)
        for table in (self._limits, self._waits, self._key_timeouts):
            for name in [n for n in table if n not in keep and not self.in_flight(n)]:
                del table[name]

    def stats(self) -> SlotsStats:
        names = set(self._limits) | set(self._waits)
        keys = {}
        for name in sorted(names):
            n, total = self._waits.get(name, (0, 0.0))
            keys[name] = KeyLoad(
                self.in_flight(name),
                self.queued(name),
                n,
                total,
                self._key_timeouts.get(name, 0),
                self._limits.get(name, 0),
            )
        return SlotsStats(keys, len(self._queue), self._timeouts, self._timeout_wait_s)
