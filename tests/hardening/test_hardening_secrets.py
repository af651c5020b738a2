"""Secrets: distinctive credentials sent through every path, then every output searched for them.

Model key credentials (literal and ``env:VAR``), consumer keys and the admin token must
never show in request records, ``aigw logs --json``, ``/events``, ``/metrics``,
``/healthz``, error bodies and headers, ``gateway.log``, the gateway's own output,
``aigw export`` without ``--include-secrets``, or the console screenshots. Also: the
admin token is compared in constant time, the data folder is 0700 and its files 0600,
and vendor cookies and hop-by-hop headers are not passed on.
"""

from __future__ import annotations

import inspect
import re
import stat
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fault_vendor import FaultVendor
from hconfig import ALL_SECRETS, CRED, ENV_VALUE
from helpers import wait_for
from hhelpers import CHAT, MSG, HGw
from mock_vendor import Behaviour, MockVendor

from store import admin_token
from store.admin_token import GATEWAY_LOG

ROOT = Path(__file__).resolve().parents[2]
WRONG_KEY = "sk-aigw-WRONG-but-plausible-" + "Zq" * 16


def _aigw(gw: HGw, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--db", str(gw.db), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


class EventsReader(threading.Thread):
    def __init__(self, gw: HGw) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.data = bytearray()
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(60, read=2)) as c,
            c.stream(
                "GET", self.gw.proc.admin_url + "/events", headers={"Authorization": f"Bearer {self.gw.proc.token}"}
            ) as r,
        ):
            self.ready.set()
            while not self.stop.is_set():
                try:
                    for chunk in r.iter_bytes():
                        self.data += chunk
                        if self.stop.is_set():
                            return
                except httpx.ReadTimeout:
                    return


def test_no_secret_in_any_output(hgw: HGw, vendor: MockVendor, fault: FaultVendor) -> None:
    consumer_keys = [hgw.keys.app, hgw.keys.off, hgw.keys.lonely, hgw.keys.alpha_only]
    secrets = [*ALL_SECRETS, *consumer_keys]
    events = EventsReader(hgw)
    events.start()
    assert events.ready.wait(10)
    answers: list[bytes] = []
    rids: list[str] = []

    statuses: list[int] = []

    def go(
        path: str, *, key: str | None = None, stream: bool = False, header: str = "Authorization", body: object = None
    ) -> httpx.Response:
        rid = f"secret-{uuid.uuid4().hex}"
        rids.append(rid)
        value = f"Bearer {key or hgw.keys.app}" if header == "Authorization" else (key or hgw.keys.app)
        with (
            httpx.Client(timeout=30) as c,
            c.stream(
                "POST",
                hgw.url + path,
                json=body if body is not None else {"messages": MSG, "stream": stream},
                headers={header: value, "x-request-id": rid},
            ) as r,
        ):
            data = r.read()
        answers.append(b"%d\n" % r.status_code + str(r.headers).encode() + b"\n" + data)
        statuses.append(r.status_code)
        return r

    vendor.reset()
    # success: literal and env: credentials, plain and streamed, every key header
    assert go("/secret" + CHAT).status_code == 200
    assert go("/env" + CHAT).status_code == 200
    assert go("/secret" + CHAT, stream=True).status_code == 200
    assert go("/env" + CHAT, stream=True).status_code == 200
    assert go("/secret" + CHAT, header="x-api-key").status_code == 200
    assert go("/secret" + CHAT, header="api-key").status_code == 200
    sent = {r.authorization for r in vendor.requests}
    assert sent == {f"Bearer {CRED['k1']}", f"Bearer {ENV_VALUE}"}, sent  # the vendor got the real ones
    # vendor 401 echoing the key it was sent (some do), plain and streamed
    for cred, path in ((CRED["k1"], "/secret"), (ENV_VALUE, "/env")):
        for stream in (False, True):
            vendor.queue(
                Behaviour(
                    status=401,
                    body={
                        "error": {
                            "message": f"Incorrect API key provided: {cred}.",
                            "type": "invalid_request_error",
                            "code": "invalid_api_key",
                        }
                    },
                )
            )
            assert go(path + CHAT, stream=stream).status_code == 401
    # vendor down, vendor timeout, env variable missing, model key rejected by failover
    assert go("/down" + CHAT).status_code == 502
    assert go("/missing" + CHAT).status_code == 502
    vendor.queue(Behaviour(delay=3))
    assert go("/slow" + CHAT).status_code == 504
    vendor.reject_keys[CRED["k1"]] = 401
    vendor.reject_keys[CRED["k2"]] = 403
    assert go("/fail" + CHAT).status_code in (401, 403)
    vendor.reject_keys.clear()
    # bad requests: wrong, disabled, unauthorized consumers; bad bodies; unknown route
    assert go("/secret" + CHAT, key=WRONG_KEY).status_code == 401
    assert go("/secret" + CHAT, key=WRONG_KEY, header="x-api-key").status_code == 401
    assert go("/secret" + CHAT, key=hgw.keys.off).status_code == 401
    assert go("/secret" + CHAT, key=hgw.keys.lonely).status_code == 403
    assert go("/secret" + CHAT, body=[1, 2]).status_code == 400
    assert go("/secret" + CHAT, body={"model": 5}).status_code == 400
    assert go("/nowhere" + CHAT).status_code == 404
    # a broken stream
    vendor.queue(Behaviour(break_after=1))
    assert go("/secret" + CHAT, stream=True).status_code == 200

    # refusals before a consumer is known (401, 404) are sampled (one per status per second),
    # so of those only the first of each status is sure to have a record
    kept = [rid for rid, status in zip(rids, statuses, strict=True) if status not in (401, 404)]
    kept += [next(rid for rid, status in zip(rids, statuses, strict=True) if status == s) for s in (401, 404)]
    wait_for(lambda: all(rid.encode() in events.data for rid in kept), 10, what="every kept record on /events")
    commands = {
        "aigw logs --json": ("logs", "-n", "1000", "--json"),
        "aigw logs": ("logs", "-n", "1000"),
        "aigw usage --json": ("usage", "--json"),
        "aigw export": ("export",),
    }
    with ThreadPoolExecutor(4) as pool:  # four CLI processes at once: each pays Python's start-up
        futures = {name: pool.submit(_aigw, hgw, *args) for name, args in commands.items()}
        outputs: dict[str, str] = {name: f.result() for name, f in futures.items()}
    outputs["answers (status, headers, bodies)"] = b"\n".join(answers).decode(errors="replace")
    outputs["/metrics"] = httpx.get(hgw.proc.admin_url + "/metrics", timeout=10).text
    outputs["/healthz"] = httpx.get(hgw.proc.admin_url + "/healthz", timeout=10).text
    records_json = outputs["aigw logs --json"]
    assert all(rid in records_json for rid in kept), "not every kept request has a record to search"
    events.stop.set()
    outputs["/events"] = events.data.decode(errors="replace")
    outputs["gateway.log"] = (hgw.data_dir / GATEWAY_LOG).read_text(errors="replace")
    outputs["gateway stdout/stderr"] = hgw.proc.output()
    for svg in sorted((ROOT / "screenshots").glob("*.svg")):
        outputs[f"screenshots/{svg.name}"] = svg.read_text(errors="replace")
    # the literal credentials are the export's to omit; names and env: references stay
    assert 'credential = "env:AIGW_TEST_VENDOR_KEY"' in outputs["aigw export"]
    leaks = [(where, s[:14] + "…") for where, text in outputs.items() for s in [*secrets, hgw.proc.token] if s in text]
    assert not leaks, f"secrets found in outputs: {leaks}"
    # The presented wrong key is not echoed either (it may be someone's real key elsewhere).
    assert not [w for w, t in outputs.items() if WRONG_KEY in t]
    # A full consumer key has this shape; nothing anywhere shows one.
    full_key = re.compile(r"sk-aigw-[A-Za-z0-9_-]{32,}")
    assert not [w for w, t in outputs.items() if full_key.search(t)], "a full consumer key is shown somewhere"


