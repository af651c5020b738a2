"""Faults at the vendor, through a real ``aigw serve``: each gives its documented status and a record.

The byte-level faults come from :class:`fault_vendor.FaultVendor` (API ``/faulty``,
``timeout_s`` 1.5); "connection refused" is a service on a port nobody listens on.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import figures
import httpx
import pytest
from fault_vendor import HTML_PAGE, FaultVendor
from hconfig import FAULT_TIMEOUT_S
from helpers import record_for, wait_for
from hhelpers import CHAT, MSG, HGw, assert_error_shape

from store.db import Store


def call(
    gw: HGw, path: str, *, stream: bool = False, rid: str | None = None, timeout: float = 30
) -> tuple[httpx.Response, bytes, str]:
    rid = rid or f"fault-{uuid.uuid4().hex}"
    headers = {**gw.auth(), "x-request-id": rid}
    body = {"messages": MSG, "stream": stream}
    with httpx.Client(timeout=timeout) as c, c.stream("POST", gw.url + path, json=body, headers=headers) as r:
        data = r.read()
    return r, data, rid


def expect_error(r: httpx.Response, data: bytes, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, data[:300])
    err = assert_error_shape(r.status_code, r.headers.get("content-type", ""), data)
    assert err["code"] == code, err
    return err


def expect_sse_error(r: httpx.Response, data: bytes, code: str | tuple[str, ...]) -> None:
    assert r.status_code == 200, data[:300]
    assert data.count(b"data: ") >= 2, data[:300]  # what the vendor sent before it broke was relayed
    assert b"event: error\ndata: " in data, data[-500:]
    tail = data[data.rindex(b"event: error\ndata: ") + len(b"event: error\ndata: ") :].strip()
    err = httpx.Response(200, content=tail).json()["error"]
    codes = (code,) if isinstance(code, str) else code
    assert err["code"] in codes and err["message"], err
    assert b"Traceback" not in data


def survived(name: str) -> None:
    figures.add("vendor_faults.survived")
    figures.add(f"vendor_faults.{name}")


@pytest.fixture(autouse=True)
def _mode(fault: FaultVendor) -> None:
    fault.seen.clear()
    fault.slow_s = 5.0


def test_connection_refused_is_502(hgw: HGw, hstore: Store) -> None:
    r, data, rid = call(hgw, "/down" + CHAT)
    expect_error(r, data, 502, "upstream_unreachable")
    rec = record_for(hstore, rid)
    assert rec["status"] == 502 and rec["service"] == "down" and rec["error"]
    survived("connection_refused")


@pytest.mark.parametrize("mode", ["reset_before_answer", "truncated_json", "garbage_status"])
def test_broken_answers_are_502(hgw: HGw, hstore: Store, fault: FaultVendor, mode: str) -> None:
    fault.mode = mode
    r, data, rid = call(hgw, "/faulty" + CHAT)
    expect_error(r, data, 502, "upstream_error")
    assert fault.seen, "the fault vendor was not called"
    rec = record_for(hstore, rid)
    assert rec["status"] == 502 and rec["service"] == "fault-svc" and rec["error"]
    survived(mode)


@pytest.mark.parametrize("stream", [False, True])
def test_slow_first_byte_is_504_after_timeout(hgw: HGw, hstore: Store, fault: FaultVendor, stream: bool) -> None:
    fault.mode = "slow_first_byte"
    t0 = time.monotonic()
    r, data, rid = call(hgw, "/faulty" + CHAT, stream=stream)
    took = time.monotonic() - t0
    expect_error(r, data, 504, "upstream_timeout")
    assert took >= FAULT_TIMEOUT_S * 0.9, f"504 after {took:.2f}s, before timeout_s"
    assert took < fault.slow_s, "the gateway waited for the vendor beyond timeout_s"
    rec = record_for(hstore, rid)
    assert rec["status"] == 504 and rec["stream"] is stream
    survived(f"slow_first_byte_{'stream' if stream else 'plain'}")


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("reset_mid_stream", "upstream_error"),
        # aiohttp's C parser stalls on bad chunk framing instead of raising: then timeout_s ends it
        ("broken_sse", ("upstream_error", "upstream_timeout")),
        ("stall_mid_stream", "upstream_timeout"),
    ],
)
def test_stream_broken_midway_ends_with_sse_error(
    hgw: HGw, hstore: Store, fault: FaultVendor, mode: str, code: str | tuple[str, ...]
) -> None:
    fault.mode = mode
    r, data, rid = call(hgw, "/faulty" + CHAT, stream=True, timeout=FAULT_TIMEOUT_S + 15)
    expect_sse_error(r, data, code)
    rec = record_for(hstore, rid)
    assert rec["stream"] is True and rec["status"] in (502, 504) and rec["error"], rec
    survived(mode)


def test_garbage_sse_is_relayed_as_sent(hgw: HGw, hstore: Store, fault: FaultVendor) -> None:
    """Framing intact but not SSE: the gateway relays bytes, it does not invent an error."""
    fault.mode = "garbage_sse"
    r, data, rid = call(hgw, "/faulty" + CHAT, stream=True)
    assert r.status_code == 200 and b"not sse at all" in data, data[:300]
    rec = record_for(hstore, rid)
    assert rec["status"] == 200 and rec["estimated"] is True
    survived("garbage_sse")


def test_html_error_page_relayed_with_status_and_body(hgw: HGw, hstore: Store, fault: FaultVendor) -> None:
    """Vendor errors relayed with their status and body; cookies and hop-by-hop headers dropped."""
    fault.mode = "html_502"
    r, data, rid = call(hgw, "/faulty" + CHAT)
    assert r.status_code == 502 and data == HTML_PAGE, data[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert "set-cookie" not in r.headers and "keep-alive" not in r.headers
    assert r.headers.get("server", "") != "nginx"
    assert r.headers.get("x-vendor-trace") == "t-1"  # ordinary vendor headers do pass
    assert r.headers["x-request-id"] == rid
    rec = record_for(hstore, rid)
    assert rec["status"] == 502 and rec["error"]
    survived("html_502")


def test_html_with_200_relayed_as_sent(hgw: HGw, hstore: Store, fault: FaultVendor) -> None:
    fault.mode = "html_200"
    r, data, rid = call(hgw, "/faulty" + CHAT)
    assert r.status_code == 200 and data == HTML_PAGE
    assert "set-cookie" not in r.headers
    rec = record_for(hstore, rid)
    assert rec["status"] == 200 and rec["estimated"] is True
    survived("html_200")


def test_endless_stream_flows_until_the_client_leaves(hgw: HGw, hstore: Store, fault: FaultVendor) -> None:
    """A stream that never ends is not cut while chunks keep coming (``timeout_s`` bounds the
    *pauses*); when the client goes away the vendor call is cancelled and the record says 499."""
    fault.mode = "endless"
    rid = f"endless-{uuid.uuid4().hex}"
    got = 0
    t0 = time.monotonic()
    with (
        httpx.Client(timeout=30) as c,
        c.stream(
            "POST",
            hgw.url + "/faulty" + CHAT,
            json={"messages": MSG, "stream": True},
            headers={**hgw.auth(), "x-request-id": rid},
        ) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            got += chunk.count(b"data: ")
            if time.monotonic() - t0 > FAULT_TIMEOUT_S * 3:
                break
    left_at = time.time()
    assert got > 10, f"only {got} events in {FAULT_TIMEOUT_S * 3}s"
    wait_for(lambda: fault.seen and fault.seen[-1].client_gone_at, 10, what="the vendor call to be cancelled")
    assert fault.seen[-1].client_gone_at - left_at < 5  # type: ignore[operator]
    rec = record_for(hstore, rid)
    assert rec["status"] == 499 and rec["stream"] is True
    figures.put("vendor_faults.endless_events_relayed", got)
    survived("endless_stream")


def test_faults_counted_in_metrics(hgw: HGw) -> None:
    text = httpx.get(hgw.proc.admin_url + "/metrics", timeout=10).text
    lines = [ln for ln in text.splitlines() if ln.startswith('aigw_upstream_errors_total{service="fault-svc"')]
    assert lines, text[-2000:]
    total = sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)
    assert total >= 8, lines
