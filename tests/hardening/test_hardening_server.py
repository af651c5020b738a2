"""The data plane's own HTTP server under abuse, against a real ``aigw serve``.

A client pipelining requests without reading the answers, an unauthenticated client
announcing a huge body, a flood of refused requests next to billed ones, and more
connections than ``max_connections``: memory stays bounded, the 401 comes without the
body, every billed record is stored, the cap is kept.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import figures
import httpx
import pytest
from fault_vendor import FaultVendor
from helpers import wait_for
from hhelpers import CHAT, MSG, HGw, assert_error_shape, raw_http, records_by_id, rss_kib, start_gateway
from mock_vendor import MockVendor

from store import repo
from store.db import Store

#: Generous: the review's client grew the gateway by gigabytes.
RSS_BOUND_KIB = 100 * 1024


def test_a_client_pipelining_without_reading_does_not_grow_the_gateway(hgw: HGw) -> None:
    pid = hgw.proc.proc.pid  # type: ignore[union-attr]
    before = rss_kib(pid)
    batch = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    sent = 0
    peak = before
    with socket.create_connection(("127.0.0.1", hgw.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(3)  # the gateway stopped reading (as it should): sending blocks
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                s.sendall(batch)
            except (TimeoutError, OSError):
                break
            sent += len(batch)
            peak = max(peak, rss_kib(pid))
        peak = max(peak, rss_kib(pid))
    growth = peak - before
    figures.put("server.pipelining.sent_mb", round(sent / 1e6, 1))
    figures.put("server.pipelining.rss_growth_mb", round(growth / 1024, 1))
    assert growth < RSS_BOUND_KIB, f"RSS grew by {growth // 1024} MB for {sent // 1_000_000} MB of pipelined requests"
    assert (
        httpx.post(hgw.url + "/alpha" + CHAT, json={"messages": MSG}, headers=hgw.auth(), timeout=15).status_code == 200
    )


def test_an_unauthenticated_body_is_never_read(hgw: HGw) -> None:
    """The 401 comes on the head alone: the 8 MiB the client announced are never asked for."""
    t0 = time.monotonic()
    resp = raw_http(
        hgw.port,
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8388608\r\n\r\n",
        timeout=10,
    )
    figures.put("server.unauthenticated_8mib.answer_ms", round((time.monotonic() - t0) * 1000, 1))
    assert resp.status == 401 and resp.headers.get("connection") == "close"


def test_a_flood_of_refusals_loses_no_billed_record(hgw: HGw, hstore: Store) -> None:
    stop = threading.Event()
    refused = [0]

    def flood(path: bytes) -> None:
        batch = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}") * 200
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", hgw.port), timeout=5) as s:
                    s.settimeout(5)
                    while not stop.is_set():
                        s.sendall(batch)
                        got = b""
                        while got.count(b"HTTP/1.1 ") < 200:
                            chunk = s.recv(1 << 20)
                            if not chunk:
                                break
                            got += chunk
                        refused[0] += got.count(b"HTTP/1.1 ")
            except OSError:
                continue

    long_path = b"/" + b"p" * 8000
    threads = [
        threading.Thread(target=flood, args=(p,), daemon=True)
        for p in (long_path, long_path, b"/alpha" + CHAT.encode())
    ]
    for t in threads:
        t.start()
    prefix = "billed-" + uuid.uuid4().hex[:8]
    ids = [f"{prefix}-{i}" for i in range(100)]
    try:
        with httpx.Client(timeout=30) as c:
            for rid in ids:
                r = c.post(
                    hgw.url + "/alpha" + CHAT, json={"messages": MSG}, headers={**hgw.auth(), "x-request-id": rid}
                )
                assert r.status_code == 200, r.text[:200]
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    stored = wait_for(
        lambda: (got := records_by_id(hstore, prefix)) and len(got) == len(ids) and got, 30, what="billed records"
    )
    figures.put("server.flood.refused_answered", refused[0])
    figures.put("server.flood.billed_stored", f"{len(stored)}/{len(ids)}")
    text = httpx.get(hgw.proc.admin_url + "/metrics", timeout=5).text
    assert 'aigw_refused_total{status="404"}' in text and 'aigw_refused_total{status="401"}' in text
    assert "aigw_records_dropped_total 0" in text


def test_connections_past_max_connections_are_closed_at_once(hgw: HGw, hstore: Store) -> None:
    with hstore.session() as s:
        gw = repo.load_config(s).gateway
        gw.max_connections = 20
        repo.save_gateway(s, gw)
    hgw.proc.reload()
    socks: list[socket.socket] = []
    try:
        for _ in range(20):
            socks.append(socket.create_connection(("127.0.0.1", hgw.port), timeout=10))
        wait_for(lambda: "aigw_connections 20" in httpx.get(hgw.proc.admin_url + "/metrics", timeout=5).text, 10)
        with socket.create_connection(("127.0.0.1", hgw.port), timeout=10) as extra:
            extra.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert extra.recv(100) == b"", "the connection past the cap is closed, unanswered"
        text = httpx.get(hgw.proc.admin_url + "/metrics", timeout=5).text
        assert "aigw_connections_refused_total 1" in text, text[-600:]
    finally:
        for s in socks:
            s.close()
        with hstore.session() as s:
            gw = repo.load_config(s).gateway
            gw.max_connections = 10_000
            repo.save_gateway(s, gw)
        hgw.proc.reload()
    assert (
        httpx.post(hgw.url + "/alpha" + CHAT, json={"messages": MSG}, headers=hgw.auth(), timeout=15).status_code == 200
    )


# ------------------------------------------------------------------ the admin listener

#: The client timeout of the gateway below (seconds), and slack for a loaded machine.
ADMIN_TIMEOUT_S = 2
SLACK_S = 10


@pytest.fixture(scope="module")
def tgw(vendor: MockVendor, fault: FaultVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HGw]:
    gw = start_gateway(
        tmp_path_factory.mktemp("admin"), vendor, fault, env={"AIGW_CLIENT_TIMEOUT_S": str(ADMIN_TIMEOUT_S)}
    )
    try:
        yield gw
    finally:
        gw.proc.stop()


def _seconds_until_closed(s: socket.socket, bound: float) -> float:
    t0 = time.monotonic()
    s.settimeout(bound)
    with contextlib.suppress(ConnectionResetError):
        while s.recv(65536):
            pass
    return time.monotonic() - t0


def test_admin_connections_idle_or_trickling_are_closed(tgw: HGw) -> None:
    with (
        socket.create_connection(("127.0.0.1", tgw.proc.admin_port), timeout=5) as idle,
        socket.create_connection(("127.0.0.1", tgw.proc.admin_port), timeout=5) as partial,
    ):
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        try:
            took = max(
                _seconds_until_closed(idle, ADMIN_TIMEOUT_S + SLACK_S),
                _seconds_until_closed(partial, ADMIN_TIMEOUT_S + SLACK_S),
            )
        except TimeoutError:
            raise AssertionError(f"an admin connection still open after {ADMIN_TIMEOUT_S + SLACK_S} s") from None
    figures.put("server.admin.partial_head_closed_s", round(took, 1))


def test_admin_answers_bad_http_in_the_api_error_shape(tgw: HGw) -> None:
    resp = raw_http(tgw.proc.admin_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: secret-sk-aigw-x\r\n\r\n")
    err = assert_error_shape(resp.status, resp.headers.get("content-type", ""), resp.body, what="admin bad HTTP")
    assert resp.status == 400 and err["code"] == "bad_http_request"
    assert resp.headers.get("x-request-id") and b"secret" not in resp.raw
