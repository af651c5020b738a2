"""``aigw serve --workers 2``: one supervisor, two data-plane processes on one port.

Limits are exact across the workers with nothing installed (the supervisor holds the
counts); the admin endpoints describe the whole instance; a killed worker is replaced;
SIGTERM drains every worker with every record written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess, record_for, wait_for
from mock_vendor import MockVendor

from store.db import open_store
from tui.cli import main as aigw_main

MSG = [{"role": "user", "content": "hi"}]
RPM = 6
QUOTA = 5


def workers_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    return (
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\n\n'
        '[[model_apis]]\nname = "lim"\nbase_path = "/lim"\nservices = ["main"]\n\n'
        f'[[consumers]]\nname = "burst"\napi_keys = ["{keys["burst"]}"]\n\n'
        f'[[consumers]]\nname = "rq"\napi_keys = ["{keys["rq"]}"]\n'
        f'quota = {QUOTA}\nquota_unit = "requests"\nquota_period = "month"\n\n'
        f'[[consumers]]\nname = "free"\napi_keys = ["{keys["free"]}"]\n\n'
        '[[consumer_groups]]\nname = "g-burst"\nconsumers = ["burst"]\nmodel_apis = ["lim"]\n'
        f"requests_per_minute = {RPM}\n\n"
        '[[consumer_groups]]\nname = "g-rest"\nconsumers = ["rq", "free"]\nmodel_apis = ["lim"]\n'
    )


@dataclass
class Inst:
    db: Path
    keys: dict[str, str]
    proc: GatewayProcess

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.proc.token}"}

    def health(self) -> dict[str, Any]:
        return httpx.get(f"{self.proc.admin_url}/healthz", timeout=10).json()  # type: ignore[no-any-return]

    def chat(self, consumer: str, **headers: str) -> httpx.Response:
        return httpx.post(
            f"{self.proc.url}/lim/v1/chat/completions",
            json={"messages": MSG},
            timeout=30,
            headers={"Authorization": f"Bearer {self.keys[consumer]}", **headers},
        )

    async def burst(self, consumer: str, n: int) -> list[httpx.Response]:
        """``n`` concurrent requests, each on its own connection (spread by the kernel)."""

        async def one() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as c:
                return await c.post(
                    f"{self.proc.url}/lim/v1/chat/completions",
                    json={"messages": MSG},
                    headers={"Authorization": f"Bearer {self.keys[consumer]}"},
                )

        return await asyncio.gather(*(one() for _ in range(n)))


@pytest.fixture(scope="module")
def inst(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inst]:
    tmp = tmp_path_factory.mktemp("workers")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in ("burst", "rq", "free")}
    cfg = tmp / "workers.toml"
    cfg.write_text(workers_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, args=["--workers", "2"])
    proc.start(timeout=60)
    try:
        yield Inst(db, keys, proc)
    finally:
        proc.stop(timeout=60)


def test_healthz_lists_each_worker(inst: Inst) -> None:
    h = inst.health()
    assert h["pid"] == inst.proc.proc.pid  # type: ignore[union-attr]
    assert [w["index"] for w in h["workers"]] == [0, 1]
    assert all(w["state"] == "running" and w["pid"] != h["pid"] for w in h["workers"])
    assert h["limits"] == {"backend": "supervisor", "shared": True}
    assert h["status"] == "ok"


async def test_rpm_burst_is_exact_across_workers(inst: Inst, vendor: MockVendor) -> None:
    vendor.reset()
    before = {w["index"]: w["requests_total"] for w in inst.health()["workers"]}
    answers = await inst.burst("burst", 3 * RPM)
    assert sorted(r.status_code for r in answers) == [200] * RPM + [429] * (2 * RPM)
    assert len(vendor.requests) == RPM
    after = {w["index"]: w["requests_total"] for w in inst.health()["workers"]}
    assert all(after[i] > before[i] for i in after), f"one worker took every connection: {before} → {after}"


async def test_requests_quota_is_exact_across_workers(inst: Inst) -> None:
    answers = await inst.burst("rq", 3 * QUOTA)
    assert sorted(r.status_code for r in answers) == [200] * QUOTA + [429] * (2 * QUOTA)
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} == {"insufficient_quota"}
    limits = httpx.get(f"{inst.proc.admin_url}/limits", headers=inst.auth(), timeout=10).json()
    assert limits["consumers"]["rq"]["quota"]["used"] == QUOTA


def test_metrics_are_one_set_of_series_summed_over_workers(inst: Inst) -> None:
    for _ in range(4):
        assert inst.chat("free").status_code == 200
    text = httpx.get(f"{inst.proc.admin_url}/metrics", timeout=10).text
    lines = text.splitlines()
    free = [line for line in lines if line.startswith('aigw_requests_total{api="lim",consumer="free",status="200"}')]
    assert len(free) == 1
    assert int(free[0].rsplit(" ", 1)[1]) >= 4
    assert lines.count("# TYPE aigw_requests_total counter") == 1
    health = inst.health()
    total = next(line for line in lines if line.startswith("aigw_connections_refused_total "))
    assert total == "aigw_connections_refused_total 0"
    assert sum(w["requests_total"] for w in health["workers"]) == health["requests_total"]


def test_events_carry_every_workers_records_and_reload_reaches_each(inst: Inst) -> None:
    ids = [f"ev-{uuid.uuid4().hex}" for _ in range(16)]
    seen: list[str] = []
    subscribed = threading.Event()
    done = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"{inst.proc.admin_url}/events", headers=inst.auth(), timeout=60) as r:
            for line in r.iter_lines():
                subscribed.set()
                seen.append(line)
                if all(any(i in s for s in seen) for i in ids) or done.is_set():
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert subscribed.wait(20)
    # Each on a new connection: the kernel spreads them over both workers.
    before = {w["index"]: w["requests_total"] for w in inst.health()["workers"]}
    for i in ids:
        assert inst.chat("free", **{"x-request-id": i}).status_code == 200
    after = {w["index"]: w["requests_total"] for w in inst.health()["workers"]}
    served_by = {i for i in after if after[i] > before[i]}
    reader.join(20)
    done.set()
    assert all(any(i in s for s in seen) for i in ids), "a worker's records are missing from /events"
    assert served_by == {0, 1}

    r = httpx.post(f"{inst.proc.admin_url}/reload", headers=inst.auth(), timeout=20)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert httpx.post(f"{inst.proc.admin_url}/reload", timeout=10).status_code == 401


def test_a_killed_worker_is_replaced(inst: Inst) -> None:
    first = inst.health()["workers"][0]
    os.kill(first["pid"], signal.SIGKILL)

    def replaced() -> bool:
        w = inst.health()["workers"][0]
        return w["pid"] != first["pid"] and w["state"] == "running" and w["restarts"] == 1

    wait_for(replaced, 30, interval=0.1, what="worker 0 replaced")
    for _ in range(4):  # both serve again
        assert inst.chat("free").status_code == 200
    assert "worker 0 (pid" in (inst.db.parent / "gateway.log").read_text()


def test_sigterm_drains_every_worker(inst: Inst, vendor: MockVendor) -> None:
    """Last: slow requests on both workers, SIGTERM; every one answered and recorded, exit 0."""
    vendor.reset()
    n = 6
    vendor.behave(delay=1.5)
    ids = [f"drain-{uuid.uuid4().hex}" for _ in range(n)]
    out: dict[str, httpx.Response] = {}

    def run(i: str) -> None:
        out[i] = inst.chat("free", **{"x-request-id": i})

    threads = [threading.Thread(target=run, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    vendor.wait_for(n, timeout=20)
    proc = inst.proc.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(40)
    assert [out[i].status_code for i in ids] == [200] * n
    assert proc.wait(60) == 0
    st = open_store(str(inst.db))
    try:
        for i in ids:
            assert record_for(st, i, timeout=5)["status"] == 200
    finally:
        st.dispose()
    vendor.reset()
