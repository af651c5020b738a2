"""The data plane's HTTP/1.1 server: one asyncio protocol per connection on httptools' parser.

Why not aiohttp's server (the admin listener still uses it): on the request path its
per-request machinery (request and response objects, multidicts, the router, the
payload writer) cost more CPU than everything aigw itself does. Here a request is parsed
by llhttp (C, via httptools), handed to the handler as one small :class:`Request` as soon
as its head is in, and its answer goes out in one ``transport.write`` — head and body
together.

What this module guarantees:
- limits: a header line (8,190 bytes) and the whole head (64 KiB, 100 headers) are
  counted as the bytes arrive, and refused with 431 the moment either is passed; the URL;
  the body (413); one deadline from the end of the last answer to the end of the next
  request's head (idle keep-alive and slowloris alike) and one for the body (408);
- the handler sees the head first and asks for the body with :meth:`Request.read_body`:
  a request refused before that (no key, no route) never has its body read — a short
  rest is discarded, a long one closes the connection after the answer;
- HTTP/1.0 and 1.1 keep-alive, pipelining (answered in order), ``Expect: 100-continue``
  (answered when the body is asked for), chunked request bodies, HEAD answered without a
  body;
- anything llhttp refuses — bad framing, smuggling shapes (two lengths, length plus
  chunked), bytes that are not HTTP — gets the API's JSON error and the connection
  closed, without echoing a byte of the request;
- a client that goes away cancels its request's handler (the pipeline records a 499);
- back-pressure (:mod:`proxy.flow_control`): reading stops while the client is not taking
  its answers, and a stream waits for a slow client instead of buffering;
- at most ``max_connections`` connections: past it a new one is closed at once; running
  out of file descriptors neither spins nor stops the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import httptools

from .errors import GatewayError, error_body, too_large
from .flow_control import BODY, DONE, QUEUED, FlowControl
from .heads import JSON, request_id_line
from .metrics import Metrics

log = logging.getLogger("aigw")

MAX_HEADER_LINE = 8190
MAX_HEADERS_BYTES = 64 * 1024
MAX_HEADERS = 100
#: An unread request body at most this long (after an answer that did not need it) is read
#: and dropped, keeping the connection; a longer one closes the connection instead.
DISCARD_MAX = 256 * 1024
#: The default cap on open client connections (``[gateway] max_connections``).
MAX_CONNECTIONS = 10_000
#: Running out of file descriptors is logged at most this often.
FD_LOG_EVERY_S = 60.0

_REASONS = {s.value: s.phrase for s in HTTPStatus}

_HEAD_TOO_LARGE = "the request head is too large (8190 bytes a line, 64 KiB and 100 headers in all); send less"


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


def request_timeout(seconds: float) -> GatewayError:
    return GatewayError(
        408,
        "invalid_request_error",
        "request_timeout",
        f"the request body did not arrive within {seconds:g} s; send it at once",
    )


class Request:
    """One request, handed over once its head is in, and the way to answer it.

    ``headers`` has the names lower-cased once, when the head is parsed (repeated headers
    joined with ", "); ``raw_headers`` keeps each pair as it came, for forwarding.
    The body arrives through :meth:`read_body`.
    """

    __slots__ = (
        "_chunks",
        "_discard",
        "_error",
        "_waiter",
        "body",
        "complete",
        "conn",
        "expect_continue",
        "head_only",
        "headers",
        "keep_alive",
        "length",
        "method",
        "path",
        "query",
        "raw_headers",
        "received",
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
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.path, self.query = split_target(target)
        self.version = version
        self.raw_headers = raw_headers
        self.headers = headers
        self.keep_alive = keep_alive
        self.head_only = method == "HEAD"
        self.started = False
        cl = headers.get("content-length")
        #: The announced body length, or -1 (chunked, or none announced).
        self.length = int(cl) if cl is not None and cl.strip().isdigit() else -1
        self.expect_continue = False
        #: Every byte of the body is in (or there is none).
        self.complete = False
        self.received = 0
        self.body = b""
        self._chunks: list[bytes] = []
        self._discard = False
        self._error: GatewayError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ the body

    async def read_body(self) -> bytes:
        """The whole body: at most the server's ``max_body`` (413), within its client timeout (408).

        Only now is the body read from the connection (``100 Continue`` is sent if the
        client waits for one): a handler that refuses the request first never reads it.
        """
        conn = self.conn
        whole = self.body_now()
        if whole is not None:
            return whole
        if self.expect_continue and not self.received:
            self.expect_continue = False
            conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._waiter = conn.loop.create_future()
        conn.want_body()
        timeout = conn.server.client_timeout
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            conn.closing = True
            raise request_timeout(timeout) from None
        finally:
            self._waiter = None
        whole = self.body_now()  # complete now (an error was raised by the waiter)
        assert whole is not None
        return whole

    def body_now(self) -> bytes | None:
        """The whole body if it is in already (the usual case: it came with the head), else
        None and :meth:`read_body` waits for it. Raises what ``read_body`` would."""
        if self._error is not None:
            raise self._error
        max_body = self.conn.server.max_body
        if self.length > max_body:
            raise too_large(max_body)
        if not self.complete:
            return None
        if self._chunks:
            self.body = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks = []
        return self.body

    def _add_body(self, data: bytes) -> None:
        self.received += len(data)
        if self._discard:
            if self.received > DISCARD_MAX:
                self.conn.closing = True
                self.conn.close()
            return
        if self.received > self.conn.server.max_body:
            self._fail(too_large(self.conn.server.max_body))
            raise _Refuse
        self._chunks.append(data)

    def _end_body(self) -> None:
        self.complete = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, err: GatewayError) -> None:
        """The body cannot be read to its end: whoever waits for it gets ``err``, and the
        connection closes after the answer (the next request's start is unknown)."""
        self._error = err
        self._chunks = []
        conn = self.conn
        conn.closing = True
        conn._broken = True
        if conn.flow is not None:
            conn.flow.hold(DONE)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(err)

    def _reusable(self) -> bool:
        """After the answer, the connection can go on: the body is in or short enough to drop."""
        if self.complete:
            return True
        return self._error is None and 0 <= self.length - self.received <= DISCARD_MAX

    # ------------------------------------------------------------ answering

    def respond(self, status: int, head: bytes, body: bytes, *, close: bool = False) -> None:
        """The whole answer in one write: ``head`` is header lines, framing is added here."""
        self.started = True
        conn = self.conn
        keep = self.keep_alive and not close and not conn.closing and self._reusable()
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
        if not self.keep_alive or conn.closing or not self._reusable():
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
        self.write_now(data)
        await self.conn.drain()

    def write_now(self, data: bytes) -> None:
        """One stream chunk without waiting: for a caller that knows the client is reading
        (not paused), so a chunk costs no coroutine of its own."""
        if not data or self.head_only:
            return
        conn = self.conn
        if conn.lost:
            raise ConnectionResetError("client closed the connection")
        conn.write(self._chunk(data))

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
    """One client connection: parse, queue, answer in order, enforce the limits and deadlines."""

    # One per open client connection (thousands with slow requests in flight): slots, not a
    # __dict__ that grows to ~1.2 KB with these two dozen attributes.
    __slots__ = (
        "_broken",
        "_completed",
        "_deadline",
        "_hbytes",
        "_head_len",
        "_headers",
        "_in_head",
        "_line_len",
        "_queue",
        "_raw",
        "_refusal",
        "_req",
        "_task",
        "_timer",
        "_upgrade_need",
        "_upgrade_req",
        "_url",
        "closing",
        "flow",
        "loop",
        "lost",
        "parser",
        "server",
        "transport",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False  # close once the current answer is written
        self.lost = False
        self._queue: deque[Request] = deque()
        self._task: asyncio.Task[None] | None = None
        # the message being parsed
        self._url = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._headers: dict[str, str] | None = None  # once the head is complete
        self._hbytes = 0
        self._in_head = False  # a head has begun and is not complete
        self._head_len = 0  # bytes of that head so far
        self._line_len = 0  # bytes of its unfinished line so far
        self._completed = 0  # messages that ended in the read being parsed
        self._req: Request | None = None  # the request whose body is being parsed
        self._upgrade_need = -1  # body bytes still to read after an Upgrade request's head
        self._upgrade_req: Request | None = None
        #: The answer to bytes we refused, sent once the requests before them are answered.
        self._refusal: bytes | None = None
        #: A body could not be parsed to its end (too large): nothing more is read.
        self._broken = False
        # one lazy timer: ``_deadline`` moves, the timer re-arms itself only when it fires
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass of it
        self.transport = transport
        self.flow = FlowControl(transport)
        server = self.server
        if not server.admit(self):
            self.lost = True
            transport.abort()  # at the cap: closed at once, nothing read or written
            return
        self._set_deadline(server.client_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.forget(self)
        if self.flow is not None:
            self.flow.connection_lost()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()  # the pipeline records a 499 and stops the vendor call
        self._queue.clear()

    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.pause_writing()

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.resume_writing()

    @property
    def paused(self) -> bool:
        """The client is not taking what was written (the write buffer is above its mark)."""
        return self.flow is not None and self.flow.write_paused

    async def drain(self) -> None:
        if self.lost or self.flow is None:
            raise ConnectionResetError("client closed the connection")
        await self.flow.drain()

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.lost:
            t.write(data)

    def want_body(self) -> None:
        """The handler asked for the body: read on."""
        if self.flow is not None:
            self.flow.release(BODY)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self._broken:
            return  # refused: nothing after the bad bytes is read
        if self._upgrade_need >= 0:
            self._feed_upgrade_body(data)
            return
        self._completed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._after_upgrade(data[exc.args[0] :] if exc.args else b"")
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _Refuse):
                return
            self._refuse(
                400,
                "the request is not valid HTTP/1.1 (request line, a header or the framing); fix the client",
                "bad_http_request",
            )
            return
        req = self._req
        if req is not None and req._waiter is None and not req._discard and self.flow is not None:
            self.flow.hold(BODY)  # a body is due: read it only once the handler asks (read_body)
        if self._in_head:
            self._count_head(data)

    def _count_head(self, data: bytes) -> None:
        """Bound a head that is still arriving, before the parser has buffered much of it.

        httptools hands a header over only once its line is complete (and builds it by
        appending each read), so a line that never ends would be kept whole. When a
        message ended earlier in this read, where the new head began in it is unknown:
        what the parser reported is counted then, and the next read counts in full.
        """
        if self._completed:
            self._head_len = len(self._url) + self._hbytes
            self._line_len = 0
        else:
            self._head_len += len(data)
            nl = data.rfind(b"\n")
            self._line_len = self._line_len + len(data) if nl < 0 else len(data) - nl - 1
        if self._head_len > MAX_HEADERS_BYTES or self._line_len > MAX_HEADER_LINE:
            self._refuse(431, _HEAD_TOO_LARGE, "request_header_fields_too_large")

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._raw = []
        self._headers = None
        self._hbytes = 0
        self._in_head = True
        self._head_len = 0
        self._line_len = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_HEADER_LINE:
            self._refuse(414, "the request URL is longer than 8190 bytes; shorten it", "uri_too_long")
            raise _Refuse

    def on_header(self, name: bytes, value: bytes) -> None:
        self._hbytes += len(name) + len(value) + 4
        if (
            len(name) + len(value) > MAX_HEADER_LINE
            or self._hbytes > MAX_HEADERS_BYTES
            or len(self._raw) >= MAX_HEADERS
        ):
            self._refuse(431, _HEAD_TOO_LARGE, "request_header_fields_too_large")
            raise _Refuse
        if not self._in_head:
            return  # a chunked body's trailers: never merged into the request's head
        self._raw.append((name.lower(), value))  # lower case once, here

    def on_headers_complete(self) -> None:
        self._in_head = False
        headers: dict[str, str] = {}
        for name, value in self._raw:
            k = name.decode("latin-1")
            v = value.decode("latin-1")
            headers[k] = headers[k] + ", " + v if k in headers else v
        self._headers = headers
        expect = headers.get("expect", "").strip().lower()
        if expect and expect != "100-continue":
            self._refuse(417, "only 'Expect: 100-continue' is supported; drop the Expect header", "expectation_failed")
            raise _Refuse
        parser = self.parser
        req = Request(
            self,
            parser.get_method().decode("latin-1"),
            self._url,
            parser.get_http_version(),
            self._raw,
            headers,
            parser.should_keep_alive(),
        )
        # Sent only when the handler asks for the body, and only if none of it has come
        # yet: a client that waits gets its go-ahead once the request passed the checks.
        req.expect_continue = bool(expect) and req.version == "1.1"
        self._req = req
        self._enqueue(req)

    def on_body(self, body: bytes) -> None:
        req = self._req
        if req is not None:
            req._add_body(body)

    def on_message_complete(self) -> None:
        self._completed += 1
        self._in_head = False
        req, self._req = self._req, None
        if req is not None:
            req._end_body()
            if self.flow is not None:
                self.flow.release(BODY)

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
        need = max(req.length, 0)
        self._upgrade_need = need
        if need == 0:
            return  # nothing to read; any further bytes are ignored
        # llhttp counted the request complete at its head: its body is read here instead
        req.complete = False
        self._upgrade_req = req
        if self.flow is not None:
            self.flow.hold(BODY)
        if rest:
            self._feed_upgrade_body(rest)

    def _feed_upgrade_body(self, data: bytes) -> None:
        req = self._upgrade_req
        if req is None or self._upgrade_need <= 0:
            return  # everything after the answered upgrade request is ignored
        part = data[: self._upgrade_need]
        self._upgrade_need -= len(part)
        with contextlib.suppress(_Refuse):
            req._add_body(part)
        if self._upgrade_need == 0:
            self._upgrade_req = None
            req._end_body()

    # ------------------------------------------------------------ running the handler

    def _enqueue(self, req: Request) -> None:
        self._queue.append(req)
        if self._task is None:
            self._deadline = 0.0  # being answered: the handler's own timeouts apply
            self._task = self.loop.create_task(self._serve())
        elif self.flow is not None:
            self.flow.hold(QUEUED)  # requests wait: read no more until they are answered

    async def _serve(self) -> None:
        handler = self.server.handler
        flow = self.flow
        assert flow is not None
        try:
            while self._queue and not self.lost:
                req = self._queue.popleft()
                if not self._queue:
                    flow.release(QUEUED)
                try:
                    await handler(req)
                except asyncio.CancelledError:
                    raise
                except (ConnectionResetError, BrokenPipeError):  # the client left mid-answer
                    self.closing = True
                except Exception:  # the pipeline answers its own errors: this is a bug
                    log.exception("unexpected error answering %s %s", req.method, req.path)
                    self.closing = True
                if not req.started:  # a bug, or a stage forgot to answer
                    req.respond(
                        500,
                        JSON,
                        error_body(
                            "the gateway failed to handle this request; see gateway.log", "api_error", "internal_error"
                        ),
                        close=True,
                    )
                if self.closing:
                    self.close()
                    return
                if not req.complete:  # answered without its body: drop the (short) rest
                    req._discard = True
                    req._chunks = []
                    flow.release(BODY)
                if flow.write_paused:  # the client is not reading: answer no more until it does
                    await flow.drain()
        except asyncio.CancelledError:
            return
        except ConnectionResetError:
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
        # idle keep-alive, a head that never finished, a body dropped too slowly: nothing to answer
        self.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer a request we will not read to the end, and close the connection.

        Requests that came whole before the bad bytes are answered first, in order.
        """
        if self.lost or self._refusal is not None:
            return
        if self.flow is not None:
            self.flow.hold(DONE)
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
        self.close()

    def close(self) -> None:
        """Close once what was written is sent."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self._task is None and not self._queue


#: File descriptors kept free for what connections need besides their own socket (vendor
#: connections, the store, the log): past ``RLIMIT_NOFILE`` less this, new clients are
#: refused like past ``max_connections``, so the ones being served can still reach a vendor.
FD_RESERVE = 64


def _fd_cap() -> int:
    """Client connections the process's descriptor limit leaves room for."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return MAX_CONNECTIONS * 100
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS * 100
    return max(1, (soft - FD_RESERVE) // 2)


class HttpServer:
    """The listening socket, its connections, the connection cap and a graceful stop."""

    def __init__(
        self,
        handler: Handler,
        *,
        client_timeout: float,
        max_body: int,
        on_refused: RefusalHook | None = None,
        max_connections: Callable[[], int] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.handler = handler
        self.on_refused = on_refused
        self.client_timeout = client_timeout
        self.max_body = max_body
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpConnection] = set()
        #: Open connections and those refused at the cap (or the descriptor limit).
        self.metrics = metrics or Metrics()
        self._max_connections = max_connections or (lambda: MAX_CONNECTIONS)
        self._fd_cap = _fd_cap()
        self._refusal_logged = -FD_LOG_EVERY_S
        self._server: asyncio.AbstractServer | None = None

    def admit(self, conn: HttpConnection) -> bool:
        """Count a new connection in, or refuse it when the cap is reached."""
        cap = min(self._max_connections(), self._fd_cap)
        metrics = self.metrics
        if len(self.connections) < cap:
            self.connections.add(conn)
            metrics.connections_open = len(self.connections)
            return True
        metrics.connections_refused += 1
        now = self.loop.time()
        if now - self._refusal_logged >= FD_LOG_EVERY_S:
            self._refusal_logged = now
            why = "max_connections" if cap == self._max_connections() else "the file descriptor limit (ulimit -n)"
            log.warning(
                "refusing new client connections: %d open, the cap is %d (%s); %d refused so far",
                len(self.connections),
                cap,
                why,
                metrics.connections_refused,
            )
        return False

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        self.metrics.connections_open = len(self.connections)

    async def start(self, host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False) -> None:
        """``reuse_port``: several worker processes listen on one port (the kernel balances)."""
        self._server = await self.loop.create_server(
            lambda: HttpConnection(self), host, port, backlog=backlog, reuse_address=True, reuse_port=reuse_port or None
        )
        self._quiet_accept_errors()

    def _quiet_accept_errors(self) -> None:
        """asyncio's own loop reports every failed ``accept`` (EMFILE: out of descriptors) to
        the loop's exception handler, once a second per listening socket, forever: logged
        once a minute here instead. (uvloop's libuv answers EMFILE itself, without a word.)"""
        loop = self.loop
        previous = loop.get_exception_handler()
        last = -FD_LOG_EVERY_S

        def handler(lp: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
            nonlocal last
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                now = lp.time()
                if now - last >= FD_LOG_EVERY_S:
                    last = now
                    log.warning(
                        "cannot accept client connections: %s; serving the open ones (raise ulimit -n)",
                        os.strerror(exc.errno or 0),
                    )
                return
            if previous is not None:
                previous(lp, context)
            else:
                lp.default_exception_handler(context)

        loop.set_exception_handler(handler)

    async def shutdown(self, drain_s: float) -> None:
        """Stop accepting, close idle connections, let in-flight answers finish (bounded)."""
        if self._server is not None:
            self._server.close()
        for c in list(self.connections):
            c.closing = True
            if c.idle:
                c.close()
        deadline = self.loop.time() + drain_s
        while any(not c.idle for c in self.connections) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = [c._task for c in self.connections if c._task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for c in list(self.connections):
            c.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
