"""A circuit breaker per model service, and the vocabulary of why a vendor attempt ended.

A service that fails ``circuit_failures`` times in a row (connect error, timeout, 5xx,
429) is *open* for ``circuit_cooldown_s``: the request path skips it and goes on to the
next fallback service instead of waiting on a vendor that is down. After the cool-down
the circuit is *half-open*: exactly one request (the trial) is let through while every
other one is still refused; the trial's success closes the circuit, its failure opens it
for another cool-down. Active probes report into the same state.

The state is runtime state keyed by service *name*, so it survives configuration
reloads; the thresholds are read from the service definition passed to every call, so
an edited ``circuit_failures`` or ``circuit_cooldown_s`` applies at once, even to a
circuit that is open right now.

Results arrive late and out of order (a request admitted before the circuit opened may
fail after it did). Each :class:`Admission` carries the circuit's *epoch*, bumped on
every state change, and a result from an older epoch is ignored: it says nothing about
the vendor since the change, and must neither extend a cool-down nor close a circuit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

#: Why one vendor attempt ended, as the request record's ``attempts[].reason`` says it.
Reason = Literal[
    "ok",
    "connect",
    "timeout",
    "first_byte_timeout",
    "status_5xx",
    "status_429",
    "key_cooldown",
    "circuit_open",
    "concurrency",
]
REASONS: Final[tuple[Reason, ...]] = (
    "ok",
    "connect",
    "timeout",
    "first_byte_timeout",
    "status_5xx",
    "status_429",
    "key_cooldown",
    "circuit_open",
    "concurrency",
)
#: The vendor failed: the request goes on to the next fallback service, and the
#: service's breaker counts one failure.
RETRYABLE: Final[frozenset[Reason]] = frozenset(
    {"connect", "timeout", "first_byte_timeout", "status_5xx", "status_429"}
)
#: The attempt never reached the vendor, or the vendor rejected one key rather than
#: failing: it neither counts against the service nor for it.
NEUTRAL: Final[frozenset[Reason]] = frozenset({"key_cooldown", "circuit_open", "concurrency"})

State = Literal["healthy", "open", "half-open", "unknown"]
STATES: Final[tuple[State, ...]] = ("healthy", "open", "half-open", "unknown")

#: What a request refused in half-open (the trial still running) is told to wait: the
#: trial's answer decides within about one vendor round trip.
HALF_OPEN_RETRY_S: Final = 1.0
#: A trial whose result never arrives (a bug in a caller) stops blocking the circuit
#: after this long: the next request becomes the trial.
TRIAL_LEASE_S: Final = 600.0

Clock = Callable[[], float]


class BreakerSettings(Protocol):
    """What the breaker reads from a service definition (the snapshot's service has it)."""

    @property
    def name(self) -> str: ...
    @property
    def circuit_failures(self) -> int: ...
    @property
    def circuit_cooldown_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Admission:
    """The breaker's answer to "may this request use the service now?"."""

    service: str
    allowed: bool
    #: The state that decided (``half-open`` with ``trial`` for the one request let through).
    state: State
    #: Clock time at which the service is worth trying again (refusals only).
    retry_at: float | None = None
    #: Seconds from the admission to ``retry_at`` (for ``Retry-After`` and the message).
    retry_in_s: float = 0.0
    #: This request is the half-open trial: its result decides the circuit.
    trial: bool = False
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service's circuit for ``/healthz``, metrics and the console."""

    state: State
    consecutive_failures: int
    #: Seconds until an open circuit lets a trial through (0 unless open).
    retry_in_s: float
    #: How often the circuit opened since the gateway started.
    opened_total: int
    last_reason: Reason | None


@dataclass(slots=True)
class _Circuit:
    epoch: int = 0
    #: ``None`` until the first result; then whether the circuit is closed.
    closed: bool | None = None
    failures: int = 0
    opened_at: float = 0.0
    trial_started: float | None = None
    opened_total: int = 0
    last_reason: Reason | None = None


class CircuitBreakers:
    """Every service's circuit; one instance per gateway process, kept across reloads."""

    def __init__(self, clock: Clock = time.monotonic, *, trial_lease_s: float = TRIAL_LEASE_S) -> None:
        self._clock = clock
        self._trial_lease_s = trial_lease_s
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, name: str) -> _Circuit:
        c = self._circuits.get(name)
        if c is None:
            c = self._circuits[name] = _Circuit()
        return c

    def _state(self, c: _Circuit, svc: BreakerSettings, now: float) -> State:
        if c.closed is None:
            return "unknown"
        if c.closed or svc.circuit_failures <= 0:
            return "healthy"
        return "open" if now < c.opened_at + svc.circuit_cooldown_s else "half-open"

    def admit(self, svc: BreakerSettings) -> Admission:
        """Whether a request may go to ``svc`` now; in half-open, only the first one may."""
        c = self._get(svc.name)
        now = self._clock()
        state = self._state(c, svc, now)
        if state in ("healthy", "unknown"):
            return Admission(svc.name, True, state, epoch=c.epoch)
        if state == "open":
            retry_at = c.opened_at + svc.circuit_cooldown_s
            return Admission(svc.name, False, state, retry_at, retry_at - now, epoch=c.epoch)
        if c.trial_started is not None and now < c.trial_started + self._trial_lease_s:
            return Admission(svc.name, False, state, now + HALF_OPEN_RETRY_S, HALF_OPEN_RETRY_S, epoch=c.epoch)
        c.trial_started = now
        return Admission(svc.name, True, state, trial=True, epoch=c.epoch)

    def record(self, svc: BreakerSettings, admission: Admission, reason: Reason) -> State:
        """The result of a request ``admit`` let through: ``ok`` closes, a retryable reason
        counts a failure (and opens past the threshold), a neutral one changes nothing
        but frees the half-open trial for the next request."""
        c = self._get(svc.name)
        now = self._clock()
        if not admission.allowed or admission.epoch != c.epoch:  # refused, or from before the last change
            return self._state(c, svc, now)
        if admission.trial:
            c.trial_started = None
        if reason in NEUTRAL:
            return self._state(c, svc, now)
        c.last_reason = reason
        if reason == "ok":
            self._close(c)
        else:
            c.failures += 1
            limit = svc.circuit_failures
            if limit > 0 and (admission.trial or (c.closed is not False and c.failures >= limit)):
                self._open(c, now, count=True)
            elif c.closed is None:
                c.closed = True
        return self._state(c, svc, now)

    def release(self, admission: Admission) -> None:
        """The admitted request ended without a result (cancelled): free the trial, if it was one."""
        c = self._circuits.get(admission.service)
        if c is not None and admission.trial and admission.epoch == c.epoch:
            c.trial_started = None

    def probe(self, svc: BreakerSettings, passed: bool, reason: Reason | None = None) -> State:
        """An active probe's result: a pass closes the circuit, a failure opens it (anew)."""
        c = self._get(svc.name)
        now = self._clock()
        c.last_reason = "ok" if passed else reason
        if passed:
            self._close(c)
        elif svc.circuit_failures > 0:
            c.failures += 1
            self._open(c, now, count=self._state(c, svc, now) != "open")
        return self._state(c, svc, now)

    def state(self, svc: BreakerSettings) -> State:
        c = self._circuits.get(svc.name)
        return "unknown" if c is None else self._state(c, svc, self._clock())

    def health(self, svc: BreakerSettings) -> ServiceHealth:
        c = self._circuits.get(svc.name) or _Circuit()
        now = self._clock()
        state = self._state(c, svc, now)
        retry = c.opened_at + svc.circuit_cooldown_s - now if state == "open" else 0.0
        return ServiceHealth(state, c.failures, retry, c.opened_total, c.last_reason)

    def snapshot(self, services: Iterable[BreakerSettings]) -> dict[str, ServiceHealth]:
        """The circuits of the services configured now (``/healthz``, ``aigw_service_state``)."""
        return {svc.name: self.health(svc) for svc in services}

    def retain(self, names: Iterable[str]) -> None:
        """Forget the circuits of services that are no longer configured (after a reload)."""
        keep = set(names)
        for name in [n for n in self._circuits if n not in keep]:
            del self._circuits[name]

    @staticmethod
    def _open(c: _Circuit, now: float, *, count: bool) -> None:
        """Open (or, from open, restart the cool-down); results of earlier admissions go stale."""
        c.closed = False
        c.opened_at = now
        c.trial_started = None
        if count:
            c.opened_total += 1
        c.epoch += 1

    @staticmethod
    def _close(c: _Circuit) -> None:
        """Close after a success; only leaving open/half-open makes earlier results stale
        (the results of requests admitted while closed or unknown still count)."""
        c.failures = 0
        if c.closed is False:
            c.trial_started = None
            c.epoch += 1
        c.closed = True