def test_admin_token_checked_in_constant_time(hgw: HGw) -> None:
    src = inspect.getsource(admin_token.check)
    assert "hmac.compare_digest" in src and "==" not in src.replace("!=", "")
    token = hgw.proc.token
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": token},
        {"Authorization": ("Bearer " + "é" * 10).encode()},
    ):
        for method, path in (("GET", "/events"), ("POST", "/reload"), ("GET", "/limits")):
            r = httpx.request(method, hgw.proc.admin_url + path, headers=headers, timeout=10)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.json()["error"]["message"] and token not in r.text
    r = httpx.post(hgw.proc.admin_url + "/reload", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200


def test_data_folder_0700_and_files_0600(hgw: HGw) -> None:
    # Every file that exists by now: the db (and its WAL/SHM), the token, the log.
    assert stat.S_IMODE(hgw.data_dir.stat().st_mode) == 0o700
    names = ["aigw.db", "admin.token", GATEWAY_LOG, "aigw.db-wal", "aigw.db-shm"]
    modes = {n: oct(stat.S_IMODE((hgw.data_dir / n).stat().st_mode)) for n in names if (hgw.data_dir / n).exists()}
    assert set(names[:3]) <= set(modes), modes
    wrong = {n: m for n, m in modes.items() if m != oct(0o600)}
    assert not wrong, f"files not 0600: {wrong}"


def test_vendor_cookies_and_hop_by_hop_headers_not_passed_on(hgw: HGw, fault: FaultVendor) -> None:
    fault.mode = "hop_headers"
    r = httpx.post(hgw.url + "/faulty" + CHAT, json={"messages": MSG}, headers=hgw.auth(), timeout=30)
    assert r.status_code == 200, r.text[:300]
    names = {k.lower() for k in r.headers}
    passed = names & {"set-cookie", "keep-alive", "proxy-authenticate", "trailer", "upgrade", "x-hop-secret"}
    assert not passed, f"hop-by-hop or cookie headers passed on: {passed}"
    assert r.headers.get("server") != "vendor-httpd"
    assert r.headers.get("x-vendor-trace") == "t-1"
    assert r.headers.get("connection", "keep-alive").lower() in ("keep-alive", "close")


@pytest.mark.parametrize("stream", [False, True])
def test_set_cookie_dropped_from_streams_and_answers(hgw: HGw, vendor: MockVendor, stream: bool) -> None:
    vendor.reset()
    vendor.behave(headers={"Set-Cookie": "vendor_session=s3cr3t; Path=/", "X-Vendor-Note": "ok"})
    with (
        httpx.Client(timeout=30) as c,
        c.stream("POST", hgw.url + "/secret" + CHAT, json={"messages": MSG, "stream": stream}, headers=hgw.auth()) as r,
    ):
        r.read()
    assert r.status_code == 200
    assert "set-cookie" not in r.headers and r.headers.get("x-vendor-note") == "ok"
