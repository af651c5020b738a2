"""A vendor that misbehaves at the byte level, for faults ``tests/mock_vendor.py`` cannot script.

A raw asyncio TCP server in a background thread: it reads one HTTP request, records it,
then does what ``mode`` says — reset the connection, send a truncated body, break the
SSE framing, stream forever, or say nothing for a long time; or, as a hostile vendor,
send an oversized head, a gzip bomb, endless interim answers, a smuggled second answer.
A request whose path holds ``/m/<mode>/`` gets that mode (so one vendor can sit behind
one service per mode); ``tls`` serves https. Like the mock vendor it is a fake *vendor*
only; the gateway under test is the real ``aigw serve``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import re
import socket
import ssl
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "}}]}\n\n'
HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>\n"
)
#: The modes (what the vendor does after reading the request).
MODES = (
    "reset_before_answer",
    "truncated_json",
    "reset_mid_stream",
    "broken_sse",
    "garbage_sse",
    "stall_mid_stream",
    "endless",
    "slow_first_byte",
    "html_502",
    "html_200",
    "hop_headers",
    "garbage_status",
    # hostile or broken vendors (``big-<bytes>`` answers a valid JSON body of that size)
    "ok",
    "huge_head",
    "many_headers",
    "gzip_bomb",
    "continue_flood",
    "many_continues",
    "extra_after_body",
    "switch_protocols",
    "br",
    "gzip",
    "deflate",
)
OK_BODY = (
    b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":'
    b'"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,'
    b'"completion_tokens":1,"total_tokens":2}}'
)
_MODE_IN_PATH = re.compile(rb"^[A-Z]+ [^ ]*/m/([a-z0-9_-]+)/")


@dataclass
class Seen:
    mode: str
    head: bytes
    body: bytes
    started: float
    #: When the vendor noticed the gateway went away (endless mode), or None.
    client_gone_at: float | None = None
    chunks_sent: int = 0
    #: Which connection (1, 2, …) carried the request.
    conn_no: int = 0


@dataclass
class FaultVendor:
    mode: str = "truncated_json"
    #: Seconds slow_first_byte waits before answering (longer than the service's timeout_s).
    slow_s: float = 5.0
    #: Pause between endless chunks.
    chunk_every_s: float = 0.05
    #: Serve https with this context (None: plain http).
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    connections: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def mode_url(self, mode: str, host: str = "127.0.0.1") -> str:
        """The address of a service whose every request gets ``mode``."""
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/m/{mode}/v1"

    def start(self) -> FaultVendor:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.tls))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-vendor", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault vendor did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    # ---------------------------------------------------------------- serving

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn_no = self.connections
        try:
            while True:  # keep-alive: the gateway pools connections
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                picked = _MODE_IN_PATH.match(head)
                seen = Seen(picked[1].decode() if picked else self.mode, head, body, time.time(), conn_no=conn_no)
                self.seen.append(seen)
                if not await self._answer(seen, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Misbehave; True if the connection may carry another request."""
        mode = seen.mode
        if mode == "reset_before_answer":
            _rst(writer)
            return False
        if mode == "truncated_json":
            body = b'{"id":"chatcmpl-x","object":"chat.completion","choices":[{"index":0,"mess'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n" + body)
            await writer.drain()
            writer.close()
            return False
        if mode in ("html_502", "html_200"):
            status = b"502 Bad Gateway" if mode == "html_502" else b"200 OK"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html\r\nServer: nginx\r\n"
                b"Set-Cookie: vendor_session=abc123; Path=/\r\nConnection: keep-alive\r\n"
                b"Keep-Alive: timeout=5\r\nX-Vendor-Trace: t-1\r\n"
                b"Content-Length: " + str(len(HTML_PAGE)).encode() + b"\r\n\r\n" + HTML_PAGE
            )
            await writer.drain()
            return True
        if mode == "hop_headers":  # a good answer wrapped in every header a proxy must not pass on
            body = (
                b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":'
                b'"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,'
                b'"completion_tokens":1,"total_tokens":2}}'
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Set-Cookie: vendor_session=abc123; Path=/\r\nSet-Cookie: other=1\r\n"
                b"Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: hop-only\r\n"
                b"Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic realm=x\r\n"
                b"Trailer: X-Checksum\r\nUpgrade: h2c\r\nServer: vendor-httpd\r\n"
                b"X-Vendor-Trace: t-1\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            await writer.drain()
            return True
        if mode == "garbage_status":
            writer.write(b"HTTP/1.1 abc nonsense\r\n\r\n")
            await writer.drain()
            writer.close()
            return False
        hostile = _HOSTILE.get(mode)
        if hostile is not None or mode.startswith("big-"):
            return await (hostile or _big)(seen, reader, writer)
        if mode == "slow_first_byte":
            await asyncio.sleep(self.slow_s)
            writer.close()
            return False
        # streaming modes: chunked framing, as vendors stream
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(_chunk(CHUNK) + _chunk(CHUNK))
        await writer.drain()
        seen.chunks_sent = 2
        if mode == "reset_mid_stream":
            await asyncio.sleep(0.05)
            _rst(writer)
            return False
        if mode == "broken_sse":  # a chunk header that is not hex: the framing itself breaks
            await asyncio.sleep(0.2)  # after the good events reached the gateway
            writer.write(b"zz\r\n" + b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"half')
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            return False
        if mode == "garbage_sse":  # framing fine, content not SSE; the vendor ends it cleanly
            writer.write(_chunk(b"\x00\xff not sse at all {{{\r\n") + b"0\r\n\r\n")
            await writer.drain()
            return True
        if mode == "stall_mid_stream":
            await asyncio.sleep(self.slow_s)
            writer.close()
            return False
        if mode == "endless":
            try:
                while not reader.at_eof():
                    writer.write(_chunk(CHUNK))
                    await writer.drain()
                    seen.chunks_sent += 1
                    await asyncio.sleep(self.chunk_every_s)
                    if writer.is_closing():
                        break
            except (ConnectionError, OSError):
                pass
            seen.client_gone_at = time.time()
            return False
        raise AssertionError(f"unknown fault mode {mode!r}")


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), the way a crashed vendor or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ---------------------------------------------------------------- hostile or broken vendors


def _json_answer(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def _send(writer: asyncio.StreamWriter, data: bytes, keep: bool = True) -> bool:
    writer.write(data)
    await writer.drain()
    if not keep:
        writer.close()
    return keep


def big_body(size: int) -> bytes:
    """A valid embeddings-shaped JSON answer of exactly ``size`` bytes (an answer to many inputs)."""
    head = (
        b'{"object":"list","model":"m","usage":{"prompt_tokens":1,"total_tokens":1},'
        b'"data":[{"object":"embedding","index":0,"embedding":"'
    )
    tail = b'"}]}'
    return head + b"A" * (size - len(head) - len(tail)) + tail


async def _big(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, _json_answer(big_body(int(seen.mode[4:]))))


async def _ok(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, _json_answer(OK_BODY))


async def _huge_head(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    pad = b"X-Pad: " + b"a" * (10 * 1024 * 1024) + b"\r\n"
    return await _send(writer, _json_answer(OK_BODY, pad), keep=False)


async def _many_headers(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(300))
    return await _send(writer, _json_answer(OK_BODY, extra), keep=False)


_BOMB: list[bytes] = []


async def _gzip_bomb(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """65 MiB of zeros in about 65 KB: past the gateway's answer limit once inflated."""
    if not _BOMB:
        _BOMB.append(gzip.compress(b"\0" * (65 * 1024 * 1024), 9))
    return await _send(writer, _json_answer(_BOMB[0], b"Content-Encoding: gzip\r\n"), keep=False)


async def _continue_flood(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """An interim answer every half second for a minute, and never the real one."""
    with contextlib.suppress(ConnectionError, OSError):
        for _ in range(120):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
            seen.chunks_sent += 1
            await asyncio.sleep(0.5)
            if writer.is_closing():
                break
    seen.client_gone_at = time.time()
    return False


async def _many_continues(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, b"HTTP/1.1 100 Continue\r\n\r\n" * 50 + _json_answer(OK_BODY), keep=False)


async def _extra_after_body(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """A complete answer, then in the same write a second one the gateway never asked for."""
    second = b'{"hijacked":true}'
    smuggled = b"HTTP/1.1 299 Hijacked\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        len(second),
        second,
    )
    return await _send(writer, _json_answer(OK_BODY) + smuggled)


async def _switch_protocols(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(
        writer, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
    )


async def _br(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, _json_answer(b"\x1b\x2c\x00\xf8not-really-brotli", b"Content-Encoding: br\r\n"))


async def _gzip(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, _json_answer(gzip.compress(OK_BODY), b"Content-Encoding: gzip\r\n"))


async def _deflate(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return await _send(writer, _json_answer(zlib.compress(OK_BODY), b"Content-Encoding: deflate\r\n"))


_HOSTILE = {
    "ok": _ok,
    "huge_head": _huge_head,
    "many_headers": _many_headers,
    "gzip_bomb": _gzip_bomb,
    "continue_flood": _continue_flood,
    "many_continues": _many_continues,
    "extra_after_body": _extra_after_body,
    "switch_protocols": _switch_protocols,
    "br": _br,
    "gzip": _gzip,
    "deflate": _deflate,
}
