"""The supervisor's pieces in process: counts held for several workers over a real Unix
socket, and Prometheus texts summed into one."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_limits_unit import snapshot

from proxy.context import RequestContext
from proxy.limits import MemoryLimiter
from proxy.routes import Snapshot
from proxy.shared_limits_embedded import LimitsServer, WorkerLimiter
from proxy.supervisor_admin import sum_metrics


def ctx_for(snap: Snapshot) -> RequestContext:
    ctx = RequestContext(snap, "r", "POST", "/a/v1/chat/completions", ts=time.time())
    ctx.consumer = snap.consumers["c"]
    ctx.api = snap.apis["a"]
    return ctx


@pytest.fixture
def rundir() -> Iterator[Path]:
    """A folder for the socket, removed after the test. Directly under the system temp
    folder, not pytest's deeper tmp_path: a Unix socket's path is limited to ~100 bytes."""
    with tempfile.TemporaryDirectory(prefix="aigw-test-") as folder:
        yield Path(folder)


async def _workers(rundir: Path, n: int) -> tuple[LimitsServer, list[WorkerLimiter]]:
    path = str(rundir / "limits.sock")
    server = LimitsServer(MemoryLimiter())
    await server.start(path)
    workers = [WorkerLimiter(path) for _ in range(n)]
    for w in workers:
        await w.connect()
    return server, workers


async def test_a_burst_over_three_workers_is_admitted_exactly_rpm_times(rundir: Path) -> None:
    server, workers = await _workers(rundir, 3)
    try:
        snap = snapshot(rpm=[4])
        ctxs = [ctx_for(snap) for _ in range(12)]
        pending = [workers[i % 3].check(c) for i, c in enumerate(ctxs)]
        decisions = [d if not asyncio.isfuture(d) else await d for d in pending]
        assert [d.allowed for d in decisions].count(True) == 4
        refused = next(d for d in decisions if not d.allowed)
        assert refused.error is not None and refused.error.code == "rate_limit_exceeded"
        assert refused.header("x-ratelimit-remaining-requests") == "0"
    finally:
        for w in workers:
            await w.close()
        await server.close()


async def test_a_dead_worker_gives_its_reservations_back(rundir: Path) -> None:
    server, workers = await _workers(rundir, 2)
    try:
        snap = snapshot(rpm=[0], quota=2, unit="requests")
        a, b = workers
        held = [await a.check(ctx_for(snap)) for _ in range(2)]  # type: ignore[misc]
        assert all(d.allowed for d in held)
        d = await b.check(ctx_for(snap))  # type: ignore[misc]
        assert not d.allowed and d.error is not None and "in progress" in d.error.message
        await a.close()  # the worker goes away mid-request: its holds are released

        async def admitted() -> bool:
            for _ in range(100):
                got = await b.check(ctx_for(snap))  # type: ignore[misc]
                if got.allowed:
                    return True
                await asyncio.sleep(0.01)
            return False

        assert await admitted()
    finally:
        for w in workers:
            await w.close()
        await server.close()


def test_sum_metrics_adds_series_and_keeps_one_family_each() -> None:
    one = (
        "# HELP aigw_requests_total Requests.\n# TYPE aigw_requests_total counter\n"
        'aigw_requests_total{api="a",consumer="c",status="200"} 3\n'
        "# HELP aigw_config_revision Rev.\n# TYPE aigw_config_revision gauge\naigw_config_revision 7\n"
        "# HELP aigw_limits_shared S.\n# TYPE aigw_limits_shared gauge\naigw_limits_shared 1\n"
    )
    two = (
        "# HELP aigw_requests_total Requests.\n# TYPE aigw_requests_total counter\n"
        'aigw_requests_total{api="a",consumer="c",status="200"} 2\n'
        'aigw_requests_total{api="b",consumer="c",status="429"} 1\n'
        "# HELP aigw_config_revision Rev.\n# TYPE aigw_config_revision gauge\naigw_config_revision 8\n"
        "# HELP aigw_limits_shared S.\n# TYPE aigw_limits_shared gauge\naigw_limits_shared 0\n"
    )
    out = sum_metrics([one, two]).splitlines()
    assert out == [
        "# HELP aigw_requests_total Requests.",
        "# TYPE aigw_requests_total counter",
        'aigw_requests_total{api="a",consumer="c",status="200"} 5',
        'aigw_requests_total{api="b",consumer="c",status="429"} 1',
        "# HELP aigw_config_revision Rev.",
        "# TYPE aigw_config_revision gauge",
        "aigw_config_revision 8",
        "# HELP aigw_limits_shared S.",
        "# TYPE aigw_limits_shared gauge",
        "aigw_limits_shared 0",
    ]
    assert sum_metrics(["x_sum 0.250000\n", "x_sum 0.5\n"]).strip() == "x_sum 0.750000"


async def test_a_quota_the_supervisor_has_not_loaded_is_loaded_before_the_check(rundir: Path) -> None:
    """A worker's snapshot may bring a quota before the supervisor's reload: the records
    still count (3 of 4 used: one more admitted of a burst of five)."""
    loads: list[str] = []

    async def from_records(consumer: str, unit: str, since: float, until: float) -> float:
        loads.append(consumer)
        await asyncio.sleep(0.01)
        return 3.0

    path = str(rundir / "limits.sock")
    server = LimitsServer(MemoryLimiter(loader=from_records))
    await server.start(path)
    worker = WorkerLimiter(path)
    await worker.connect()
    try:
        snap = snapshot(rpm=[0], quota=4, unit="requests", period="month")
        pending = [worker.check(ctx_for(snap)) for _ in range(5)]
        decisions = [await d for d in pending]  # type: ignore[misc]
        assert [d.allowed for d in decisions].count(True) == 1
        assert loads and set(loads) == {"c"}
    finally:
        await worker.close()
        await server.close()
