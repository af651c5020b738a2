"""The gateway's own HTTP/1.1 layer, in process: the vendor client and the data-plane server.

Real sockets on 127.0.0.1 and real byte streams on both sides; the peers here are small
asyncio servers/clients that write exact bytes, so framing cases the mock vendor never
produces (chunks, close-delimited bodies, gzip, TLS, stale keep-alive, interim 1xx,
pipelining, HTTP/1.0, h2c upgrade) are covered one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.errors import GatewayError
from proxy.http_server import HttpServer, Request
from proxy.upstream_errors import ConnectFailed, ConnectTimeout, Disconnected, ReadTimeout
from proxy.vendor_client import VendorPool, origin_of

GET = b"GET /v1/x HTTP/1.1\r\nhost: v\r\n\r\n"
Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def vendor(serve: Serve, **kw: object) -> AsyncIterator[str]:
    """A raw TCP server answering with ``serve``; yields its address."""
    server = await asyncio.start_server(serve, "127.0.0.1", 0, **kw)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if kw.get("ssl") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/v1"
    finally:
        server.close()


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def answering(*answers: bytes, close: bool = False) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            for a in answers:
                await _read_head(reader)
                writer.write(a)
                await writer.drain()
            if close:
                writer.close()
            else:
                await reader.read()  # hold the connection until the client goes

    return serve


async def exchange(pool: VendorPool, address: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = await pool.exchange(origin_of(address), GET, connect_timeout=timeout, read_timeout=timeout)
    try:
        return conn.status, await conn.read_all()
    finally:
        pool.release(conn)


# ------------------------------------------------------------------ vendor client


async def test_origin_keeps_the_service_path_and_host_header() -> None:
    o = origin_of("https://api.example.com/v1/")
    assert (o.scheme, o.host, o.port, o.base_path) == ("https", "api.example.com", 443, "/v1")
    assert o.host_line == b"host: api.example.com\r\n"
    assert origin_of("http://[::1]:8000").host_line == b"host: [::1]:8000\r\n"


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
    ],
)
async def test_framed_answers_are_read_whole_and_the_connection_reused(answer: bytes) -> None:
    accepted = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await answering(answer, answer)(reader, writer)

    pool = VendorPool()
    async with vendor(serve) as address:
        assert await exchange(pool, address) == (200, b"hello")
        assert await exchange(pool, address) == (200, b"hello")
    await pool.close()
    assert accepted == 1, "the second call should reuse the kept-alive connection"


async def test_close_delimited_and_gzip_answers() -> None:
    pool = VendorPool()
    async with vendor(answering(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)) as address:
        assert await exchange(pool, address) == (200, b"until the end")
    packed = gzip.compress(b'{"ok": true}')
    gz = b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n%b" % (len(packed), packed)
    async with vendor(answering(gz)) as address:
        assert await exchange(pool, address) == (200, b'{"ok": true}')
    await pool.close()


async def test_truncated_answer_is_a_disconnect() -> None:
    pool = VendorPool()
    async with vendor(answering(b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort", close=True)) as address:
        with pytest.raises(Disconnected):
            await exchange(pool, address)
    async with vendor(answering(b"NOT HTTP AT ALL\r\n\r\n", close=True)) as address:
        with pytest.raises(Disconnected):
            await exchange(pool, address)
    await pool.close()


async def test_stale_pooled_connection_is_retried_once_on_a_fresh_one() -> None:
    """The vendor closes a kept-alive connection right after answering: the next call must
    not fail (nothing was answered on the dead connection), and must reach the vendor once."""
    seen = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        await _read_head(reader)
        seen += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # without "connection: close": the client believes it may reuse it

    pool = VendorPool()
    async with vendor(serve) as address:
        assert await exchange(pool, address) == (200, b"ok")
        await asyncio.sleep(0.05)  # let the close reach us... or not: both must work
        assert await exchange(pool, address) == (200, b"ok")
    await pool.close()
    assert seen == 2


async def test_read_timeout_only_while_waiting_for_the_vendor() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_head(reader)
        await asyncio.sleep(5)

    pool = VendorPool()
    async with vendor(silent) as address:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ReadTimeout):
            await exchange(pool, address, timeout=0.3)
        assert 0.25 <= loop.time() - t0 < 2.0
    await pool.close()


async def test_connect_failures_are_classified() -> None:
    pool = VendorPool()
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    with pytest.raises(ConnectFailed):
        await exchange(pool, f"http://127.0.0.1:{port}")
    await pool.close()

    async def never(*args: object, **kwargs: object) -> None:  # a SYN nobody answers
        await asyncio.sleep(30)

    pool = VendorPool()
    pool.loop = _LoopWith(pool.loop, never)  # type: ignore[assignment]
    with pytest.raises(ConnectTimeout):
        await pool.exchange(origin_of("http://192.0.2.1:81"), GET, connect_timeout=0.2, read_timeout=1)
    await pool.close()


class _LoopWith:
    """The running loop with ``create_connection`` replaced (no network here can drop a SYN)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, create_connection: object) -> None:
        self._loop = loop
        self.create_connection = create_connection

    def __getattr__(self, name: str) -> object:
        return getattr(self._loop, name)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
