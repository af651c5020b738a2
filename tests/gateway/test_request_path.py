"""The request path against a real ``aigw serve``: keys as header bytes, what reaches the
vendor, a stream that never ends an event, a client that stops reading."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers import GatewayProcess, record_for
from mock_vendor import MockVendor

from store.db import Store, open_store
from tui.cli import main as aigw_main

CHAT = "/p/v1/chat/completions"
ASCII_KEY = "sk-aigw-request-path-0123456789abcdef"
#: The client timeout of this module's gateway: how long a client may stop reading a stream.
CLIENT_TIMEOUT_S = 2


@dataclass
class PathGw:
    proc: GatewayProcess
    store: Store


@pytest.fixture(scope="module")
def pgw(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PathGw]:
    tmp: Path = tmp_path_factory.mktemp("path")
    db = tmp / "data" / "aigw.db"
    cfg = tmp / "aigw.toml"
    cfg.write_text(
        '[[model_keys]]\nname = "k"\ncredential = "sk-vendor-path-1"\n\n'
        f'[[model_services]]\nname = "s"\nvendor = "custom"\naddress = "{vendor.url}"\nkeys = ["k"]\n'
        'default_model = "m"\n\n'
        '[[model_apis]]\nname = "p"\nbase_path = "/p"\nservices = ["s"]\n\n'
        f'[[consumers]]\nname = "ascii"\napi_keys = ["{ASCII_KEY}"]\n\n'
        '[[consumer_groups]]\nname = "g"\nconsumers = ["ascii"]\nmodel_apis = ["p"]\n',
        encoding="utf-8",
    )
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, env={"AIGW_CLIENT_TIMEOUT_S": str(CLIENT_TIMEOUT_S)})
    proc.start()
    st = open_store(str(db))
    try:
        yield PathGw(proc, st)
    finally:
        st.dispose()
        proc.stop()


def _post(pgw: PathGw, headers: dict[str, str | bytes], **body: object) -> httpx.Response:
    return httpx.post(
        pgw.proc.url + CHAT,
        json={"messages": [{"role": "user", "content": "hi"}], **body},
        headers={"Authorization": f"Bearer {ASCII_KEY}", **headers},
        timeout=20,
    )


def test_only_the_protocols_headers_reach_the_vendor(pgw: PathGw, fresh_vendor: MockVendor) -> None:
    r = _post(
        pgw,
        {
            "OpenAI-Organization": "org-client",
            "OpenAI-Project": "proj-client",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Custom": "nope",
            "Accept": "application/json",
            "User-Agent": "path-test/1.0",
            "anthropic-version": "2023-06-01",
            "OpenAI-Beta": "assistants=v2",
        },
    )
    assert r.status_code == 200, r.text
    sent = {k.lower(): v for k, v in fresh_vendor.requests[0].headers.items()}
    for dropped in ("openai-organization", "openai-project", "x-forwarded-for", "x-forwarded-host"):
        assert dropped not in sent, sent
    assert "forwarded" not in sent and "x-real-ip" not in sent and "x-custom" not in sent
    assert sent["accept"] == "application/json" and sent["user-agent"] == "path-test/1.0"
    assert sent["anthropic-version"] == "2023-06-01" and sent["openai-beta"] == "assistants=v2"
    assert sent["authorization"] == "Bearer sk-vendor-path-1" and sent["content-type"] == "application/json"


def _raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            if time.monotonic() > deadline:
                break
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def test_chunked_trailers_and_content_encoding_never_reach_the_vendor(pgw: PathGw, fresh_vendor: MockVendor) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    req = (
        b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ASCII_KEY.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\nUser-Agent: from-the-trailer\r\n\r\n"
    )
    answer = _raw(pgw.proc.port, req)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    seen = fresh_vendor.wait_for(1)[0]
    sent = {k.lower(): v for k, v in seen.headers.items()}
    assert "x-forwarded-for" not in sent and "content-encoding" not in sent
    assert "from-the-trailer" not in repr(seen.headers)


def test_a_stream_event_without_end_is_cut_at_1_mib(pgw: PathGw, fresh_vendor: MockVendor) -> None:
    fresh_vendor.behave(body=b"data: " + b"x" * (3 * 1024 * 1024), content_type="text/event-stream")
    with httpx.stream(
        "POST",
        pgw.proc.url + CHAT,
        json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        headers={"Authorization": f"Bearer {ASCII_KEY}", "x-request-id": "path-huge-event"},
        timeout=20,
    ) as r:
        assert r.status_code == 200
        text = r.read()
    assert len(text) < 64 * 1024, "the unfinished event is not relayed"
    assert b"event: error" in text and b"without an event boundary" in text
    rec = record_for(pgw.store, "path-huge-event")
    assert rec["status"] == 502


def test_a_client_that_stops_reading_frees_the_vendor(pgw: PathGw, fresh_vendor: MockVendor) -> None:
    fresh_vendor.behave(endless=True)
    body = b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}'
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
    try:
        s.settimeout(10)
        s.connect(("127.0.0.1", pgw.proc.port))
        s.sendall(
            b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ASCII_KEY.encode() + b"\r\n"
            b"x-request-id: path-stalled\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert s.recv(64).startswith(b"HTTP/1.1 200")  # the stream began; now we stop reading
        seen = fresh_vendor.wait_for(1)[0]
        fresh_vendor.wait_until(lambda: seen.cancelled, timeout=CLIENT_TIMEOUT_S + 15)
        rec = record_for(pgw.store, "path-stalled")
        assert rec["status"] == 499 and "stopped reading" in rec["error"]
    finally:
        s.close()
