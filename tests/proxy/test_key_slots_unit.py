"""Key concurrency slots: first free key in policy order, a FIFO queue across a service's
keys, timeouts, cancellation that never leaks a slot, limits changed by a reload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from proxy.key_slots import KeySlots, LocalSlotCounter, Slot

pytestmark = pytest.mark.timeout(10)

#: Long enough never to expire in a test that hands a slot over before it.
WAIT = 30.0
#: Short enough that a test waiting for the timeout stays fast.
TINY = 0.01


@dataclass(frozen=True)
class Key:
    name: str
    max_concurrency: int = 1


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


A, B, C = Key("a"), Key("b"), Key("c")


async def settle() -> None:
    """Let every runnable task reach its next wait (each enqueue is one step)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def take(slots: KeySlots, keys: list[Key], timeout: float = 0) -> Slot:
    slot = await slots.acquire(keys, timeout)
    assert slot is not None
    return slot


async def test_first_key_with_a_free_slot_in_the_given_order() -> None:
    slots = KeySlots()
    s1 = await take(slots, [A, B])
    s2 = await take(slots, [A, B])
    assert (s1.key.name, s2.key.name) == ("a", "b")
    s3 = await take(slots, [B, A, C])
    assert s3.key.name == "c"
    assert slots.in_flight("a") == slots.in_flight("b") == slots.in_flight("c") == 1


async def test_unlimited_keys_never_wait() -> None:
    slots = KeySlots()
    free = Key("free", 0)
    held = [await take(slots, [free]) for _ in range(100)]
    assert slots.in_flight("free") == 100
    for s in held:
        s.release()
    assert slots.in_flight("free") == 0


async def test_no_waiting_when_timeout_is_zero() -> None:
    slots = KeySlots()
    await take(slots, [A])
    assert await slots.acquire([A], 0) is None
    assert slots.stats().queued == 0


async def test_waiters_are_served_first_come_first_served() -> None:
    slots = KeySlots()
    held = await take(slots, [A])
    order: list[int] = []

    async def waiter(i: int) -> None:
        slot = await take(slots, [A], WAIT)
        order.append(i)
        slot.release()

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(waiter(i)))
        await settle()
    assert slots.queued("a") == 5
    held.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert slots.in_flight("a") == 0 and slots.stats().queued == 0


async def test_a_new_arrival_does_not_overtake_the_queue() -> None:
    slots = KeySlots()
    held = await take(slots, [A])
    queued = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    held.release()  # handed to the waiter at once, before it even runs again
    assert await slots.acquire([A], 0) is None
    got = await queued
    assert got is not None and got.key.name == "a"
    assert slots.in_flight("a") == 1


async def test_a_waiter_gets_whichever_of_its_keys_frees_first() -> None:
    slots = KeySlots()
    held_a, held_b = await take(slots, [A]), await take(slots, [B])
    queued = asyncio.create_task(slots.acquire([A, B], WAIT))
    await settle()
    assert slots.queued("a") == slots.queued("b") == 1
    held_b.release()
    got = await queued
    assert got is not None and got.key.name == "b"
    assert slots.in_flight("a") == 1
    held_a.release()


async def test_a_waiter_is_not_blocked_by_an_older_one_for_other_keys() -> None:
    slots = KeySlots()
    held_a, held_b = await take(slots, [A]), await take(slots, [B])
    for_b = asyncio.create_task(slots.acquire([B], WAIT))
    await settle()
    for_a = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    held_a.release()
    got = await for_a
    assert got is not None and got.key.name == "a"
    assert not for_b.done()
    held_b.release()
    assert (await for_b) is not None


async def test_timeout_gives_none_and_leaves_the_queue() -> None:
    slots = KeySlots()
    held = await take(slots, [A, B]), await take(slots, [A, B])
    assert await slots.acquire([A, B], TINY) is None
    st = slots.stats()
    assert st.queued == 0 and st.timeouts == 1
    for s in held:
        s.release()
    assert slots.in_flight("a") == slots.in_flight("b") == 0


async def test_a_cancelled_waiter_leaves_the_queue_and_leaks_nothing() -> None:
    slots = KeySlots()
    held = await take(slots, [A])
    first = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    second = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert slots.queued("a") == 1
    held.release()
    got = await second
    assert got is not None
    got.release()
    assert slots.in_flight("a") == 0 and slots.stats().queued == 0


async def test_slot_handed_to_a_waiter_being_cancelled_passes_to_the_next() -> None:
    slots = KeySlots()
    held = await take(slots, [A])
    first = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    second = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    held.release()  # resolves the first waiter's future ...
    first.cancel()  # ... which is cancelled before it could run
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    got = results[1]
    assert isinstance(got, Slot) and got.key.name == "a"
    assert slots.in_flight("a") == 1
    got.release()
    assert slots.in_flight("a") == 0


async def test_cancelled_with_nobody_behind_gives_the_slot_back() -> None:
    slots = KeySlots()
    held = await take(slots, [A])
    first = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    held.release()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert slots.in_flight("a") == 0
    assert (await slots.acquire([A], 0)) is not None


