"""The admin listener and the gateway's life: reload, drain on SIGTERM, secrets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from gateway_config import ALL_SECRETS, Gw, new_key
from helpers import free_port, record_for, wait_for
from mock_vendor import Behaviour, MockVendor

from proxy.serve import run_server
from store import repo
from store.admin_token import GATEWAY_LOG
from store.db import Store
from store.usage import RECORD_FIELDS
from tui.cli import main as aigw_main

CHAT = "/hunyuan/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def chat(gw: Gw, *, key: str | None = None, base: str = CHAT, **body: Any) -> httpx.Response:
    return httpx.post(
        gw.url + base,
        json={"messages": MSG, **body},
        timeout=30,
        headers={"Authorization": f"Bearer {key or gw.app_key}"},
    )


def auth(gw: Gw) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.proc.token}"}


def test_healthz_shape(gw: Gw, records_store: Store) -> None:
    h = httpx.get(gw.proc.admin_url + "/healthz", timeout=5).json()
    assert set(h) == {
        "status",
        "version",
        "revision",
        "listen",
        "admin_listen",
        "public_url",
        "pid",
        "started_at",
        "requests_total",
        "in_flight",
        "db",
        "services",
        "keys",
        "limits",
        "cache",
    }
    assert h["services"]["main"]["state"] in ("unknown", "healthy") and h["keys"]["k1"]["max_concurrency"] == 0
    assert h["limits"] == {"backend": "memory", "shared": False}
    assert h["cache"] == {"backend": "memory", "shared": False, "max_bytes": 64 * 1024 * 1024}
    with records_store.session() as s:
        assert h["revision"] == repo.get_revision(s)
    assert h["status"] == "ok" and h["pid"] == gw.proc.proc.pid  # type: ignore[union-attr]
    assert h["listen"] == f"127.0.0.1:{gw.proc.port}" and h["public_url"] == gw.url
    assert h["admin_listen"] == f"127.0.0.1:{gw.proc.admin_port}"
    assert h["db"] == str(gw.db) and time.time() - 600 < h["started_at"] <= time.time()
    assert isinstance(h["requests_total"], int) and h["in_flight"] == 0


def test_a_gateway_without_redis_never_loads_the_redis_client(gw: Gw) -> None:
    """The client and what it pulls in (hiredis, opentelemetry) are ~6 MB of every idle
    process: only a gateway that names a Redis pays for them."""
    assert chat(gw).status_code == 200
    pid = gw.proc.proc.pid  # type: ignore[union-attr]
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "hiredis" not in maps
    assert "/redis/" not in maps  # no compiled part of the client mapped either


def test_metrics_text(gw: Gw) -> None:
    assert chat(gw).status_code == 200
    assert chat(gw, base="/down/v1/chat/completions").status_code == 502
    text = httpx.get(gw.proc.admin_url + "/metrics", timeout=5).text
    assert 'aigw_requests_total{api="hunyuan-api",consumer="app",status="200"}' in text
    assert 'aigw_requests_total{api="downapi",consumer="app",status="502"}' in text
    assert 'aigw_request_duration_seconds_bucket{api="hunyuan-api",le="+Inf"}' in text
    assert 'aigw_tokens_total{api="hunyuan-api",consumer="app",type="prompt"}' in text
    assert 'aigw_upstream_errors_total{service="down",reason="connect"}' in text
    assert "aigw_config_revision " in text and "aigw_records_dropped_total 0" in text
    assert "aigw_record_write_errors_total 0" in text and "aigw_records_pending " in text
    for secret in (*ALL_SECRETS, gw.app_key):
        assert secret not in text


def test_events_need_token_and_deliver_records(gw: Gw) -> None:
    url = gw.proc.admin_url + "/events"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, timeout=5, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r_id = "evt-" + uuid.uuid4().hex
    with httpx.stream("GET", url, headers=auth(gw), timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.iter_lines()
        assert next(lines).startswith(":")  # subscribed
        httpx.post(
            gw.url + CHAT,
            json={"messages": MSG},
            timeout=30,
            headers={"Authorization": f"Bearer {gw.app_key}", "x-request-id": r_id},
        )
        for line in lines:
            if line.startswith("data: "):
                event = orjson.loads(line[6:])
                if event["request_id"] == r_id:
                    break
    assert set(event) == {*RECORD_FIELDS, "time"}
    assert event["status"] == 200 and event["consumer"] == "app" and event["time"].endswith("Z")


def test_reload_needs_token(gw: Gw, records_store: Store) -> None:
    url = gw.proc.admin_url + "/reload"
    assert httpx.post(url, timeout=5).status_code == 401
    r = httpx.post(url, headers=auth(gw), timeout=10)
    with records_store.session() as s:
        assert r.json() == {"status": "ok", "revision": repo.get_revision(s)}


def _import(gw: Gw, toml: str, tmp_path: Path) -> None:
    f = tmp_path / f"{uuid.uuid4().hex}.toml"
    f.write_text(toml)
    subprocess.run(
        [sys.executable, "-m", "tui.cli", "--db", str(gw.db), "import", str(f)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_hot_reload_new_consumer_within_2s(gw: Gw, tmp_path: Path) -> None:
    key = new_key("newbie")
    assert chat(gw, key=key).status_code == 401
    _import(
        gw,
        f'[[consumers]]\nname = "newbie"\napi_keys = ["{key}"]\n\n'
        '[[consumer_groups]]\nname = "newbies"\nconsumers = ["newbie"]\n'
        'model_apis = ["hunyuan-api"]\n',
        tmp_path,
    )
    wait_for(lambda: chat(gw, key=key).status_code == 200, 2.0, 0.05, what="the consumer added by aigw import")


def test_stream_in_flight_survives_reload(gw: Gw, vendor: MockVendor, tmp_path: Path) -> None:
    vendor.queue(Behaviour(chunks=6, chunk_delay=0.3))
    out: dict[str, Any] = {}

    def run() -> None:
        out["r"] = chat(gw, stream=True)

    t = threading.Thread(target=run)
    t.start()
    vendor.wait_for(1, timeout=10)
    f = tmp_path / "during.toml"
    f.write_text('[[consumers]]\nname = "during-stream"\n')
    assert aigw_main(["--db", str(gw.db), "import", str(f)]) == 0
    assert httpx.post(gw.proc.admin_url + "/reload", headers=auth(gw), timeout=10).status_code == 200
    t.join(30)
    r = out["r"]
    assert r.status_code == 200 and "tok5" in r.text and r.text.rstrip().endswith("data: [DONE]")


def test_requests_never_wait_for_the_database(gw: Gw, records_store: Store) -> None:
    """With the store locked, requests are still served; their records are written later."""
    ids = []
    with records_store.engine.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        try:
            for _ in range(5):
                r_id = "locked-" + uuid.uuid4().hex
                t0 = time.monotonic()
                r = httpx.post(
                    gw.url + CHAT,
                    json={"messages": MSG},
                    timeout=30,
                    headers={"Authorization": f"Bearer {gw.app_key}", "x-request-id": r_id},
                )
                assert r.status_code == 200 and time.monotonic() - t0 < 3
                ids.append(r_id)
            time.sleep(0.6)  # a batch write is attempted meanwhile (and waits or fails)
        finally:
            conn.exec_driver_sql("ROLLBACK")
    for r_id in ids:
        assert record_for(records_store, r_id, timeout=20)["status"] == 200


def test_no_secret_in_gateway_log(gw: Gw) -> None:
    chat(gw, base="/missing/v1/chat/completions")
    assert (gw.db.parent / GATEWAY_LOG).stat().st_mode & 0o777 == 0o600
    log = (gw.db.parent / GATEWAY_LOG).read_text()
    assert "serving" in log and "AIGW_TEST_MISSING_KEY" in log  # the operator learns what to fix
    for secret in (*ALL_SECRETS, gw.app_key, gw.off_key, gw.lonely_key, gw.proc.token):
        assert secret not in log
        assert secret not in gw.proc.output()


def test_busy_port_exits_2(gw: Gw) -> None:
    busy = subprocess.run(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "--db",
            str(gw.db),
            "serve",
            "--listen",
            f"127.0.0.1:{gw.proc.port}",
            "--admin-listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert busy.returncode == 2
    assert busy.stderr.strip().count("\n") == 0 and str(gw.proc.port) in busy.stderr


def test_unusable_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_server(str(tmp_path), listen=None, admin_listen=None) == 2  # a folder, not a file
    err = capsys.readouterr().err
    assert err.startswith("aigw: error: ") and err.count("\n") == 1 and "directory" in err


def test_sigterm_drains_in_flight_and_flushes(gw: Gw, vendor: MockVendor, records_store: Store) -> None:
    """Last in the module: SIGTERM mid-request; the request still succeeds, records are stored."""
    vendor.queue(Behaviour(delay=1.5))
    r_id = "drain-" + uuid.uuid4().hex
    out: dict[str, Any] = {}

    def run() -> None:
        out["r"] = httpx.post(
            gw.url + CHAT,
            json={"messages": MSG},
            timeout=30,
            headers={"Authorization": f"Bearer {gw.app_key}", "x-request-id": r_id},
        )

    subscribed = threading.Event()

    def follow() -> None:  # an /events reader must not hold the shutdown up
        with httpx.stream("GET", gw.proc.admin_url + "/events", headers=auth(gw), timeout=60) as r:
            lines = []
            for line in r.iter_lines():
                subscribed.set()
                lines.append(line)
            out["events"] = [line for line in lines if line.startswith("data: ")]

    reader = threading.Thread(target=follow)
    reader.start()
    assert subscribed.wait(20)
    t = threading.Thread(target=run)
    t.start()
    vendor.wait_for(1, timeout=10)
    proc = gw.proc.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert out["r"].status_code == 200
    assert proc.wait(30) == 0
    reader.join(10)
    assert not reader.is_alive(), "/events stream not ended by the shutdown"
    assert any(r_id in line for line in out["events"])
    rec = record_for(records_store, r_id, timeout=2)
    assert rec["status"] == 200


def _can_compile() -> bool:
    """What the install needs to compile the request path: a C compiler and mypyc."""
    import importlib.util
    import shlex
    import shutil
    import sysconfig

    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")[:1]
    return bool(cc and shutil.which(cc[0])) and importlib.util.find_spec("mypyc") is not None


def test_the_log_says_the_request_path_runs_compiled(gw: Gw) -> None:
    """Where the install could compile, the gateway runs the compiled modules, built from
    exactly these sources; the start-up line says so, or why not (and how to rebuild)."""
    line = next(x for x in (gw.db.parent / GATEWAY_LOG).read_text().splitlines() if " serving " in x)
    assert "request path compiled with mypyc" in line or "request path pure Python (" in line
    if _can_compile() and not os.environ.get("AIGW_PURE_PYTHON"):
        assert "request path compiled with mypyc" in line, line
