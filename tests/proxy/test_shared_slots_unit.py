"""Model key slots counted by the supervisor for its workers: two workers' counters on one
real limits socket (in this process), each with its own queue.

The bound holds over both; a refused worker is told when a slot frees elsewhere; a
worker whose connection goes away gives its slots back; unlimited keys never leave the
worker (no round trip at all).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from proxy.key_slots import KeySlots, LocalSlotCounter, Slot
from proxy.limits import MemoryLimiter
from proxy.shared_limits_embedded import LimitsServer, WorkerLimiter
from proxy.shared_slots_embedded import WorkerSlotCounter

pytestmark = pytest.mark.timeout(10)

WAIT = 30.0


@dataclass(frozen=True)
class Key:
    name: str
    max_concurrency: int = 1


K = Key("k")


@dataclass
class Worker:
    limiter: WorkerLimiter
    slots: KeySlots


@dataclass
class Instance:
    server: LimitsServer
    workers: list[Worker]


async def until(pred: Any, what: str, timeout: float = 5.0) -> None:
    """Poll ``pred`` on the loop, with a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def inst(tmp_path: Path) -> AsyncIterator[Instance]:
    server = LimitsServer(MemoryLimiter())
    path = str(tmp_path / "limits.sock")
    await server.start(path)
    workers = []
    for _ in range(2):
        lim = WorkerLimiter(path)
        await lim.connect()
        workers.append(Worker(lim, KeySlots(WorkerSlotCounter(lim))))
    try:
        yield Instance(server, workers)
    finally:
        for w in workers:
            await w.slots.close()
            await w.limiter.close()
        await server.close()


def done_without_waiting(coro: Coroutine[Any, Any, Slot | None]) -> Slot | None:
    """Run ``coro`` one step: it must finish without waiting for anything (no round trip)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("the acquire waited for something")


async def test_the_bound_holds_across_workers(inst: Instance) -> None:
    a, b = inst.workers
    held = await a.slots.acquire([K], 0)
    assert held is not None
    assert await b.slots.acquire([K], 0) is None
    assert inst.server.slots.counts == {"k": 1}
    assert (a.slots.in_flight("k"), b.slots.in_flight("k")) == (1, 0)
    held.release()
    await until(lambda: not inst.server.slots.counts, "the slot given back")
    got = await b.slots.acquire([K], 0)
    assert got is not None and inst.server.slots.counts == {"k": 1}


async def test_a_refused_worker_is_woken_when_a_slot_frees_elsewhere(inst: Instance) -> None:
    a, b = inst.workers
    held = await a.slots.acquire([K], 0)
    assert held is not None
    waiting = [asyncio.create_task(b.slots.acquire([K], WAIT)) for _ in range(3)]
    await until(lambda: b.slots.queued("k") == 3, "three waiters")
    held.release()  # the supervisor tells b; b's oldest waiter takes it
    first = await asyncio.wait_for(waiting[0], 5)
    assert first is not None and not waiting[1].done()
    first.release()  # b hands it on to its next waiter, first come first served
    second = await asyncio.wait_for(waiting[1], 5)
    assert second is not None and not waiting[2].done()
    assert inst.server.slots.counts == {"k": 1}
    second.release()
    third = await asyncio.wait_for(waiting[2], 5)
    assert third is not None
    third.release()
    await until(lambda: not inst.server.slots.counts, "every slot given back")


async def test_a_worker_that_goes_away_gives_its_slots_back(inst: Instance) -> None:
    a, b = inst.workers
    two = Key("two", 2)
    assert await a.slots.acquire([two], 0) is not None
    assert await a.slots.acquire([two], 0) is not None
    waiter = asyncio.create_task(b.slots.acquire([two], WAIT))
    await until(lambda: b.slots.queued("two") == 1, "a waiter at b")
    await a.limiter.close()  # as a worker killed: its connection closes
    got = await asyncio.wait_for(waiter, 5)
    assert got is not None and inst.server.slots.counts == {"two": 1}


async def test_unlimited_keys_never_reach_the_supervisor(inst: Instance) -> None:
    a, _ = inst.workers
    free = Key("free", 0)
    held = [done_without_waiting(a.slots.acquire([free], 0)) for _ in range(50)]
    assert all(s is not None for s in held) and a.slots.in_flight("free") == 50
    for s in held:
        assert s is not None
        s.release()
    await asyncio.sleep(0)
    assert inst.server.slots.counts == {} and a.slots.in_flight("free") == 0


async def test_the_local_counter_never_waits_either() -> None:
    slots = KeySlots(LocalSlotCounter())
    assert done_without_waiting(slots.acquire([K], 0)) is not None
    assert done_without_waiting(slots.acquire([Key("free", 0)], 0)) is not None


async def test_a_take_cancelled_in_flight_leaks_no_slot(inst: Instance) -> None:
    a, b = inst.workers
    task = asyncio.create_task(a.slots.acquire([K], 0))
    await asyncio.sleep(0)  # the take is on its way to the supervisor
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The supervisor granted it; the worker gave it back on hearing so.
    counter = a.slots.counter
    assert isinstance(counter, WorkerSlotCounter)
    await until(lambda: not counter._asked and not inst.server.slots.counts, "the late grant given back")
    assert await b.slots.acquire([K], 0) is not None


async def test_a_gone_supervisor_refuses_with_503(inst: Instance) -> None:
    from proxy.errors import GatewayError

    a, _ = inst.workers
    await a.limiter.close()  # as when the supervisor goes away: the connection is lost
    await until(lambda: not a.limiter.connected, "the connection gone")
    with pytest.raises(GatewayError) as err:
        await a.slots.acquire([K], 0)
    assert err.value.status == 503 and err.value.code == "limits_unavailable"