async def test_release_is_idempotent_and_async_with_releases() -> None:
    slots = KeySlots()
    two = Key("two", 2)
    other = await take(slots, [two])
    async with await take(slots, [two]) as slot:
        assert slots.in_flight("two") == 2
    assert slot.released
    slot.release()
    slot.release()
    assert slots.in_flight("two") == 1
    other.release()
    assert slots.in_flight("two") == 0


async def test_a_key_shared_by_two_services_shares_one_bound() -> None:
    slots = KeySlots()
    shared = Key("shared", 1)
    await take(slots, [shared, Key("s1-only", 1)])
    s = await take(slots, [Key("s2-only", 1), shared])
    assert s.key.name == "s2-only"
    assert await slots.acquire([shared], 0) is None


async def test_a_raised_limit_lets_waiters_in_at_the_next_acquire() -> None:
    slots = KeySlots()
    await take(slots, [Key("k", 1)])
    queued = asyncio.create_task(slots.acquire([Key("k", 1)], WAIT))
    await settle()
    # A reload raised the limit to 3: the waiter gets the new room first, then the newcomer.
    newcomer = await slots.acquire([Key("k", 3)], 0)
    got = await queued
    assert got is not None and newcomer is not None
    assert slots.in_flight("k") == 3


async def test_a_lowered_limit_holds_the_queue_until_below_it() -> None:
    slots = KeySlots()
    held = [await take(slots, [Key("k", 2)]) for _ in range(2)]
    queued = asyncio.create_task(slots.acquire([Key("k", 1)], WAIT))  # the reload lowered it to 1
    await settle()
    held[0].release()
    await settle()
    assert not queued.done() and slots.in_flight("k") == 1
    held[1].release()
    got = await queued
    assert got is not None and slots.in_flight("k") == 1


async def test_wait_counts_and_seconds_per_key() -> None:
    clock = Clock()
    slots = KeySlots(clock=clock)
    held = await take(slots, [A])
    queued = asyncio.create_task(slots.acquire([A], WAIT))
    await settle()
    clock.now += 2.5
    held.release()
    got = await queued
    assert got is not None
    load = slots.stats().keys["a"]
    assert (load.waits, load.wait_s, load.in_flight, load.queued) == (1, 2.5, 1, 0)
    late = asyncio.create_task(slots.acquire([A], TINY))
    await settle()
    clock.now += 1.0
    assert await late is None
    st = slots.stats()
    assert st.timeouts == 1 and st.timeout_wait_s == 1.0 and st.keys["a"].waits == 1


async def test_counting_is_delegated_to_the_counter() -> None:
    counter = LocalSlotCounter()
    assert counter.try_take("a", 1) is not None  # a request counted elsewhere (another process)
    slots = KeySlots(counter)
    assert await slots.acquire([A], 0) is None
    got = await take(slots, [A, B])
    assert got.key.name == "b" and counter.in_flight("b") == 1


async def test_no_keys_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        await KeySlots().acquire([], 1)


async def test_take_now_shares_the_counts_with_acquire() -> None:
    slots = KeySlots()
    now = slots.take_now([A, B])
    assert now is not None and now.key.name == "a"
    later = await take(slots, [A, B])
    assert later.key.name == "b"  # a is held by the slot taken at once
    assert slots.take_now([A, B]) is None  # both full: acquire decides (queue or refuse)
    now.release()
    again = slots.take_now([A, B])
    assert again is not None and again.key.name == "a"
    assert slots.in_flight("a") == slots.in_flight("b") == 1


async def test_take_now_never_overtakes_a_waiter() -> None:
    slots = KeySlots()
    held = await take(slots, [Key("k", 1)])
    queued = asyncio.create_task(slots.acquire([Key("k", 1)], WAIT))
    await settle()
    # A reload raised the limit: the room is the waiter's first, so the fast path declines
    # and acquire (which hands the new room to the queue) serves the newcomer after it.
    assert slots.take_now([Key("k", 2)]) is None
    newcomer = await slots.acquire([Key("k", 3)], 0)
    got = await queued
    assert got is not None and newcomer is not None
    assert slots.in_flight("k") == 3
    held.release()


class _Remote:
    """Counts kept elsewhere: every take is a round trip, answered through an awaitable."""

    poll_s = 0.0

    def __init__(self) -> None:
        self.counts = LocalSlotCounter()

    def bind(self, on_free: Callable[[str], None]) -> None:
        self.counts.bind(on_free)

    def try_take(self, key: str, limit: int) -> Awaitable[int | None]:
        async def answer() -> int | None:
            return self.counts.try_take(key, limit)

        return answer()

    def give_back(self, key: str, lease: int) -> None:
        self.counts.give_back(key, lease)

    async def close(self) -> None:
        return None


async def test_take_now_declines_counts_shared_with_other_processes() -> None:
    remote = _Remote()
    slots = KeySlots(remote)
    assert slots.take_now([A]) is None
    assert (await take(slots, [A])).key.name == "a"  # acquire takes it through the round trip
    assert remote.counts.in_flight("a") == 1
