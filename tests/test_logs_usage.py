"""``aigw usage`` and ``aigw logs`` (with ``--follow``) against known traffic through a real gateway."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import GatewayProcess, record_for, wait_for
from mock_vendor import MockVendor
from usage_env import COMPLETION, MODEL, PROMPT, chat, configure, gateway_for, request_cost

from store import usage
from store.db import open_store
from tui.cli import main as aigw

N_APP, N_TEAM_STREAM = 3, 2


@dataclass
class Traffic:
    db: Path
    keys: dict[str, str]
    gw: GatewayProcess
    app_ids: list[str] = field(default_factory=list)
    team_ids: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def traffic(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    """3 plain requests by ``app``, 2 streamed by ``team``, all stored before the tests run."""
    vendor.reset()
    db = tmp_path_factory.mktemp("usage") / "data" / "aigw.db"
    keys = configure(db, vendor)
    gw = gateway_for(db).start()
    t = Traffic(db, keys, gw)
    try:
        for i in range(N_APP):
            rid = f"app-{i}-{uuid.uuid4().hex[:8]}"
            assert chat(gw.url, keys["app"], request_id=rid).status_code == 200
            t.app_ids.append(rid)
        for i in range(N_TEAM_STREAM):
            rid = f"team-{i}-{uuid.uuid4().hex[:8]}"
            r = chat(gw.url, keys["team"], stream=True, request_id=rid)
            assert r.status_code == 200 and "data: [DONE]" in r.text
            t.team_ids.append(rid)
        st = open_store(str(db))
        try:
            for rid in t.app_ids + t.team_ids:
                record_for(st, rid)
        finally:
            st.dispose()
        yield t
    finally:
        t.gw.stop()


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    capsys.readouterr()
    assert aigw(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_usage_json_by_consumer_matches_vendor_tokens_and_prices(
    traffic: Traffic, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_json(capsys, "--db", str(traffic.db), "usage", "--by", "consumer", "--json")
    assert out["by"] == "consumer" and out["since"] is None
    rows = {r["consumer"]: r for r in out["rows"]}
    app, team = rows["app"], rows["team"]
    assert (app["requests"], app["prompt_tokens"], app["completion_tokens"]) == (
        N_APP,
        N_APP * PROMPT,
        N_APP * COMPLETION,
    )
    assert app["total_tokens"] == N_APP * (PROMPT + COMPLETION) and app["errors"] == 0
    # streamed requests are counted from the usage chunk the gateway asked the vendor for
    assert (team["requests"], team["prompt_tokens"], team["completion_tokens"]) == (
        N_TEAM_STREAM,
        N_TEAM_STREAM * PROMPT,
        N_TEAM_STREAM * COMPLETION,
    )
    assert team["estimated_requests"] == 0
    assert round(app["cost"], 2) == round(N_APP * request_cost(), 2)
    assert app["cost"] == pytest.approx(N_APP * request_cost(), rel=1e-9)
    assert team["cost"] == pytest.approx(N_TEAM_STREAM * request_cost(), rel=1e-9)
    total = out["total"]
    assert total["requests"] == sum(r["requests"] for r in out["rows"])
    assert total["prompt_tokens"] == sum(r["prompt_tokens"] for r in out["rows"])
    assert total["cost"] == pytest.approx(sum(r["cost"] for r in out["rows"]), rel=1e-9)
    st = open_store(str(traffic.db))
    try:
        with st.session() as s:
            records = usage.recent(s, 100_000)
    finally:
        st.dispose()
    assert total["requests"] == len(records)
    assert total["completion_tokens"] == sum(r.completion_tokens for r in records)
    assert total["cost"] == pytest.approx(sum(r.cost for r in records), rel=1e-9)


def test_usage_by_model_and_api_and_since(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(traffic.db)
    by_model = run_json(capsys, "usage", "--db", db, "--by", "model", "--json")
    assert [r["model"] for r in by_model["rows"]] == [MODEL]
    assert by_model["rows"][0]["requests"] >= N_APP + N_TEAM_STREAM
    by_api = run_json(capsys, "--db", db, "usage", "--by", "api", "--json", "--since", "7d")
    assert by_api["rows"][0]["api"] == "hunyuan-api"
    assert by_api["total"] == by_model["total"]
    since = datetime.fromisoformat(by_api["since"].replace("Z", "+00:00"))
    assert 6.9 < (datetime.now(UTC) - since).total_seconds() / 86400 < 7.1
    future = run_json(capsys, "--db", db, "usage", "--json", "--since", "2999-01-01")
    assert future["rows"] == [] and future["total"]["requests"] == 0 and future["since"].startswith("2999-01-01")
    capsys.readouterr()
    assert aigw(["--db", db, "usage", "--by", "model"]) == 0
    text = capsys.readouterr().out
    assert MODEL in text and "TOTAL" in text


def test_usage_and_logs_bad_arguments_are_one_line(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["usage", "--since", "last tuesday"], ["usage", "--by", "colour"], ["logs", "-n", "0"]):
        capsys.readouterr()
        assert aigw(["--db", str(traffic.db), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("aigw: error:") and err.count("\n") == 1, err


def test_logs_json_lists_the_records(traffic: Traffic, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_json(capsys, "--db", str(traffic.db), "logs", "-n", "1000", "--json")
    assert isinstance(rows, list)
    by_id = {r["request_id"]: r for r in rows}
    for rid in traffic.app_ids + traffic.team_ids:
        rec = by_id[rid]
        assert rec["status"] == 200 and rec["model"] == MODEL and rec["api"] == "hunyuan-api"
        assert (rec["prompt_tokens"], rec["completion_tokens"]) == (PROMPT, COMPLETION)
        assert rec["stream"] is (rid in traffic.team_ids)
        assert rec["time"].endswith("Z") and datetime.fromisoformat(rec["time"].replace("Z", "+00:00"))
        assert rec["key_name"] == "k1" and "sk-vendor" not in json.dumps(rec)
    ts = [r["ts"] for r in rows]
    assert ts == sorted(ts)  # oldest first, as a log reads
    last = run_json(capsys, "--db", str(traffic.db), "logs", "-n", "2", "--json")
    assert [r["request_id"] for r in last] == [r["request_id"] for r in rows[-2:]]
    capsys.readouterr()
    assert aigw(["--db", str(traffic.db), "logs", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(" 200 " in ln for ln in lines)


class Lines:
    """A subprocess's stdout/stderr lines, read by threads so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        #: Every stdout line, waited for or not (to count what was printed).
        self.out_all: list[str] = []
        self.err_all: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, q, sink), daemon=True)
            for stream, q, sink in ((proc.stdout, self.out, self.out_all), (proc.stderr, self.err, self.err_all))
        ]
        for t in self._pumps:
            t.start()

    def drained(self, timeout: float = 10.0) -> list[str]:
        """Every stdout line, once the process has ended and its pipes are read to the end."""
        for t in self._pumps:
            t.join(timeout)
        return self.out_all

    @staticmethod
    def _pump(stream: Any, q: queue.Queue[str], sink: list[str]) -> None:
        for line in stream:
            sink.append(line)
            q.put(line)

    @staticmethod
    def wait(q: queue.Queue[str], pred: Any, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if pred(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s; got {seen!r}")


def test_logs_follow_prints_new_records_and_survives_a_restart(traffic: Traffic) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--db", str(traffic.db), "logs", "-n", "1", "--follow", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(proc)
        first = json.loads(Lines.wait(lines.out, lambda ln: ln.strip()))  # the listing (-n 1)
        assert "request_id" in first
        Lines.wait(lines.err, lambda ln: "following requests" in ln)
        rid = f"follow-{uuid.uuid4().hex[:8]}"
        assert chat(traffic.gw.url, traffic.keys["ops"], request_id=rid).status_code == 200
        rec = json.loads(Lines.wait(lines.out, lambda ln: rid in ln))
        assert rec["consumer"] == "ops" and rec["status"] == 200 and rec["time"].endswith("Z")
        # the gateway restarts: follow says it waits, reconnects, and misses nothing
        traffic.gw.stop()
        Lines.wait(lines.err, lambda ln: "waiting for the gateway" in ln)
        traffic.gw = gateway_for(traffic.db).start()
        Lines.wait(lines.err, lambda ln: "connected to" in ln, timeout=20)
        rid2 = f"follow2-{uuid.uuid4().hex[:8]}"
        assert chat(traffic.gw.url, traffic.keys["ops"], request_id=rid2).status_code == 200
        Lines.wait(lines.out, lambda ln: rid2 in ln)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _said(err: list[str]) -> set[str]:
    return {what for what in ("following requests", "following node") if any(what in ln for ln in err)}


def test_logs_follow_covers_every_node_of_the_store(traffic: Traffic) -> None:
    """A second ``aigw serve`` on the same store (other ports, as on another machine): one
    ``aigw logs --follow`` prints the requests of both, each once, and says when the second
    node is followed and when it is gone."""
    other = GatewayProcess(traffic.db).start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "--db", str(traffic.db), "logs", "-n", "1", "--follow", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = Lines(proc)
        # in either order: the other node may be found before the own gateway's stream opens
        wait_for(lambda: {"following requests", "following node"} <= _said(lines.err_all), timeout=30)
        ids = []
        for gw in (traffic.gw, other, other):
            rid = f"nodes-{uuid.uuid4().hex[:8]}"
            assert chat(gw.url, traffic.keys["ops"], request_id=rid).status_code == 200
            ids.append(rid)
        got = [
            json.loads(Lines.wait(lines.out, lambda ln, rid=rid: rid in ln, timeout=30))["request_id"] for rid in ids
        ]
        assert got == ids
        other.stop()
        wait_for(lambda: any("node " in ln and "went away" in ln for ln in lines.err_all), timeout=30)
        rid = f"nodes-after-{uuid.uuid4().hex[:8]}"
        assert chat(traffic.gw.url, traffic.keys["ops"], request_id=rid).status_code == 200
        Lines.wait(lines.out, lambda ln: rid in ln, timeout=30)
    finally:
        other.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    # each record printed once, though the store's catch-up and both streams could each carry it
    printed = [json.loads(ln)["request_id"] for ln in lines.drained() if ln.strip()]
    assert all(printed.count(rid) == 1 for rid in ids), printed


def test_event_source_close_wakes_a_blocked_read() -> None:
    """The pane closes its stream on unmount: a read blocked between events must end at once."""
    import socket

    from tui.follow import EventSource

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    release = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = b'data: {"request_id": "one", "ts": 1.0}\n\n'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(body):x}\r\n".encode() + body + b"\r\n"
            )
            release.wait(30)  # then silence: no heartbeat, no end

    threading.Thread(target=serve, daemon=True).start()
    src = EventSource(f"http://127.0.0.1:{port}", "token")
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        for rec in src.records():
            got.append(rec)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    wait_for(lambda: got, 10, what="the first event")
    assert got == [{"request_id": "one", "ts": 1.0}]
    assert not done.is_set()  # blocked waiting for the next event
    src.close()
    assert done.wait(5), "close() did not wake the reader"
    release.set()
    server.close()
