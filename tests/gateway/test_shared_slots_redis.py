"""Model key slots counted in a real Redis by two counters (two processes' worth) in this
process: the bound holds over both, a waiter is served once the other gives back, a
holder that stops renewing loses its leases, and Redis away follows ``redis_failure``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from servers import RedisServer, redis_server

import proxy.shared_slots as shared_slots
from proxy.errors import GatewayError
from proxy.key_slots import KeySlots
from proxy.shared_limits import RedisLimiter
from proxy.shared_slots import RedisSlotCounter, slots_key

__all__ = ["redis_server"]  # the fixture, used by name

# A real server: tiered with the gateway tests, not the quick in-process ones.
pytestmark = [pytest.mark.gateway, pytest.mark.timeout(60)]

WAIT = 30.0


@dataclass(frozen=True)
class Key:
    name: str
    max_concurrency: int = 1


@dataclass
class Proc:
    limiter: RedisLimiter
    counter: RedisSlotCounter
    slots: KeySlots


async def until(pred: Any, what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def procs(redis_server: RedisServer) -> AsyncIterator[list[Proc]]:
    assert redis_server.command("FLUSHALL") == "+OK"
    out = []
    for _ in range(2):
        lim = RedisLimiter(redis_server.url)
        counter = RedisSlotCounter(lim)
        out.append(Proc(lim, counter, KeySlots(counter)))
    try:
        yield out
    finally:
        for p in out:
            await p.slots.close()
            await p.limiter.close()


def zcard(redis: RedisServer, key: str) -> int:
    return int(redis.command("ZCARD", slots_key(key)).lstrip(":"))


async def test_the_bound_holds_across_processes_and_a_waiter_is_served(
    procs: list[Proc], redis_server: RedisServer
) -> None:
    a, b = procs
    k = Key("k")
    held = await a.slots.acquire([k], 0)
    assert held is not None
    assert await b.slots.acquire([k], 0) is None
    assert zcard(redis_server, "k") == 1
    assert await b.counter.shared_in_flight(["k"]) == {"k": 1}
    waiter = asyncio.create_task(b.slots.acquire([k], WAIT))
    await until(lambda: b.slots.queued("k") == 1, "b's waiter")
    held.release()  # b hears nothing: it asks again, backing off up to POLL_S
    got = await asyncio.wait_for(waiter, 5)
    assert got is not None and got.key.name == "k"
    assert zcard(redis_server, "k") == 1
    got.release()
    await until(lambda: zcard(redis_server, "k") == 0, "the lease removed")


async def test_unlimited_keys_never_reach_redis(procs: list[Proc], redis_server: RedisServer) -> None:
    a, _ = procs
    coro = a.slots.acquire([Key("free", 0)], 0)
    try:
        coro.send(None)
    except StopIteration as stop:
        slot = stop.value
    else:
        coro.close()
        raise AssertionError("an unlimited key waited for something")
    assert slot is not None
    slot.release()
    assert redis_server.command("EXISTS", slots_key("free")) == ":0"


async def test_a_holder_that_stops_renewing_loses_its_slot(
    procs: list[Proc], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease ten renewals long: a loaded machine that delays one renewal must not lose it.
    monkeypatch.setattr(shared_slots, "LEASE_S", 2.0)
    monkeypatch.setattr(shared_slots, "RENEW_S", 0.2)
    a, b = procs
    k = Key("k")
    held = await a.slots.acquire([k], 0)
    assert held is not None
    # Renewed: still held well past one lease.
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    while loop.time() < end:
        assert await b.slots.acquire([k], 0) is None
        await asyncio.sleep(0.1)
    # As a process that died: its renewals stop and it never gives back.
    await a.counter.close()
    waiter = asyncio.create_task(b.slots.acquire([k], WAIT))
    got = await asyncio.wait_for(waiter, 10)
    assert got is not None


async def test_redis_away_counts_alone_or_refuses(procs: list[Proc], redis_server: RedisServer) -> None:
    a, _ = procs
    k = Key("two", 2)
    redis_server.stop()
    try:
        first = await a.slots.acquire([k], 0)  # finds Redis gone: counted here alone
        assert first is not None and not a.limiter.shared
        assert await a.slots.acquire([k], 0) is not None
        assert await a.slots.acquire([k], 0) is None  # this process's own bound
        first.release()
        assert await a.slots.acquire([k], 0) is not None
        a.limiter.failure = "refuse"
        with pytest.raises(GatewayError) as err:
            await a.slots.acquire([Key("other", 1)], 0)
        assert err.value.status == 503 and err.value.code == "limits_unavailable"
        assert await a.slots.acquire([Key("free", 0)], 0) is not None  # unlimited: served
    finally:
        redis_server.start()
    await until(lambda: a.limiter.shared, "Redis used again")
    a.limiter.failure = "local"
    assert await a.slots.acquire([Key("k3", 1)], 0) is not None
    assert zcard(redis_server, "k3") == 1
