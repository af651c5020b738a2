"""Faults at home: a locked store, a read-only or full disk, ``kill -9`` and SIGTERM under load.

The data plane must keep serving while records cannot be written (they wait in bounded
memory and are retried), the operator must be told (``gateway.log`` and metrics),
``kill -9`` may lose at most the last second of records and SIGTERM none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import figures
import httpx
import pytest
from fault_vendor import FaultVendor
from helpers import wait_for
from hhelpers import CHAT, MSG, HGw, records_by_id, start_gateway
from mock_vendor import MockVendor

from store import usage
from store.admin_token import GATEWAY_LOG
from store.db import Store, open_store


@dataclass
class Load:
    """Client threads sending requests back to back; each answer noted with its wall time."""

    gw: HGw
    threads: int = 4
    prefix: str = field(default_factory=lambda: f"load-{uuid.uuid4().hex[:8]}-")
    answered: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    #: Stop counting failures from this wall time on (the gateway is being stopped).
    stopping_at: float | None = None

    def start(self) -> Load:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def _run(self, i: int) -> None:
        n = 0
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                rid = f"{self.prefix}{i}-{n}"
                n += 1
                stream = n % 3 == 0
                try:
                    if stream:
                        with c.stream(
                            "POST",
                            self.gw.url + "/alpha" + CHAT,
                            json={"messages": MSG, "stream": True},
                            headers={**self.gw.auth(), "x-request-id": rid},
                        ) as r:
                            body = r.read()
                        ok = r.status_code == 200 and b"[DONE]" in body
                    else:
                        r = c.post(
                            self.gw.url + "/alpha" + CHAT,
                            json={"messages": MSG},
                            headers={**self.gw.auth(), "x-request-id": rid},
                        )
                        ok = r.status_code == 200
                    if ok:
                        self.answered[rid] = time.time()
                    elif self.stopping_at is None:
                        self.failures.append(f"{rid}: {r.status_code}")
                except httpx.HTTPError as exc:
                    if self.stopping_at is None:
                        self.failures.append(f"{rid}: {exc!r}")
                    if self.stopping_at is not None:
                        return

    def finish(self) -> None:
        self.stop.set()
        for t in self._workers:
            t.join(30)


@pytest.fixture
def gw_factory(vendor: MockVendor, fault: FaultVendor, tmp_path: Path) -> Iterator[list[HGw]]:
    made: list[HGw] = []
    yield made
    for gw in made:
        gw.proc.stop(signal.SIGKILL)


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def _metric(gw: HGw, name: str) -> float:
    text = httpx.get(gw.proc.admin_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} missing")


def _log(gw: HGw) -> str:
    try:
        return (gw.data_dir / GATEWAY_LOG).read_text(errors="replace")
    except OSError:
        return ""


# ------------------------------------------------------------------ locked store


def test_store_locked_by_a_long_write(
    vendor: MockVendor, fault: FaultVendor, tmp_path: Path, gw_factory: list[HGw]
) -> None:
    """A console holding a write transaction for seconds: traffic is served all along, the
    records wait and land afterwards. (Past the 10 s busy timeout the batch write fails and is
    retried — the read-only and disk-full tests below take that path.)"""
    gw = start_gateway(tmp_path, vendor, fault)
    gw_factory.append(gw)
    st = open_store(str(gw.db))
    try:
        conn = sqlite3.connect(str(gw.db), timeout=1, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta(key, value) VALUES ('hardening-lock', 'x')")
        load = Load(gw, threads=3).start()
        try:
            held = 4.0
            time.sleep(held)  # the lock IS the test: a write transaction held this long
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        time.sleep(0.5)
        load.finish()
        assert not load.failures, load.failures[:5]
        assert len(load.answered) >= 20, len(load.answered)
        wait_for(
            lambda: len(records_by_id(st, load.prefix)) >= len(load.answered),
            30,
            0.3,
            what="the records written while the store was locked",
        )
        figures.put("home.locked_store.held_s", held)
        figures.add("home.locked_store.requests_served", len(load.answered))
        figures.add("home.records_lost", len(set(load.answered) - set(records_by_id(st, load.prefix))))
    finally:
        st.dispose()


# ------------------------------------------------------------------ disk trouble


def _readonly(paths: list[Path], on: bool) -> None:
    for p in paths:
        if p.exists():
            subprocess.run(["chattr", "+i" if on else "-i", str(p)], check=True, capture_output=True)


def _chattr_works(tmp: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    probe = tmp / "chattr-probe"
    probe.write_text("x")
    try:
        subprocess.run(["chattr", "+i", str(probe)], check=True, capture_output=True)
        subprocess.run(["chattr", "-i", str(probe)], check=True, capture_output=True)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[bool]:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True
    )
    try:
        yield r.returncode == 0
    finally:
        if r.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _records_unwritable_then_back(
    gw: HGw, st: Store, break_it: Callable[[], object], heal: Callable[[], object], what: str
) -> None:
    """Shared body: break the store, serve traffic, check the operator is told, heal, records land."""
    before = set(records_by_id(st))
    break_it()
    healed = False
    try:
        load = Load(gw, threads=3).start()
        wait_for(lambda: len(load.answered) >= 30, 30, 0.1, what="requests served while records fail")
        # The operator is told: a metric now, and gateway.log (when the log itself can be written).
        wait_for(
            lambda: _metric(gw, "aigw_record_write_errors_total") >= 1,
            10,
            0.2,
            what="aigw_record_write_errors_total to count the failed writes",
        )
        assert _metric(gw, "aigw_records_pending") > 0
        load.finish()
        assert not load.failures, load.failures[:5]
        heal()
        healed = True
        wait_for(
            lambda: set(load.answered) <= set(records_by_id(st, load.prefix)),
            30,
            0.3,
            what=f"the records kept while {what} to be written",
        )
        wait_for(lambda: _metric(gw, "aigw_records_pending") == 0, 10, 0.2, what="pending records to drain")
        assert _metric(gw, "aigw_records_dropped_total") == 0
        figures.add(f"home.{what}.requests_served", len(load.answered))
        figures.add("home.records_lost", len(set(load.answered) - set(records_by_id(st, load.prefix))))
    finally:
        if not healed:
            heal()
    assert before <= set(records_by_id(st))


def test_database_read_only_while_records_are_written(
    vendor: MockVendor, fault: FaultVendor, tmp_path: Path, gw_factory: list[HGw]
) -> None:
    if not _chattr_works(tmp_path):
        pytest.skip("chattr +i is not available here (needs root and a filesystem that supports it)")
    gw = start_gateway(tmp_path, vendor, fault)
    gw_factory.append(gw)
    st = open_store(str(gw.db))
    files = [gw.db, gw.db.with_name(gw.db.name + "-wal")]  # not -shm: it is mmapped (SIGBUS)
    try:
        _records_unwritable_then_back(
            gw, st, lambda: _readonly(files, True), lambda: _readonly(files, False), "read_only_db"
        )
        log = _log(gw)
        assert "cannot write request records" in log and "request records written again" in log, log[-2000:]
    finally:
        _readonly(files, False)
        st.dispose()


def test_disk_full_while_records_are_written(
    vendor: MockVendor, fault: FaultVendor, tmp_path: Path, gw_factory: list[HGw]
) -> None:
    data = tmp_path / "data"
    with _tmpfs(data, "24m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
        gw = start_gateway(tmp_path, vendor, fault, db=data / "aigw.db")
        gw_factory.append(gw)
        st = open_store(str(gw.db))
        filler = data / "filler"

        def fill() -> None:
            with sqlite3.connect(str(gw.db)) as c:  # an empty WAL must grow to take new records
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                for size in (1 << 20, 4096, 512):  # down to the last byte the filesystem has
                    with contextlib.suppress(OSError):
                        while True:
                            os.write(fd, b"\0" * size)
            finally:
                os.close(fd)

        try:
            _records_unwritable_then_back(gw, st, fill, lambda: filler.unlink(missing_ok=True), "disk_full")
        finally:
            filler.unlink(missing_ok=True)
            gw.proc.stop()
            st.dispose()


# ------------------------------------------------------------------ process death


def test_kill_9_loses_at_most_the_last_second(
    vendor: MockVendor, fault: FaultVendor, tmp_path: Path, gw_factory: list[HGw]
) -> None:
    gw = start_gateway(tmp_path, vendor, fault)
    gw_factory.append(gw)
    st = open_store(str(gw.db))
    try:
        load = Load(gw, threads=4).start()
        wait_for(lambda: len(load.answered) >= 80, 60, 0.05, what="load before the kill")
        load.stopping_at = time.time()
        assert gw.proc.proc is not None
        killed_at = time.time()
        gw.proc.proc.send_signal(signal.SIGKILL)
        gw.proc.proc.wait(10)
        load.finish()
        answered = {rid: t for rid, t in load.answered.items() if t <= killed_at}
        stored = set(records_by_id(st, load.prefix))
        lost = [rid for rid in answered if rid not in stored]
        old_lost = [rid for rid in lost if answered[rid] < killed_at - 1.0]
        figures.add("home.kill9.requests_answered", len(answered))
        figures.add("home.kill9.records_lost_last_second", len(lost))
        assert not old_lost, f"{len(old_lost)} records of requests answered >1 s before kill -9 lost"
    finally:
        st.dispose()


def test_sigterm_under_load_loses_nothing(
    vendor: MockVendor, fault: FaultVendor, tmp_path: Path, gw_factory: list[HGw]
) -> None:
    gw = start_gateway(tmp_path, vendor, fault)
    gw_factory.append(gw)
    st = open_store(str(gw.db))
    vendor.behave(chunks=5, chunk_delay=0.05)  # streams in flight when the signal comes
    try:
        load = Load(gw, threads=4).start()
        wait_for(lambda: len(load.answered) >= 60, 60, 0.05, what="load before SIGTERM")
        load.stopping_at = time.time()
        assert gw.proc.proc is not None
        gw.proc.proc.send_signal(signal.SIGTERM)
        assert gw.proc.proc.wait(40) == 0
        load.finish()
        stored = records_by_id(st, load.prefix)
        lost = set(load.answered) - set(stored)
        figures.add("home.sigterm.requests_answered", len(load.answered))
        figures.add("home.records_lost", len(lost))
        assert not lost, f"{len(lost)} of {len(load.answered)} answered requests have no record after SIGTERM"
        assert all(stored[r]["status"] == 200 for r in load.answered)
    finally:
        st.dispose()


def test_record_buffer_is_bounded_and_retried(tmp_path: Path) -> None:
    """In-process: with the database unwritable, at most ``max_pending_bytes`` of records wait (the rest are
    counted as dropped); when it heals, the kept ones are written."""
    import asyncio

    from proxy.metrics import Metrics
    from proxy.recorder import Recorder, row_bytes

    if not _chattr_works(tmp_path):
        pytest.skip("chattr +i is not available here")
    st = open_store(str(tmp_path / "d" / "aigw.db"))
    files = [st.location.sqlite_path, Path(str(st.location.sqlite_path) + "-wal")]
    assert files[0] is not None

    def rec(i: int) -> tuple[object, ...]:
        return usage.record_row(
            {
                "ts": time.time(),
                "request_id": f"bounded-{i}",
                "method": "POST",
                "path": "/x",
                "consumer": "c",
                "api": "a",
                "service": "s",
                "model": "m",
                "key_name": "k",
                "status": 200,
                "latency_ms": 1.0,
                "ttfb_ms": 1.0,
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "total_tokens": 2,
                "cost": 0.0,
                "stream": False,
                "estimated": False,
                "error": "",
            }
        )

    async def run() -> tuple[int, int, int]:
        metrics = Metrics()
        r = Recorder(st, metrics, max_pending_bytes=100 * row_bytes(rec(100)), interval_s=0.05)
        r.start()
        _readonly(files, True)  # type: ignore[arg-type]
        try:
            for i in range(250):
                r.submit(rec(i))
                if i % 50 == 0:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            pending = len(r._pending)
        finally:
            _readonly(files, False)  # type: ignore[arg-type]
        await r.close()
        return pending, metrics.records_dropped, len(r._pending)

    try:
        pending, dropped, left = asyncio.run(run())
        assert pending <= 100 and dropped == 150 and left == 0, (pending, dropped, left)
        with st.session() as s:
            assert len([x for x in usage.recent(s, 1000) if x.request_id.startswith("bounded-")]) == 100
    finally:
        _readonly(files, False)  # type: ignore[arg-type]
        st.dispose()