async def test_https_vendor_verified_against_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",  # made in milliseconds, where an RSA key takes up to half a second
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecure"
    async with vendor(answering(answer, answer), ssl=server_ctx) as address:
        untrusted = VendorPool()
        with pytest.raises(ConnectFailed):  # not in the system trust store: refused
            await exchange(untrusted, address)
        await untrusted.close()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the operator's own CA, the usual way
        pool = VendorPool()
        assert await exchange(pool, address) == (200, b"secure")
        await pool.close()


# ------------------------------------------------------------------ data-plane server


@contextlib.asynccontextmanager
async def gateway(
    handler: Callable[[Request], Awaitable[None]], *, client_timeout: float = 5.0, max_body: int = 1024
) -> AsyncIterator[int]:
    server = HttpServer(handler, client_timeout=client_timeout, max_body=max_body)
    await server.start("127.0.0.1", 0)
    assert server._server is not None
    port = server._server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        await server.shutdown(1.0)


async def echo(req: Request) -> None:
    try:
        body = await req.read_body()
    except GatewayError as err:
        req.respond(err.status, b"content-type: application/json\r\n", err.body())
        return
    req.respond(
        200, b"content-type: text/plain\r\n", f"{req.method} {req.path} q={req.query} body={body.decode()}".encode()
    )


async def talk(port: int, data: bytes, until: int = 1, timeout: float = 5.0) -> bytes:
    """Send bytes, read until ``until`` answers arrived or the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while got.count(b"HTTP/1.") < until or not _complete(got):
                chunk = await reader.read(65536)
                if not chunk:
                    break
                got += chunk
    finally:
        writer.close()
    return got


def _complete(raw: bytes) -> bool:
    """The last answer in ``raw`` is whole (by its Content-Length)."""
    head, sep, rest = raw[raw.rfind(b"HTTP/1.") :].partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":")[1])
    return True


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with gateway(echo) as port:
        out = await talk(
            port,
            b"POST /a?x=1 HTTP/1.1\r\nhost: g\r\ncontent-length: 2\r\n\r\nhiGET /b HTTP/1.1\r\nhost: g\r\n\r\n",
            until=2,
        )
    first, second = out.index(b"POST /a q=x=1 body=hi"), out.index(b"GET /b q= body=")
    assert first < second and out.count(b"HTTP/1.1 200 OK") == 2


async def test_http10_and_head() -> None:
    async with gateway(echo) as port:
        out = await talk(port, b"GET /old HTTP/1.0\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200") and b"connection: close" in out and out.endswith(b"body=")
        out = await talk(port, b"HEAD /h HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\r\n")
        assert b"content-length: " in out and out.endswith(b"\r\n\r\n"), out


async def test_chunked_body_and_expect_continue() -> None:
    async with gateway(echo) as port:
        out = await talk(
            port, b"POST /c HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        assert b"body=abcde" in out
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /e HTTP/1.1\r\nhost: g\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"ok")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()


async def test_h2c_upgrade_is_ignored_and_the_body_still_read() -> None:
    """curl --http2 on http:// asks for h2c: the answer is plain HTTP/1.1 with the body read."""
    async with gateway(echo) as port:
        out = await talk(
            port,
            b"POST /u HTTP/1.1\r\nhost: g\r\nconnection: Upgrade, HTTP2-Settings\r\n"
            b"upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
            b"content-length: 4\r\n\r\nbody",
        )
    assert out.startswith(b"HTTP/1.1 200") and b"body=body" in out


async def test_limits_and_bad_bytes_get_json_errors() -> None:
    async with gateway(echo, max_body=16) as port:
        out = await talk(port, b"POST /big HTTP/1.1\r\nhost: g\r\ncontent-length: 17\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 413") and b'"code":"request_too_large"' in out
        out = await talk(
            port,
            b"POST /big HTTP/1.1\r\nhost: g\r\ntransfer-encoding: chunked\r\n\r\n20\r\n" + b"x" * 32 + b"\r\n0\r\n\r\n",
        )
        assert out.startswith(b"HTTP/1.1 413")
        out = await talk(port, b"GET / HTTP/1.1\r\nx-long: " + b"v" * 9000 + b"\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 431") and b"request_header_fields_too_large" in out
        out = await talk(port, b"\x16\x03\x01 not http\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400") and b"x-request-id: " in out
        # the bad request comes after a good one on the same connection: the good one is answered
        out = await talk(port, b"GET /fine HTTP/1.1\r\nhost: g\r\n\r\nBAD BYTES\r\n\r\n", until=2)
        assert out.startswith(b"HTTP/1.1 200") and b"GET /fine" in out and b"HTTP/1.1 400" in out


@pytest.mark.hardening  # waits out a client timeout: not for the quick tier
async def test_slow_body_gets_408_and_idle_connection_is_closed() -> None:
    async with gateway(echo, client_timeout=0.4) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow HTTP/1.1\r\nhost: g\r\ncontent-length: 10\r\n\r\nabc")
        out = await asyncio.wait_for(reader.read(), 5)
        assert out.startswith(b"HTTP/1.1 408") and b"request_timeout" in out
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 5) == b"", "idle connection closed, no answer"
        writer.close()


