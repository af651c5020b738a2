"""Concurrency slots per model key, with one first-come-first-served queue of waiters.

A model key's ``max_concurrency`` (0 = unlimited) bounds the requests in flight with
it (vendors cap concurrent sessions per account). :meth:`KeySlots.acquire` takes a
slot of the first key of the service (in the order the key policy gave) that has one
free; when all are busy it waits, in arrival order, for whichever of those keys frees
first, up to the service's ``queue_timeout_s``, and then answers ``None`` (the request
path tries the next fallback service, else answers 429).

Counting sits behind :class:`SlotCounter`: this process's :class:`LocalSlotCounter`,
or a counter shared by every process that shares limits (the supervisor's, over its
socket; Redis's) — then a take may answer later. The queue is this process's: a slot
that may be free (given back here, or told or polled from elsewhere) is offered to the
oldest waiter that can use its key, and a request arriving meanwhile takes only keys no
waiter here wants, so it cannot overtake the queue. Across processes, whichever asks
first once a slot frees gets it. Cancellation is safe: a cancelled waiter leaves the
queue, and a slot taken for it in the instant it was cancelled is given back.

Limits and counts are keyed by key *name*: a model key used by two services shares one
bound, and a reload keeps the counts. An unlimited key is counted in this process only,
whatever the counter: it never costs a round trip.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

Clock = Callable[[], float]

#: A counter's hold of one slot, handed back with it: :data:`LOCAL` for a hold counted in
#: this process only, another number for one the shared counter knows.
Lease = int
LOCAL: Lease = 0
#: Seconds between the first asks again while requests wait on a counter that must be polled.
POLL_FIRST_S = 0.01


class KeyRef(Protocol):
    """What the slots read from a model key of the snapshot."""

    @property
    def name(self) -> str: ...
    @property
    def max_concurrency(self) -> int: ...


class SlotCounter(Protocol):
    """In-flight requests per key: the part shared across processes."""

    @property
    def poll_s(self) -> float:
        """Seconds at most between asks again while requests wait (0: it calls ``on_free`` itself)."""
        ...

    def bind(self, on_free: Callable[[str], None]) -> None:
        """``on_free(key)`` from now on whenever a slot of ``key`` may have become free."""
        ...

    def try_take(self, key: str, limit: int) -> Lease | Awaitable[Lease | None] | None:
        """A lease if fewer than ``limit`` requests are in flight with ``key`` (0 = no limit), else None.

        May raise :class:`~proxy.errors.GatewayError` when the shared counts cannot be reached
        and the gateway is set to refuse meanwhile."""
        ...

    def give_back(self, key: str, lease: Lease) -> None: ...

    async def close(self) -> None: ...


class LocalSlotCounter:
    """This process's counts."""

    poll_s = 0.0

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._on_free: Callable[[str], None] | None = None

    def bind(self, on_free: Callable[[str], None]) -> None:
        self._on_free = on_free

    def try_take(self, key: str, limit: int) -> Lease | None:
        n = self._counts.get(key, 0)
        if limit > 0 and n >= limit:
            return None
        self._counts[key] = n + 1
        return LOCAL

    def give_back(self, key: str, lease: Lease = LOCAL) -> None:
        n = self._counts.get(key, 0) - 1
        if n > 0:
            self._counts[key] = n
        else:
            self._counts.pop(key, None)
        if self._on_free is not None:
            self._on_free(key)

    def in_flight(self, key: str) -> int:
        return self._counts.get(key, 0)

    async def close(self) -> None:
        return None


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

    __slots__ = ("_lease", "_owner", "_released", "key")

    def __init__(self, owner: KeySlots, key: KeyRef, lease: Lease = LOCAL) -> None:
        self._owner = owner
        self.key = key
        self._lease = lease
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._release(self.key.name, self._lease)

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
        self._counter.bind(self._freed)
        #: The counts answer at once (this process's own, not a shared counter that answers
        #: through a round trip): :meth:`take_now` may take a slot.
        self._local = type(self._counter) is LocalSlotCounter
        self._clock = clock
        #: Slots this process holds, per key name.
        self._held: dict[str, int] = {}
        #: The latest ``max_concurrency`` seen per key (a reload may change it while requests wait).
        self._limits: dict[str, int] = {}
        #: Waiters in arrival order (dicts keep insertion order; removal is O(1)).
        self._queue: dict[int, _Waiter] = {}
        self._seq = itertools.count()
        self._waits: dict[str, tuple[int, float]] = {}
        self._timeouts = 0
        self._timeout_wait_s = 0.0
        self._key_timeouts: dict[str, int] = {}
        #: Keys whose slots may be free since the pump last looked (``None`` in it: every key).
        self._dirty: set[str | None] = set()
        self._pump: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        #: Waiters served so far (the poller backs off while it stays the same).
        self._granted = 0

    # ---------------------------------------------------------------- taking

    def _limit(self, key: KeyRef) -> int:
        return self._limits.get(key.name, key.max_concurrency)

    def take_now(self, keys: Sequence[KeyRef]) -> Slot | None:
        """A free slot of one of ``keys`` (in order) at once, without a coroutine: the usual
        case, with the counts in this process and nobody queued. None when that is not so
        (counts shared with other processes, waiters, every key full): :meth:`acquire`
        then decides, queueing if it must."""
        if not self._local or not keys or self._queue:
            return None  # waiters are served first, and acquire gives them new room first
        self._note_limits(keys)  # nobody waits: a limit that grew concerns no one else
        for key in keys:
            if self._counter.try_take(key.name, self._limit(key)) is not None:
                return self._hold(key, LOCAL)
        return None

    async def _take(self, key: KeyRef) -> Slot | None:
        got = self._counter.try_take(key.name, self._limit(key))
        if got is not None and not isinstance(got, int):
            got = await self._answer(key.name, got)
        if got is None:
            return None
        return self._hold(key, got)

    def _hold(self, key: KeyRef, lease: Lease) -> Slot:
        """A lease the counter gave, as this process's slot of ``key``."""
        self._held[key.name] = self._held.get(key.name, 0) + 1
        return Slot(self, key, lease)

    async def _answer(self, name: str, pending: Awaitable[Lease | None]) -> Lease | None:
        """A shared counter's answer; one that comes after the asker was cancelled is given back."""
        fut = asyncio.ensure_future(pending)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:

            def late(f: asyncio.Future[Lease | None]) -> None:
                if not f.cancelled() and f.exception() is None and (lease := f.result()) is not None:
                    self._counter.give_back(name, lease)

            fut.add_done_callback(late)
            raise

    async def _take_free(self, keys: Sequence[KeyRef], skip: set[str] | frozenset[str] = frozenset()) -> Slot | None:
        for key in keys:
            if key.name not in skip and (slot := await self._take(key)) is not None:
                return slot
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

    def _wanted(self) -> set[str]:
        return {k.name for w in self._queue.values() if not w.future.done() for k in w.keys}

    async def acquire(self, keys: Sequence[KeyRef], timeout_s: float) -> Slot | None:
        """A slot of one of ``keys`` (tried in order), waiting up to ``timeout_s``; None when none came."""
        if not keys:
            raise ValueError("a model service has at least one key")
        if self._note_limits(keys) and self._queue:
            await self._pumped(None)  # the new room goes to the waiters first
        # A key some waiter here can use is theirs first (the pump offers it in arrival
        # order): a newcomer takes only keys nobody queued for, and overtakes no one.
        slot = await self._take_free(keys, self._wanted() if self._queue else frozenset())
        if slot is not None:
            return slot
        if timeout_s <= 0:
            return None
        loop = asyncio.get_running_loop()
        seq = next(self._seq)
        waiter = _Waiter(keys, loop.create_future(), self._clock())
        self._queue[seq] = waiter
        timer = loop.call_later(timeout_s, self._expire, seq)
        if self._counter.poll_s > 0 and (self._poller is None or self._poller.done()):
            self._poller = loop.create_task(self._poll(), name="aigw-key-slots-poll")
        try:
            got = await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.exception() is None and (handed := fut.result()) is not None:
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

    # ---------------------------------------------------------------- giving back, waking

    def _release(self, name: str, lease: Lease) -> None:
        n = self._held.get(name, 0) - 1
        if n > 0:
            self._held[name] = n
        else:
            self._held.pop(name, None)
        self._counter.give_back(name, lease)  # the counter calls _freed when the slot may be taken

    def _freed(self, name: str) -> None:
        if self._queue:
            self._kick(name)

    def _kick(self, name: str | None) -> None:
        """Have the pump offer ``name``'s free slots (every key's, for None) to the waiters."""
        self._dirty.add(name)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.get_running_loop().create_task(self._run_pump(), name="aigw-key-slots")

    async def _run_pump(self) -> None:
        # One pump at a time: two would both take a slot for the same oldest waiter.
        while self._dirty:
            freed = None if None in self._dirty else {n for n in self._dirty if n is not None}
            self._dirty.clear()
            await self._serve(freed)

    async def _serve(self, freed: set[str] | None) -> None:
        """Offer free slots to waiters, oldest first (of keys in ``freed``, when given), until none is left."""
        full: set[str] = set()
        granted = False
        for seq, waiter in list(self._queue.items()):
            if waiter.future.done():  # cancelled or timed out, not yet out of the queue
                self._queue.pop(seq, None)
                continue
            for key in waiter.keys:
                if key.name in full or (freed is not None and key.name not in freed):
                    continue
                try:
                    slot = await self._take(key)
                except Exception as exc:  # the shared counts refuse (or are gone): this waiter hears it
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                    break
                if slot is None:
                    full.add(key.name)
                    continue
                if waiter.future.done():  # it gave up while the counter answered
                    slot.release()
                    break
                self._queue.pop(seq, None)
                n, total = self._waits.get(key.name, (0, 0.0))
                self._waits[key.name] = (n + 1, total + self._clock() - waiter.since)
                self._granted += 1
                granted = True
                waiter.future.set_result(slot)
                break
            if freed is not None and freed <= full:
                return  # every freed key is taken again: nobody else fits
        if granted:
            # Waiters that came while a shared counter answered were not in this pass, and
            # a key not found full may have room for them: look again (a refusal is what
            # makes the supervisor tell us of the next free slot).
            self._dirty.update([None] if freed is None else freed - full)

    async def _poll(self) -> None:
        """While requests wait here, ask again now and then: a slot may have freed elsewhere.

        From :data:`POLL_FIRST_S`, doubling up to the counter's ``poll_s`` while nothing
        frees, and from the start again once a waiter was served."""
        wait = POLL_FIRST_S
        while self._queue:
            await asyncio.sleep(wait)
            before = self._granted
            await self._pumped(None)
            wait = POLL_FIRST_S if self._granted > before else min(self._counter.poll_s, wait * 2)

    async def _pumped(self, name: str | None) -> None:
        """Kick the pump and wait until it has looked."""
        self._kick(name)
        assert self._pump is not None
        await asyncio.shield(self._pump)

    # ---------------------------------------------------------------- figures

    def in_flight(self, key: str) -> int:
        """Requests in flight with ``key`` in this process."""
        return self._held.get(key, 0)

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

    @property
    def counter(self) -> SlotCounter:
        return self._counter

    async def close(self) -> None:
        await self._counter.close()
        for task in (self._poller, self._pump):
            if task is not None and not task.done():
                task.cancel()
