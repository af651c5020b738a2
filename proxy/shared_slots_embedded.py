"""Model keys' ``max_concurrency`` held across the workers of one ``aigw serve``: the
supervisor counts every worker's slots (:class:`SlotTable`) and each worker asks it over
the limits socket (:class:`WorkerSlotCounter`, frames beside the limit checks of
:mod:`proxy.shared_limits_embedded`).

The frames: ``["a", id, key, limit]`` takes a slot if fewer than ``limit`` are in flight
with ``key`` across the workers, answered ``["g", id, granted]``; ``["r", key]`` gives one
back. A worker refused a slot is sent ``["f", key]`` once the next slot of that key
frees elsewhere, so its waiters ask again at once: no polling. Frames of one worker are
handled in the order sent, so a slot given back and asked for again by the same worker
is free when asked. A worker that goes away gives back every slot it held with its
connection. Unlimited keys never reach the supervisor.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import limits_unavailable
from .key_slots import LOCAL, Lease

if TYPE_CHECKING:
    from .shared_limits_embedded import WorkerLimiter

#: The lease of a slot the supervisor counts (a worker's slots of one key are alike).
SHARED: Lease = 1


class Peer(Protocol):
    """One worker's connection, as the table sees it."""

    #: Slots this worker holds, per key.
    slots: dict[str, int]

    def send(self, msg: list[Any]) -> None: ...


class SlotTable:
    """The supervisor's counts: slots in flight per key over every worker."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        #: Workers refused a slot of the key since it last freed: told when one does.
        self._refused: dict[str, set[Peer]] = {}

    def take(self, peer: Peer, key: str, limit: int) -> bool:
        n = self.counts.get(key, 0)
        if limit > 0 and n >= limit:
            self._refused.setdefault(key, set()).add(peer)
            return False
        self.counts[key] = n + 1
        peer.slots[key] = peer.slots.get(key, 0) + 1
        return True

    def give_back(self, peer: Peer, key: str, n: int = 1) -> None:
        held = peer.slots.get(key, 0)
        n = min(n, held)
        if n <= 0:
            return
        if held > n:
            peer.slots[key] = held - n
        else:
            del peer.slots[key]
        left = self.counts.get(key, 0) - n
        if left > 0:
            self.counts[key] = left
        else:
            self.counts.pop(key, None)
        self._wake(key, peer)

    def drop(self, peer: Peer) -> None:
        """A worker went away: every slot it held is free again."""
        for waiting in self._refused.values():
            waiting.discard(peer)
        for key, n in list(peer.slots.items()):
            self.give_back(peer, key, n)

    def _wake(self, key: str, giver: Peer) -> None:
        """Tell the workers waiting for ``key`` (the giver knows: it offers the slot to its own)."""
        waiting = self._refused.get(key)
        if not waiting:
            return
        for peer in [p for p in waiting if p is not giver]:
            waiting.discard(peer)
            peer.send(["f", key])
        if not waiting:
            del self._refused[key]


class WorkerSlotCounter:
    """A worker's :class:`~proxy.key_slots.SlotCounter`: limited keys are counted by the supervisor."""

    poll_s = 0.0  # the supervisor says when a slot frees

    def __init__(self, limiter: WorkerLimiter) -> None:
        self.limiter = limiter
        limiter.slots = self
        self._ids = itertools.count(1)
        self._asked: dict[int, tuple[str, asyncio.Future[Lease | None]]] = {}
        self._on_free: Callable[[str], None] | None = None

    def bind(self, on_free: Callable[[str], None]) -> None:
        self._on_free = on_free

    def try_take(self, key: str, limit: int) -> Lease | asyncio.Future[Lease | None] | None:
        if limit <= 0:
            return LOCAL  # unlimited: nothing to count across workers
        if not self.limiter.connected:  # the supervisor is gone: this worker is stopping
            raise limits_unavailable()
        rid = next(self._ids)
        fut: asyncio.Future[Lease | None] = asyncio.get_running_loop().create_future()
        self._asked[rid] = (key, fut)
        self.limiter.send(["a", rid, key, limit])
        return fut

    def give_back(self, key: str, lease: Lease) -> None:
        if lease != LOCAL:
            self.limiter.send(["r", key])
        if self._on_free is not None:
            self._on_free(key)

    # ---------------------------------------------------------------- frames from the supervisor

    def granted(self, rid: int, ok: bool) -> None:
        asked = self._asked.pop(rid, None)
        if asked is None:
            return
        key, fut = asked
        if fut.done():  # cannot happen (nobody cancels it), but a grant must not leak
            if ok:
                self.give_back(key, SHARED)
            return
        fut.set_result(SHARED if ok else None)

    def freed(self, key: str) -> None:
        if self._on_free is not None:
            self._on_free(key)

    async def close(self) -> None:
        return None  # the limiter closes the connection

    def lost(self) -> None:
        """The supervisor is gone: the takes waiting for it fail (503; the worker is stopping)."""
        for _, fut in self._asked.values():
            if not fut.done():
                fut.set_exception(limits_unavailable())
        self._asked.clear()
