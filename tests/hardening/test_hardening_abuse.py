"""Slow and abusive clients against a real ``aigw serve``: each is cut off, others keep being served.

Slow headers (slowloris), slow bodies, idle keep-alive connections and a thousand
idle sockets are all bounded by the gateway's client timeout (``AIGW_CLIENT_TIMEOUT_S``,
set low here so the suite stays fast); a prober sends normal requests all along and
every one of them must succeed.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import figures
import httpx
import orjson
import pytest
from fault_vendor import FaultVendor
from helpers import wait_for
from hhelpers import CHAT, MSG, HGw, assert_error_shape, connections_of, fd_count, start_gateway
from mock_vendor import MockVendor

#: The client timeout the gateway runs with in this module (seconds).
CLIENT_TIMEOUT_S = 3
#: Slack on top of it for a loaded 2-core machine.
SLACK_S = 12


@pytest.fixture(scope="module")
def agw(vendor: MockVendor, fault: FaultVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HGw]:
    gw = start_gateway(
        tmp_path_factory.mktemp("abuse"), vendor, fault, env={"AIGW_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S)}
    )
    try:
        yield gw
    finally:
        gw.proc.stop()


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


class Prober(threading.Thread):
    """Normal requests, one after another, while the abuse goes on: all must succeed."""

    def __init__(self, gw: HGw) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.stop_event = threading.Event()
        self.latencies: list[float] = []
        self.failures: list[str] = []

    def run(self) -> None:
        with httpx.Client(timeout=15) as c:
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post(self.gw.url + "/alpha" + CHAT, json={"messages": MSG}, headers=self.gw.auth())
                    if r.status_code == 200:
                        self.latencies.append(time.perf_counter() - t0)
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.stop_event.wait(0.05)

    def finish(self, name: str) -> None:
        self.stop_event.set()
        self.join(30)
        assert not self.failures, f"normal requests failed during {name}: {self.failures[:5]}"
        assert len(self.latencies) >= 5, f"only {len(self.latencies)} normal requests during {name}"
        lat = sorted(self.latencies)
        figures.add(f"abuse.{name}.normal_ok", len(lat))
        figures.put(f"abuse.{name}.normal_p50_ms", round(statistics.median(lat) * 1000, 1))
        figures.put(f"abuse.{name}.normal_max_ms", round(lat[-1] * 1000, 1))


def _closed_by_peer(s: socket.socket) -> bool:
    """True once the gateway closed ``s`` (EOF or reset); never blocks."""
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except OSError:
        return True
    if data:  # an answer (e.g. 408) before the close: fine, keep reading to the EOF
        return _closed_by_peer(s)
    return True


def _open(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)  # MSG_DONTWAIT alone is ignored by Python on sockets with a timeout
        socks.append(s)
    return socks


def test_slow_headers_are_cut(agw: HGw) -> None:
    prober = Prober(agw)
    prober.start()
    socks = _open(agw.port, 50)
    try:
        for s in socks:
            s.sendall(b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        open_ = set(range(len(socks)))
        deadline = time.monotonic() + CLIENT_TIMEOUT_S + SLACK_S
        trickled = 0
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    socks[i].send(b"X-Slow: a\r\n")  # a header line at a time, never the end
                    trickled += 1
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
                    continue
                if _closed_by_peer(socks[i]):
                    open_.discard(i)
            time.sleep(0.5)
        assert not open_, (
            f"{len(open_)} of 50 slowloris connections still open after "
            f"{CLIENT_TIMEOUT_S + SLACK_S}s (header lines sent: {trickled})"
        )
        figures.add("abuse.slowloris_connections_cut", len(socks))
    finally:
        for s in socks:
            s.close()
    prober.finish("slowloris")


def test_slow_bodies_are_cut(agw: HGw, vendor: MockVendor) -> None:
    prober = Prober(agw)
    prober.start()
    socks = _open(agw.port, 20)
    answers: dict[int, bytes] = {}
    try:
        for s in socks:
            s.send(
                b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + agw.keys.app.encode()
                + b"\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100000\r\n\r\n{"messages": ['
            )
        open_ = set(range(len(socks)))
        deadline = time.monotonic() + CLIENT_TIMEOUT_S + SLACK_S
        while open_ and time.monotonic() < deadline:
            for i in list(open_):
                try:
                    socks[i].send(b" ")
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(i)
                    continue
                try:
                    data = socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    open_.discard(i)
                    continue
                answers[i] = answers.get(i, b"") + data
                if not data or b"\r\n\r\n" in answers[i]:
                    open_.discard(i)
            time.sleep(0.5)
        assert not open_, f"{len(open_)} of 20 slow bodies still being waited for after {CLIENT_TIMEOUT_S + SLACK_S}s"
        for raw in answers.values():
            if not raw:
                continue
            head, _, body = raw.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert status == 408, raw[:300]
            ctype = next(
                (
                    ln.split(b":", 1)[1].strip().decode()
                    for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-type:")
                ),
                "",
            )
            with contextlib.suppress(ValueError):
                body = body[
                    : int(
                        next(
                            ln.split(b":", 1)[1]
                            for ln in head.split(b"\r\n")
                            if ln.lower().startswith(b"content-length:")
                        )
                    )
                ]
            assert_error_shape(status, ctype, body, what="slow body")
        figures.add("abuse.slow_bodies_cut", len(socks))
    finally:
        for s in socks:
            s.close()
    assert all(isinstance(r.json, dict) for r in vendor.requests), "a half-sent body was forwarded"
    prober.finish("slow_body")


def test_idle_keep_alive_is_closed(agw: HGw) -> None:
    body = orjson.dumps({"messages": MSG})
    with socket.create_connection(("127.0.0.1", agw.port), timeout=10) as s:
        s.sendall(
            b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + agw.keys.app.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        assert buf.startswith(b"HTTP/1.1 200"), buf[:200]
        t0 = time.monotonic()
        s.settimeout(CLIENT_TIMEOUT_S + SLACK_S)
        try:
            while s.recv(65536):  # the rest of the answer, then the gateway's close
                pass
        except TimeoutError:
            pytest.fail(f"an idle keep-alive connection was still open after {CLIENT_TIMEOUT_S + SLACK_S}s")
        except ConnectionResetError:
            pass
        figures.put("abuse.idle_keepalive_closed_after_s", round(time.monotonic() - t0, 1))


def test_a_thousand_idle_connections(agw: HGw) -> None:
    assert agw.proc.proc is not None
    pid = agw.proc.proc.pid
    base_fds = fd_count(pid)
    prober = Prober(agw)
    n = 1000
    socks = _open(agw.port, n)
    try:
        wait_for(lambda: connections_of(pid, agw.port) >= n, 20, 0.2, what=f"{n} connections accepted")
        figures.put("abuse.idle_connections_held", connections_of(pid, agw.port))
        prober.start()
        time.sleep(1.0)  # let the prober run while all of them are open
        prober.finish("idle_1000")
        # The gateway closes them itself (idle past the client timeout) and gives the fds back.
        wait_for(
            lambda: connections_of(pid, agw.port) <= 5,
            CLIENT_TIMEOUT_S + SLACK_S + 10,
            0.5,
            what="the gateway to close the idle connections",
        )
        closed = sum(_closed_by_peer(s) for s in socks)
        assert closed == n, f"only {closed} of {n} idle connections closed by the gateway"
        wait_for(lambda: fd_count(pid) <= base_fds + 10, 10, 0.2, what="the gateway's fds to come back")
        figures.add("abuse.idle_connections_cut", n)
    finally:
        for s in socks:
            s.close()
