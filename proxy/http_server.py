"""The data plane's HTTP/1.1 server: one asyncio protocol per connection on httptools' parser.

Why not aiohttp's server (the admin listener still uses it): on the request path its
per-request machinery (request and response objects, multidicts, the router, the
payload writer) cost more CPU than everything aigw itself does, and the gateway's
throughput target is well beyond a bare aiohttp relay. Here a request is parsed by
llhttp (C, via httptools), handed to the pipeline as one small :class:`Request`, and its
answer goes out in one ``transport.write`` — head and body together.

What aiohttp used to give us and this module keeps:
- limits: header lines and count, the URL, the body (413), one deadline from the end of
  the last answer to the end of the next request's head (idle keep-alive and slowloris
  alike) and one for the body (408);
- HTTP/1.0 and 1.1 keep-alive, pipelining (answered in order), ``Expect: 100-continue``,
  chunked request bodies, HEAD answered without a body;
- anything llhttp refuses — bad framing, smuggling shapes (two lengths, length plus
  chunked), bytes that are not HTTP — gets the API's JSON error and the connection
  closed, without echoing a byte of the request;
- a client that goes away cancels its request's handler (the pipeline records a 499);
- write back-pressure: a stream waits for a slow client instead of buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools

from .errors import error_body
from .heads import JSON, request_id_line

log = logging.getLogger("aigw")

MAX_HEADER_LINE = 8190
MAX_HEADERS_BYTES = 64 * 1024
MAX_HEADERS = 100
#: Completed pipelined requests held while one is being answered; reading pauses beyond it.
MAX_QUEUED = 16

_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES = {s: _status_line(s) for s in _REASONS}


class _Date:
    """The ``date`` header line, formatted once a second rather than once an answer."""

    __slots__ = ("line", "second")

    def __init__(self) -> None:
        self.second = 0
        self.line = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.line


_DATE = _Date()


def split_target(target: bytes) -> tuple[str, str]:
    """The path and the query of a request target (origin or absolute form), undecoded.

    Latin-1 keeps every byte as it came: routes match exactly, and the query reaches the
    vendor byte for byte.
    """
    if target[:1] != b"/" and b"://" in target[:10]:  # absolute form: the path is what counts
        slash = target.find(b"/", target.index(b"://") + 3)
        target = target[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    return path.partition(b"#")[0].decode("latin-1"), query.partition(b"#")[0].decode("latin-1")


class Request:
    """One parsed request and the way to answer it (through the connection that read it)."""

    __slots__ = (
        "body",
        "conn",
        "head_only",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_headers",
        "started",
        "version",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        target: bytes,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.path, self.query = split_target(target)
        self.version = version
        self.raw_headers = raw_headers
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.head_only = method == "HEAD"
        self.started = False

    # ------------------------------------------------------------ answering

    def respond(self, status: int, head: bytes, body: bytes, *, close: bool = False) -> None:
        """The whole answer in one write: ``head`` is header lines, framing is added here."""
        self.started = True
        conn = self.conn
        keep = self.keep_alive and not close and not conn.closing
        if not keep:
            conn.closing = True
        line = _STATUS_LINES.get(status) or _status_line(status)
        conn.write(
            b"".join(
                (
                    line,
                    head,
                    b"content-length: %d\r\n" % len(body),
                    _DATE.get(),
                    b""
                    if keep and self.version != "1.0"
                    else (b"connection: keep-alive\r\n" if keep else b"connection: close\r\n"),
                    b"\r\n",
                    b"" if self.head_only else body,
                )
            )
        )

    def start_stream(self, status: int, head: bytes, first: bytes) -> None:
        """Send the head (chunked for HTTP/1.1, close-delimited for 1.0) with the first bytes."""
        self.started = True
        conn = self.conn
        if self.version == "1.0":
            self.keep_alive = False
            framing = b"connection: close\r\n"
        else:
            framing = b"transfer-encoding: chunked\r\n"
        if not self.keep_alive or conn.closing:
            self.keep_alive = False
            conn.closing = True
            if self.version != "1.0":
                framing += b"connection: close\r\n"
        line = _STATUS_LINES.get(status) or _status_line(status)
        conn.write(
            b"".join(
                (line, head, framing, _DATE.get(), b"\r\n", self._chunk(first) if first and not self.head_only else b"")
            )
        )

    def _chunk(self, data: bytes) -> bytes:
        if self.version == "1.0":
            return data
        return b"%x\r\n%b\r\n" % (len(data), data)

    async def write(self, data: bytes) -> None:
        """One stream chunk; waits while the client is not reading (back-pressure)."""
        if not data or self.head_only:
            return
        conn = self.conn
        if conn.lost:
            raise ConnectionResetError("client closed the connection")
        conn.write(self._chunk(data))
        if conn.paused:
            await conn.drain()

    def end_stream(self) -> None:
        conn = self.conn
        if self.version != "1.0" and not self.head_only:
            conn.write(b"0\r\n\r\n")
        if not self.keep_alive:
            conn.closing = True


Handler = Callable[[Request], Awaitable[None]]
#: Told of a request refused before the handler (method, path, headers, status, message);
#: returns the request id to answer with.
RefusalHook = Callable[[str, str, dict[str, str], int, str], str]


class _Refuse(Exception):
    """Raised inside a parser callback to stop parsing once we have answered (it reaches
    ``data_received`` as the ``__context__`` of httptools' callback error)."""


class HttpConnection(asyncio.Protocol):
    """One client connection: parse, queue, answer in order, enforce the deadlines."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False  # close once the current answer is written
        self.lost = False
        self.paused = False
        self._drain: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        # the message being parsed
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None  # once the head is complete
        self._hbytes = 0
        self._body: list[bytes] = []
        self._blen = 0
        self._in_body = False
        self._expect = False  # owe the client a "100 Continue" once this read is parsed
        self._upgrade_need = -1  # body bytes still to read after an Upgrade request's head
        self._upgrade_req: Request | None = None
        #: The answer to bytes we refused, sent once the requests before them are answered.
        self._refusal: bytes | None = None
        # one lazy timer: ``_deadline`` moves, the timer re-arms itself only when it fires
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self._set_deadline(self.server.client_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()  # the pipeline records a 499 and stops the vendor call
        self._queue.clear()
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("client closed the connection"))
            self._drain.exception()  # retrieved here: nobody may be waiting any more

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        if self.lost:
            raise ConnectionResetError("client closed the connection")
        if self.paused:
            self._drain = self.loop.create_future()
            await self._drain

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.lost:
            t.write(data)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: nothing after the bad bytes is read
        if self._upgrade_need >= 0:
            self._feed_upgrade_body(data)
            return
        try:
            self.parser.feed_data(data)
            if self._expect:
                self._expect = False
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[exc.args[0] :] if exc.args else b"")
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refuse):
                return
            self._refuse(
                400,
                "the request is not valid HTTP/1.1 (request line, a header or the framing); fix the client",
                "bad_http_request",
            )

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw = []
        self._headers = None
        self._hbytes = 0
        self._body = []
        self._blen = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEADER_LINE:
            self._refuse(400, "the request URL is longer than 8190 bytes", "bad_http_request")
            raise _Refuse

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hbytes += len(name) + len(value) + 4
        if (
            len(name) + len(value) > MAX_HEADER_LINE
            or self._hbytes > MAX_HEADERS_BYTES
            or len(self._raw) >= MAX_HEADERS
        ):
            self._refuse(
                400,
                "the request headers are too large (8190 bytes a line, 64 KiB and 100 headers in all)",
                "bad_http_request",
            )
            raise _Refuse
        if self._in_body:
            return  # a chunked body's trailers: never merged into the request's head
        self._raw.append((name.lower(), value))  # lower case once, here

    def on_headers_complete(self) -> None:
        server = self.server
        headers: dict[str, str] = {}
        for name, value in self._raw:
            k = name.decode("latin-1")
            v = value.decode("latin-1")
            headers[k] = headers[k] + ", " + v if k in headers else v
        self._headers = headers
        cl = headers.get("content-length")
        length = int(cl) if cl is not None and cl.strip().isdigit() else -1
        expect = headers.get("expect", "").strip().lower()
        if length > server.max_body:
            self._refuse(
                413,
                f"the request body is larger than {server.max_body // (1024 * 1024)} MiB; send a smaller request",
                "request_too_large",
            )
            raise _Refuse
        if expect:
            if expect != "100-continue":
                self._refuse(
                    417, "only 'Expect: 100-continue' is supported; drop the Expect header", "expectation_failed"
                )
                raise _Refuse
            # Sent after this read, and only if none of the body came with the head (RFC 9110,
            # section 10.1.1, lets a server skip it then): a client that waited gets its go-ahead.
            self._expect = self.parser.get_http_version() == "1.1"
        self._in_body = True
        if self._task is None:  # the body has its own deadline, from the end of the head
            self._set_deadline(server.client_timeout)

    def on_body(self, body: bytes) -> None:
        self._expect = False
        self._blen += len(body)
        if self._blen > self.server.max_body:
            self._refuse(
                413,
                f"the request body is larger than {self.server.max_body // (1024 * 1024)} MiB; send a smaller request",
                "request_too_large",
            )
            raise _Refuse
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._expect = False
        parser = self.parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self,
            parser.get_method().decode("latin-1"),
            self._url,
            parser.get_http_version(),
            self._raw,
            self._headers or {},
            body,
            parser.should_keep_alive(),
        )
        self._enqueue(req)

    # ------------------------------------------------------------ Upgrade (h2c and friends)

    def _after_upgrade(self, rest: bytes) -> None:
        """We speak HTTP/1.1 only: answer the request as if no Upgrade was asked, then close.

        llhttp stops at the head of such a request and leaves its body unread, so the body
        is collected here by its Content-Length (chunked upgrade bodies are refused).
        """
        req = self._queue[-1] if self._queue else None
        if req is None or req.method == "CONNECT" or "transfer-encoding" in req.headers:
            if req is not None:
                self._queue.pop()
            self._refuse(400, "HTTP upgrades and CONNECT are not supported; send plain HTTP/1.1", "bad_http_request")
            return
        req.keep_alive = False
        length = req.headers.get("content-length", "0").strip()
        need = int(length) if length.isdigit() else 0
        if need == 0:
            self._upgrade_need = 0  # nothing to read; any further bytes are ignored
            return
        # the request is queued already: hold it back until its body is here
        self._queue.pop()
        self._upgrade_req = req
        self._upgrade_need = need
        self._body = []
        if rest:
            self._feed_upgrade_body(rest)

    def _feed_upgrade_body(self, data: bytes) -> None:
        req = self._upgrade_req
        if req is None or self._upgrade_need <= 0:
            return  # everything after the answered upgrade request is ignored
        part = data[: self._upgrade_need]
        self._body.append(part)
        self._upgrade_need -= len(part)
        if self._upgrade_need == 0:
            req.body = b"".join(self._body)
            self._upgrade_req = None
            self._enqueue(req)

    # ------------------------------------------------------------ running the handler

    def _enqueue(self, req: Request) -> None:
        self._queue.append(req)
        if self._task is None:
            self._deadline = 0.0  # being answered: the handler's own timeouts apply
            self._task = self.loop.create_task(self._serve())
        elif len(self._queue) >= MAX_QUEUED and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()

    async def _serve(self) -> None:
        handler = self.server.handler
        try:
            while self._queue and not self.lost:
                req = self._queue.popleft()
                if self._reading_paused and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                try:
                    await handler(req)
                except asyncio.CancelledError:
                    raise
                except (ConnectionResetError, BrokenPipeError):  # the client left mid-answer
                    self.closing = True
                except Exception:  # the pipeline answers its own errors: this is a bug
                    log.exception("unexpected error answering %s %s", req.method, req.path)
                    if not req.started:
                        req.respond(
                            500,
                            JSON,
                            error_body(
                                "the gateway failed to handle this request; see gateway.log",
                                "api_error",
                                "internal_error",
                            ),
                            close=True,
                        )
                    self.closing = True
                if not req.started:  # cannot happen unless a stage forgot to answer
                    req.respond(
                        500,
                        JSON,
                        error_body(
                            "the gateway failed to handle this request; see gateway.log", "api_error", "internal_error"
                        ),
                        close=True,
                    )
                if self.closing:
                    self._close()
                    return
        except asyncio.CancelledError:
            return
        finally:
            self._task = None
        if self._refusal is not None:
            self._send_refusal()
            return
        if not self.lost:
            self._set_deadline(self.server.client_timeout)  # idle until the next request's head

    # ------------------------------------------------------------ deadlines and refusals

    def _set_deadline(self, seconds: float) -> None:
        self._deadline = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.lost or self._deadline == 0.0 or self._task is not None:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        if self._in_body or self._upgrade_req is not None:
            t = self.server.client_timeout
            self._refuse(408, f"the request body did not arrive within {t:g} s; send it at once", "request_timeout")
        else:  # idle keep-alive, or a head that never finished: nothing to answer
            self._close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer a request we will not read to the end, and close the connection.

        Requests that came whole before the bad bytes are answered first, in order.
        """
        if self.lost or self._refusal is not None:
            return
        rid = ""
        hook = self.server.on_refused
        if self._headers is not None and hook is not None:  # a whole head: a request to record
            rid = hook(
                self.parser.get_method().decode("latin-1"), split_target(self._url)[0], self._headers, status, message
            )
        body = error_body(message, "invalid_request_error", code)
        self._refusal = b"".join(
            (
                _STATUS_LINES.get(status) or _status_line(status),
                JSON,
                request_id_line(rid or os.urandom(16).hex()),
                b"content-length: %d\r\n" % len(body),
                _DATE.get(),
                b"connection: close\r\n\r\n",
                body,
            )
        )
        if self._task is None:
            self._send_refusal()

    def _send_refusal(self) -> None:
        if self._refusal is not None and not self.closing:
            self.closing = True
            self.write(self._refusal)
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self._task is None and not self._queue


class HttpServer:
    """The listening socket, its connections, and a graceful stop."""

    def __init__(
        self, handler: Handler, *, client_timeout: float, max_body: int, on_refused: RefusalHook | None = None
    ) -> None:
        self.handler = handler
        self.on_refused = on_refused
        self.client_timeout = client_timeout
        self.max_body = max_body
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str, port: int, *, backlog: int = 1024) -> None:
        self._server = await self.loop.create_server(
            lambda: HttpConnection(self), host, port, backlog=backlog, reuse_address=True
        )

    async def shutdown(self, drain_s: float) -> None:
        """Stop accepting, close idle connections, let in-flight answers finish (bounded)."""
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.closing = True
            if c.idle:
                c._close()
        deadline = self.loop.time() + drain_s
        while any(not c.idle for c in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = [c._task for c in self.connections if c._task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for c in list(self.connections):
            c._close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