async def test_client_leaving_cancels_the_handler_and_streams_wait_for_slow_readers() -> None:
    cancelled, entered = asyncio.Event(), asyncio.Event()

    async def slow(req: Request) -> None:
        if req.path == "/hang":
            entered.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        req.start_stream(200, b"content-type: text/event-stream\r\n", b"data: 1\n\n")
        for _ in range(200):  # ~13 MB against a client that never reads: must wait, not buffer
            await req.write(b"data: " + b"x" * 65536 + b"\n\n")
        req.end_stream()

    async with gateway(slow) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hang HTTP/1.1\r\nhost: g\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(entered.wait(), 5)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: g\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), 5)
        assert b"transfer-encoding: chunked" in first
        writer.close()


async def _sent_before_answer(port: int, head: bytes, piece: bytes, most: int) -> tuple[int, bytes]:
    """Send ``head`` then ``piece`` after ``piece`` (up to ``most`` bytes) until the server
    answers; how much was sent by then and the answer (``b""`` if none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    sent = len(head)
    answer = b""
    try:
        while sent < most:
            writer.write(piece)
            sent += len(piece)
            try:
                await asyncio.wait_for(writer.drain(), 2)
                answer = await asyncio.wait_for(reader.read(65536), 0.001)
            except (TimeoutError, ConnectionError):
                pass
            if answer or reader.at_eof():
                break
        if not answer:
            with contextlib.suppress(TimeoutError, ConnectionError):
                answer = await asyncio.wait_for(reader.read(65536), 2)
    finally:
        writer.close()
    return sent, answer


async def test_an_endless_header_line_is_refused_as_it_arrives() -> None:
    """httptools buffers a header line whole before reporting it: the server counts the bytes
    itself and answers 431 once a line passes 8,190 bytes or the head 64 KiB."""
    async with gateway(echo) as port:
        sent, answer = await _sent_before_answer(port, b"GET / HTTP/1.1\r\nx-big: ", b"a" * 4096, 64 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 431") and b"request_header_fields_too_large" in answer, answer[:200]
        assert sent < 1024 * 1024, f"{sent} bytes of one header line were read before the 431"
        line = b"x-h: " + b"v" * 1000 + b"\r\n"  # short lines, a huge head
        sent, answer = await _sent_before_answer(port, b"GET / HTTP/1.1\r\n", line, 64 * 1024 * 1024)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert sent < 1024 * 1024


async def test_the_handler_answers_before_the_body_is_sent() -> None:
    """A handler that refuses on the head never makes the client send its body: the answer
    comes at once, and the connection closes after it (the long body was never read)."""

    async def refuse(req: Request) -> None:
        req.respond(401, b"content-type: application/json\r\n", b'{"error": {}}')

    async with gateway(refuse, max_body=8 * 1024 * 1024) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /c HTTP/1.1\r\nhost: g\r\ncontent-length: 8388608\r\n\r\n")
        out = await asyncio.wait_for(reader.read(), 5)  # the answer, then the server's close
        writer.close()
        assert out.startswith(b"HTTP/1.1 401") and b"connection: close" in out
        # a short unread body is dropped and the connection kept for the next request
        out = await talk(
            port,
            b"POST /c HTTP/1.1\r\nhost: g\r\ncontent-length: 3\r\n\r\nabcGET /d HTTP/1.1\r\nhost: g\r\n\r\n",
            until=2,
        )
        assert out.count(b"HTTP/1.1 401") == 2 and b"connection: close" not in out


@pytest.mark.hardening  # seconds of a client that never reads: not for the quick tier
async def test_pipelined_answers_wait_for_a_client_that_does_not_read() -> None:
    """Reading stops while the answers are not taken: the client's sending blocks, instead of
    the server buffering an answer for every request it is sent."""
    answered = 0

    async def quick(req: Request) -> None:
        nonlocal answered
        answered += 1
        req.respond(404, b"content-type: application/json\r\n", b"x" * 1000)

    async with gateway(quick) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        batch = b"GET /x HTTP/1.1\r\nhost: g\r\n\r\n" * 1000
        with contextlib.suppress(TimeoutError):
            for _ in range(200):  # 200,000 requests, unless the server stops taking them
                writer.write(batch)
                await asyncio.wait_for(writer.drain(), 2)
        writer.close()
    assert answered < 20_000, f"{answered} answers written to a client that read none"


async def test_header_names_lower_cased_once_where_they_are_parsed() -> None:
    seen: list[object] = []

    async def look(req: Request) -> None:
        seen.extend((req.headers, req.raw_headers))
        req.respond(200, b"", b"")

    async with gateway(look) as port:
        await talk(port, b"GET / HTTP/1.1\r\nHost: g\r\nX-Api-Key: k\r\nX-TWO: a\r\nx-two: b\r\n\r\n")
    headers, raw = seen
    assert headers == {"host": "g", "x-api-key": "k", "x-two": "a, b"}
    assert raw == [(b"host", b"g"), (b"x-api-key", b"k"), (b"x-two", b"a"), (b"x-two", b"b")]
