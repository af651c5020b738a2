"""The per-service circuit breaker on an injected clock: every transition, the single
half-open trial, stale results, probes, and configuration read at each call."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

import pytest

from proxy.circuit import NEUTRAL, REASONS, RETRYABLE, CircuitBreakers, Reason


@dataclass(frozen=True)
class Svc:
    name: str = "s"
    circuit_failures: int = 3
    circuit_cooldown_s: float = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cb(clock: Clock) -> CircuitBreakers:
    return CircuitBreakers(clock)


def fail(cb: CircuitBreakers, svc: Svc, n: int, reason: Reason = "status_5xx") -> None:
    for _ in range(n):
        adm = cb.admit(svc)
        assert adm.allowed
        cb.record(svc, adm, reason)


def open_circuit(cb: CircuitBreakers, svc: Svc) -> None:
    fail(cb, svc, svc.circuit_failures)
    assert cb.state(svc) == "open"


def test_reason_vocabulary_is_partitioned() -> None:
    assert set(REASONS) == {"ok"} | RETRYABLE | NEUTRAL
    assert not RETRYABLE & NEUTRAL
    assert {"connect", "timeout", "first_byte_timeout", "status_5xx", "status_429"} == RETRYABLE


def test_unknown_until_a_result_then_healthy(cb: CircuitBreakers) -> None:
    svc = Svc()
    assert cb.state(svc) == "unknown"
    adm = cb.admit(svc)
    assert adm.allowed and adm.state == "unknown"
    assert cb.record(svc, adm, "ok") == "healthy"
    assert cb.state(svc) == "healthy"


def test_a_first_failure_counts_in_the_closed_state(cb: CircuitBreakers) -> None:
    svc = Svc()
    fail(cb, svc, 1, "connect")
    assert cb.state(svc) == "healthy"
    assert cb.health(svc).consecutive_failures == 1


@pytest.mark.parametrize("reason", sorted(RETRYABLE))
def test_consecutive_retryable_failures_open(cb: CircuitBreakers, clock: Clock, reason: Reason) -> None:
    svc = Svc()
    fail(cb, svc, 2, reason)
    assert cb.state(svc) == "healthy"
    fail(cb, svc, 1, reason)
    assert cb.state(svc) == "open"
    adm = cb.admit(svc)
    assert not adm.allowed and adm.state == "open"
    assert adm.retry_at == clock.now + 30.0
    assert adm.retry_in_s == 30.0
    h = cb.health(svc)
    assert h.opened_total == 1 and h.last_reason == reason and h.retry_in_s == 30.0


def test_a_success_resets_the_count(cb: CircuitBreakers) -> None:
    svc = Svc()
    fail(cb, svc, 2)
    adm = cb.admit(svc)
    cb.record(svc, adm, "ok")
    fail(cb, svc, 2)
    assert cb.state(svc) == "healthy"
    assert cb.health(svc).consecutive_failures == 2


@pytest.mark.parametrize("reason", sorted(NEUTRAL))
def test_neutral_reasons_neither_count_nor_reset(cb: CircuitBreakers, reason: Reason) -> None:
    svc = Svc()
    fail(cb, svc, 2)
    adm = cb.admit(svc)
    cb.record(svc, adm, reason)
    assert cb.health(svc).consecutive_failures == 2
    fail(cb, svc, 1)
    assert cb.state(svc) == "open"


def test_cool_down_leads_to_half_open_and_one_trial(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 29.999
    assert not cb.admit(svc).allowed
    clock.now += 0.001
    assert cb.state(svc) == "half-open"
    trial = cb.admit(svc)
    assert trial.allowed and trial.trial and trial.state == "half-open"
    refused = cb.admit(svc)
    assert not refused.allowed and refused.state == "half-open" and refused.retry_in_s > 0
    assert cb.record(svc, trial, "ok") == "healthy"
    assert cb.admit(svc).allowed
    assert cb.health(svc).consecutive_failures == 0


def test_failed_trial_opens_for_another_cool_down(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    trial = cb.admit(svc)
    assert cb.record(svc, trial, "timeout") == "open"
    adm = cb.admit(svc)
    assert not adm.allowed and adm.retry_at == clock.now + 30
    assert cb.health(svc).opened_total == 2
    clock.now += 30
    assert cb.admit(svc).trial


def test_neutral_trial_frees_the_slot_for_the_next_request(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    trial = cb.admit(svc)
    assert cb.record(svc, trial, "concurrency") == "half-open"
    assert cb.admit(svc).trial


def test_released_trial_frees_the_slot(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    trial = cb.admit(svc)
    assert not cb.admit(svc).allowed
    cb.release(trial)
    assert cb.admit(svc).trial


def test_a_lost_trial_result_stops_blocking_after_the_lease(clock: Clock) -> None:
    cb = CircuitBreakers(clock, trial_lease_s=100)
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    assert cb.admit(svc).trial
    clock.now += 99
    assert not cb.admit(svc).allowed
    clock.now += 1
    assert cb.admit(svc).trial


async def test_half_open_lets_exactly_one_of_concurrent_requests_through(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    gate = asyncio.Event()
    through: list[bool] = []

    async def request() -> None:
        adm = cb.admit(svc)
        through.append(adm.allowed)
        if adm.allowed:
            await gate.wait()  # the trial is in flight while the others arrive
            cb.record(svc, adm, "ok")

    tasks = [asyncio.create_task(request()) for _ in range(20)]
    await asyncio.sleep(0)
    assert through.count(True) == 1 and len(through) == 20
    assert cb.state(svc) == "half-open"
    gate.set()
    await asyncio.gather(*tasks)
    assert cb.state(svc) == "healthy"


def test_late_results_from_before_opening_are_ignored(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    early = [cb.admit(svc) for _ in range(2)]  # in flight while the circuit opens
    open_circuit(cb, svc)
    cb.record(svc, early[0], "ok")
    assert cb.state(svc) == "open"
    clock.now += 20
    cb.record(svc, early[1], "status_5xx")  # must not restart the cool-down
    clock.now += 10
    assert cb.state(svc) == "half-open"


def test_late_result_does_not_decide_half_open(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    early = cb.admit(svc)
    open_circuit(cb, svc)
    clock.now += 30
    trial = cb.admit(svc)
    cb.record(svc, early, "ok")
    assert cb.state(svc) == "half-open"
    assert not cb.admit(svc).allowed
    cb.record(svc, trial, "ok")
    assert cb.state(svc) == "healthy"


def test_results_of_requests_admitted_while_closed_still_count(cb: CircuitBreakers) -> None:
    svc = Svc()
    in_flight = [cb.admit(svc) for _ in range(3)]  # admitted in "unknown"
    cb.record(svc, cb.admit(svc), "ok")  # unknown → healthy changes nothing for them
    for adm in in_flight:
        cb.record(svc, adm, "status_429")
    assert cb.state(svc) == "open"


def test_refused_admission_records_nothing(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    refused = cb.admit(svc)
    cb.record(svc, refused, "ok")
    assert cb.state(svc) == "open"


def test_probes_open_and_close(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    assert cb.probe(svc, False, "connect") == "open"
    assert not cb.admit(svc).allowed
    assert cb.health(svc).last_reason == "connect"
    clock.now += 10
    assert cb.probe(svc, False, "connect") == "open"  # a failed probe restarts the cool-down
    clock.now += 25
    assert cb.state(svc) == "open"
    assert cb.health(svc).opened_total == 1  # open → open is no new opening
    assert cb.probe(svc, True) == "healthy"
    assert cb.admit(svc).allowed


def test_passing_probe_closes_half_open_and_stales_the_trial(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    clock.now += 30
    trial = cb.admit(svc)
    cb.probe(svc, True)
    cb.record(svc, trial, "status_5xx")  # the trial was admitted before the probe closed it
    assert cb.state(svc) == "healthy"
    assert cb.health(svc).consecutive_failures == 0


def test_off_never_opens_or_refuses(cb: CircuitBreakers) -> None:
    svc = Svc(circuit_failures=0)
    fail(cb, svc, 50)
    assert cb.admit(svc).allowed
    assert cb.state(svc) == "healthy"
    assert cb.probe(svc, False, "connect") == "healthy"
    assert cb.admit(svc).allowed


def test_turning_off_an_open_circuit_admits_at_once(cb: CircuitBreakers) -> None:
    svc = Svc()
    open_circuit(cb, svc)
    assert cb.admit(replace(svc, circuit_failures=0)).allowed


def test_configuration_is_read_at_each_call(cb: CircuitBreakers, clock: Clock) -> None:
    svc = Svc(circuit_failures=5, circuit_cooldown_s=60)
    fail(cb, svc, 3)
    lowered = replace(svc, circuit_failures=4)
    fail(cb, lowered, 1)
    assert cb.state(lowered) == "open"
    clock.now += 10
    shorter = replace(svc, circuit_cooldown_s=10)
    assert cb.state(shorter) == "half-open"
    assert cb.state(svc) == "open"


def test_services_are_independent_and_keyed_by_name(cb: CircuitBreakers) -> None:
    a, b = Svc("a"), Svc("b")
    open_circuit(cb, a)
    assert cb.admit(b).allowed
    # A reload builds new service objects: same name, same circuit.
    assert not cb.admit(Svc("a")).allowed


def test_snapshot_lists_configured_services_and_retain_forgets(cb: CircuitBreakers) -> None:
    a, b, gone = Svc("a"), Svc("b"), Svc("gone")
    open_circuit(cb, a)
    open_circuit(cb, gone)
    snap = cb.snapshot([a, b])
    assert set(snap) == {"a", "b"}
    assert snap["a"].state == "open" and snap["a"].retry_in_s == 30.0
    assert snap["b"].state == "unknown" and snap["b"].opened_total == 0
    cb.retain(["a", "b"])
    assert cb.state(gone) == "unknown"
    assert cb.state(a) == "open"
