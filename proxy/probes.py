"""Active probes: a service with ``probe_interval_s`` is asked ``GET {address}/models`` on a timer.

A breaker that learns only from traffic learns nothing about a service that gets none
(a fallback, a quiet night): the first request after the vendor went down pays for the
discovery. A probe keeps the state current off the request path — one asyncio task per
probed service, sending with the service's first key (its credential resolved like a
request's, ``env:`` included), bounded by the service's ``timeout_s``. A probe that
cannot connect, times out, or gets a 5xx or 429 opens the circuit; any other answer
(even a 401 or a 404: the vendor is there) closes it.

Tasks follow the snapshot: :meth:`Probes.sync` starts the tasks of newly probed
services, restarts those whose definition changed, and stops the rest; :meth:`close`
stops them all at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

from .circuit import CircuitBreakers, Reason
from .errors import GatewayError
from .relay import CONNECT_TIMEOUT_S
from .routes import Service
from .upstream_errors import FirstByteTimeout, ReadTimeout, UpstreamError
from .vendor_client import ACCEPT_ENCODING, VendorPool, origin_of

log = logging.getLogger("aigw")


def probe_request(svc: Service, credential: str) -> bytes:
    """``GET {address}/models`` with the key's credential: what an OpenAI SDK's ``models.list()`` sends."""
    origin = origin_of(svc.address)
    return (
        b"GET " + (origin.base_path + "/models").encode() + b" HTTP/1.1\r\n" + origin.host_line + ACCEPT_ENCODING
        + b"accept: application/json\r\nuser-agent: aigw-probe\r\nauthorization: Bearer "
        + credential.encode() + b"\r\n\r\n"
    )  # fmt: skip


async def probe_once(pool: VendorPool, svc: Service) -> tuple[bool, Reason | None, str]:
    """One probe: (passed, the failure's reason, what the log says). Never raises for the vendor's faults."""
    try:
        request = probe_request(svc, svc.keys[0].resolve())
    except GatewayError as err:  # the operator's to fix, not the vendor's fault
        raise ProbeSkipped(err.message) from None
    try:
        async with asyncio.timeout(svc.timeout_s):
            conn = await pool.exchange(
                origin_of(svc.address),
                request,
                connect_timeout=min(svc.timeout_s, CONNECT_TIMEOUT_S),
                read_timeout=svc.timeout_s,
                first_byte_timeout=svc.first_byte_timeout_s,
                proxy=svc.proxy,
                ca_file=svc.ca_file,
            )
            try:
                await conn.read_all()
            finally:
                pool.release(conn)
    except FirstByteTimeout:
        return False, "first_byte_timeout", f"no answer within {svc.first_byte_timeout_s:g} s"
    except (ReadTimeout, TimeoutError):
        return False, "timeout", f"no answer within {svc.timeout_s:g} s"
    except UpstreamError as exc:
        return False, "connect", f"{type(exc).__name__}: {exc}"
    status = conn.status
    if status == 429:
        return False, "status_429", "answered 429"
    if status >= 500:
        return False, "status_5xx", f"answered {status}"
    return True, None, f"answered {status}"


class ProbeSkipped(Exception):
    """The probe could not be sent (the first key's ``env:`` variable is missing)."""


class Probes:
    """The probe tasks of the current snapshot's services."""

    def __init__(self, breakers: CircuitBreakers, pool: Callable[[], VendorPool | None]) -> None:
        self._breakers = breakers
        self._pool = pool
        self._tasks: dict[str, tuple[Service, asyncio.Task[None]]] = {}

    @property
    def probed(self) -> list[str]:
        return sorted(self._tasks)

    def sync(self, services: Iterable[Service]) -> None:
        """Run one task per service with ``probe_interval_s > 0``; a changed definition restarts its task."""
        wanted = {s.name: s for s in services if s.probe_interval_s > 0 and s.keys}
        for name, (svc, task) in list(self._tasks.items()):
            if wanted.get(name) != svc:
                task.cancel()
                del self._tasks[name]
        loop = asyncio.get_running_loop()
        for name, svc in wanted.items():
            if name not in self._tasks:
                self._tasks[name] = (svc, loop.create_task(self._run(svc), name=f"aigw-probe-{name}"))

    async def close(self) -> None:
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, svc: Service) -> None:
        skipped = False
        while True:
            pool = self._pool()
            if pool is not None:
                try:
                    passed, reason, detail = await probe_once(pool, svc)
                except ProbeSkipped as exc:
                    if not skipped:
                        log.warning("probe of model service %r skipped: %s", svc.name, exc)
                    skipped = True
                except Exception:  # a bug must not end the probing of this service silently
                    log.exception("probe of model service %r failed unexpectedly", svc.name)
                else:
                    skipped = False
                    before = self._breakers.state(svc)
                    after = self._breakers.probe(svc, passed, reason)
                    if after != before:
                        log.info("probe of model service %r: %s; circuit %s → %s", svc.name, detail, before, after)
            await asyncio.sleep(svc.probe_interval_s)
