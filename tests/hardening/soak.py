"""Soak: mixed streaming and plain load on a real ``aigw serve`` with config changes every few seconds.

    .venv/bin/python tests/hardening/soak.py                  # 10 minutes (the README's figures)
    .venv/bin/python tests/hardening/soak.py --duration 30    # a quick look

Runs the recording mock vendor and a gateway on 127.0.0.1 in a temp folder, ``--workers``
client threads sending back-to-back requests (every other one a stream) over four APIs,
and an ``aigw import`` of a changed configuration every ``--change-every`` seconds
(consumers added and removed, a service's description and a group's limit changed),
checking each change goes live. It samples the gateway's RSS and open file descriptors,
then stops the gateway with SIGTERM and counts the records. Exit 0 only when there were
zero errors, zero records lost, no fd growth and RSS flat (see ``verdict``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent.parent)]

import httpx  # noqa: E402
import orjson  # noqa: E402
from fault_vendor import FaultVendor  # noqa: E402
from hconfig import ENV_VALUE, Keys, hardening_toml  # noqa: E402
from helpers import GatewayProcess, free_port  # noqa: E402
from hhelpers import CHAT, MSG, fd_count, raise_fd_limit, rss_kib  # noqa: E402
from mock_vendor import MockVendor  # noqa: E402

from store import usage  # noqa: E402
from store.db import open_store  # noqa: E402
from tui.cli import main as aigw_main  # noqa: E402

#: (path, is chat) the load spreads over.
TARGETS = [("/alpha" + CHAT, True), ("/hunyuan" + CHAT, True), ("/poll" + CHAT, True), ("/emb/v1/embeddings", False)]


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    ok: int = 0
    streams: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)

    def done(self, rid: str, seconds: float, stream: bool) -> None:
        with self.lock:
            self.ok += 1
            self.streams += stream
            self.answered.add(rid)
            if len(self.latencies) < 2_000_000:
                self.latencies.append(seconds)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def worker(i: int, gw: GatewayProcess, key: str, stop: threading.Event, stats: Stats) -> None:
    rnd = random.Random(i)
    n = 0
    with httpx.Client(timeout=60) as c:
        while not stop.is_set():
            path, chat = rnd.choice(TARGETS)
            stream = chat and n % 2 == 0
            rid = f"soak-{i}-{n}"
            n += 1
            body: dict[str, Any] = {"messages": MSG, "stream": stream} if chat else {"input": ["a", "b"]}
            headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
            t0 = time.perf_counter()
            try:
                if stream:
                    with c.stream("POST", gw.url + path, json=body, headers=headers) as r:
                        data = r.read()
                    good = (
                        r.status_code == 200 and data.rstrip().endswith(b"data: [DONE]") and b"event: error" not in data
                    )
                else:
                    r = c.post(gw.url + path, json=body, headers=headers)
                    data = r.content
                    good = r.status_code == 200
            except httpx.HTTPError as exc:
                stats.error(f"{rid} {path}: {exc!r}")
                continue
            if good:
                stats.done(rid, time.perf_counter() - t0, stream)
            else:
                stats.error(f"{rid} {path}: {r.status_code} {data[:200]!r}")


def changer(
    db: Path, base_toml: str, every: float, gw: GatewayProcess, stop: threading.Event, log: list[dict[str, Any]]
) -> None:
    """``aigw import`` a changed configuration every ``every`` s; check it is live within 2 s."""
    n = 0
    cfg = db.parent.parent / "change.toml"
    while not stop.wait(every):
        n += 1
        extra = [
            f'\n[[consumers]]\nname = "soak-extra-{j}"\napi_keys = ["sk-aigw-soak-{j}-{secrets.token_urlsafe(24)}"]\n'
            for j in range(n % 4)
        ]
        toml = base_toml.replace(
            'default_model = "alpha-model"', f'default_model = "alpha-model"\ndescription = "change {n}"'
        ).replace('name = "g-alpha"', f'name = "g-alpha"\nrequests_per_minute = {100000 + n}') + "".join(extra)
        cfg.write_text(toml)
        before = _revision(gw)
        t0 = time.monotonic()
        # ``aigw import --prune``, in-process (a new interpreter per change would cost seconds of CPU)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = aigw_main(["--db", str(db), "import", "--prune", str(cfg)])
        imported = time.monotonic()
        live = None
        if rc == 0:
            while time.monotonic() - imported < 10:
                if _revision(gw) > before:
                    live = time.monotonic() - imported
                    break
                time.sleep(0.05)
        log.append(
            {
                "n": n,
                "rc": rc,
                "import_s": round(imported - t0, 2),
                "live_after_s": None if live is None else round(live, 2),
                "stderr": err.getvalue().strip()[-300:],
            }
        )


def _revision(gw: GatewayProcess) -> int:
    try:
        return int(httpx.get(gw.admin_url + "/healthz", timeout=5).json()["revision"])
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


def run(duration: float, workers: int, change_every: float, sample_every: float) -> dict[str, Any]:
    raise_fd_limit()
    tmp = Path(tempfile.mkdtemp(prefix="aigw-soak-"))
    db = tmp / "data" / "aigw.db"
    vendor = MockVendor().start()
    vendor.behave(chunks=8, chunk_delay=0.002)
    fault = FaultVendor().start()
    keys = Keys()
    base = hardening_toml(vendor, fault.url, free_port(), keys)
    (tmp / "aigw.toml").write_text(base)
    with contextlib.redirect_stdout(io.StringIO()):
        assert aigw_main(["--db", str(db), "import", str(tmp / "aigw.toml")]) == 0
    gw = GatewayProcess(db, env={"AIGW_TEST_VENDOR_KEY": ENV_VALUE}).start()
    assert gw.proc is not None
    pid = gw.proc.pid
    stats = Stats()
    stop = threading.Event()
    changes: list[dict[str, Any]] = []
    samples: list[dict[str, float]] = []
    threads = [
        threading.Thread(target=worker, args=(i, gw, keys.app, stop, stats), daemon=True) for i in range(workers)
    ]
    threads.append(threading.Thread(target=changer, args=(db, base, change_every, gw, stop, changes), daemon=True))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        while (elapsed := time.monotonic() - t0) < duration:
            samples.append(
                {
                    "t": round(elapsed, 1),
                    "rss_kib": rss_kib(pid),
                    "fds": fd_count(pid),
                    "ok": stats.ok,
                    "errors": len(stats.errors),
                }
            )
            print(
                f"[soak] {elapsed:6.0f}s ok={stats.ok} streams={stats.streams} errors={len(stats.errors)} "
                f"rss={samples[-1]['rss_kib'] / 1024:.1f}MiB fds={samples[-1]['fds']} changes={len(changes)}",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(min(sample_every, max(0.1, duration - elapsed)))
        samples.append(
            {
                "t": round(time.monotonic() - t0, 1),
                "rss_kib": rss_kib(pid),
                "fds": fd_count(pid),
                "ok": stats.ok,
                "errors": len(stats.errors),
            }
        )
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    wall = time.monotonic() - t0
    rc = gw.stop(signal.SIGTERM, timeout=60)
    vendor.stop()
    fault.stop()
    st = open_store(str(db))
    with st.session() as s:
        stored = {r.request_id for r in usage.recent(s, 10_000_000) if r.request_id.startswith("soak-")}
    st.dispose()
    lost = len(stats.answered - stored)
    lat = sorted(stats.latencies) or [0.0]
    warm = [s for s in samples if s["t"] >= min(60.0, duration * 0.2)] or samples
    rss_warm, rss_end = warm[0]["rss_kib"], samples[-1]["rss_kib"]
    fds_warm, fds_end = warm[0]["fds"], samples[-1]["fds"]
    bad_changes = [c for c in changes if c["rc"] != 0 or c["live_after_s"] is None or c["live_after_s"] > 2.0]
    result = {
        "duration_s": round(wall, 1),
        "workers": workers,
        "requests_ok": stats.ok,
        "streams_ok": stats.streams,
        "requests_per_s": round(stats.ok / wall, 1),
        "errors": len(stats.errors),
        "first_errors": stats.errors[:10],
        "latency_p50_ms": round(statistics.median(lat) * 1000, 1),
        "latency_p99_ms": round(lat[int(len(lat) * 0.99) - 1 if len(lat) > 1 else 0] * 1000, 1),
        "config_changes": len(changes),
        "config_changes_late_or_failed": bad_changes[:5],
        "config_change_every_s": change_every,
        "config_live_max_s": max((c["live_after_s"] or 0 for c in changes), default=None),
        "records_answered": len(stats.answered),
        "records_stored": len(stored & stats.answered),
        "records_lost": lost,
        "sigterm_exit": rc,
        "rss_mib": {
            "start": round(samples[0]["rss_kib"] / 1024, 1),
            "after_warmup": round(rss_warm / 1024, 1),
            "end": round(rss_end / 1024, 1),
            "max": round(max(s["rss_kib"] for s in samples) / 1024, 1),
        },
        "fds": {
            "start": samples[0]["fds"],
            "after_warmup": fds_warm,
            "end": fds_end,
            "max": max(s["fds"] for s in samples),
        },
        "samples": samples,
        "data_dir": str(db.parent),
    }
    rss_growth = (rss_end - rss_warm) / 1024
    result["verdict"] = {
        "zero_errors": not stats.errors,
        "zero_records_lost": lost == 0,
        "config_changes_live_within_2s": not bad_changes and bool(changes),
        "clean_sigterm": rc == 0,
        # flat: after warm-up, RSS grows less than 10 % or 16 MiB, whichever is more
        "rss_flat": rss_growth <= max(16.0, rss_warm / 1024 * 0.10),
        "fds_not_growing": fds_end <= fds_warm + 10,
    }
    result["passed"] = all(result["verdict"].values())
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    p.add_argument("--workers", type=int, default=8, help="client threads (default 8)")
    p.add_argument("--change-every", type=float, default=3.0, help="seconds between config changes")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS/fd samples")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.add_argument("--keep", action="store_true", help="keep the temp data folder even when it passed")
    a = p.parse_args(argv)
    result = run(a.duration, a.workers, a.change_every, a.sample_every)
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if a.json:
        a.json.write_text(text)
    short = {k: v for k, v in result.items() if k != "samples"}
    print(orjson.dumps(short, option=orjson.OPT_INDENT_2).decode())
    if result["passed"] and not a.keep:
        shutil.rmtree(Path(result["data_dir"]).parent, ignore_errors=True)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
