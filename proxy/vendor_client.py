"""The HTTP/1.1 client that talks to vendors: a keep-alive pool of asyncio protocols on httptools.

Why not aiohttp's client: it was the largest single cost on the request path (a third of
the gateway's CPU in the profile), most of it per-request objects we never use — cookie
jars, tracing hooks, redirects, multidicts, a payload writer. A vendor call here is one
``transport.write`` of head and body, llhttp parsing the answer in C, and the body
handed over as the bytes that arrived.

Kept from before, because the relay's semantics depend on them:
- one pool for every vendor, no per-host cap, idle connections reused LIFO and closed
  after :data:`KEEPALIVE_S`; a pooled connection the vendor had closed just as we reused
  it is retried once on a fresh one (nothing was answered, nothing billed);
- a connect deadline and a read deadline (no byte for ``timeout_s``) that a slow
  *client* never trips, because the deadline only runs while we wait for the vendor;
- answers framed by length, chunks or the connection's end; gzip/deflate decoded;
- a vendor that sends faster than the client reads is paused (bounded buffering);
- TLS with the system's trust store for ``https://`` services.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

#: Idle pooled connections are closed after this long.
KEEPALIVE_S = 60.0
#: Unread answer bytes buffered before the vendor's socket is paused.
HIGH_WATER = 1024 * 1024


class UpstreamError(Exception):
    """A vendor call that failed; ``reason`` is the ``aigw_upstream_errors_total`` label."""

    reason = "broken"


class ConnectFailed(UpstreamError):
    reason = "connect"


class ConnectTimeout(UpstreamError):
    reason = "connect_timeout"


class ReadTimeout(UpstreamError, TimeoutError):
    reason = "timeout"


class Disconnected(UpstreamError):
    """The vendor closed the connection or broke the framing."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    #: The ``host`` header line, ready to send.
    host_line: bytes
    #: The service address's own path (``https://api.example.com/v1`` → ``/v1``).
    base_path: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


@lru_cache(maxsize=256)
def origin_of(address: str) -> Origin:
    """A service address split once (it is validated by the store: http(s) with a host)."""
    parts = urlsplit(address)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default = 443 if scheme == "https" else 80
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    host_hdr = shown if port == default else f"{shown}:{port}"
    return Origin(scheme, host, port, b"host: " + host_hdr.encode("idna") + b"\r\n", parts.path.rstrip("/"))


class VendorConnection(asyncio.Protocol):
    """One connection to a vendor, carrying one exchange at a time."""

    def __init__(self, pool: VendorPool, key: tuple[str, str, int]) -> None:
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self.reused = False
        # the current answer
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.got_bytes = False
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: UpstreamError | None = None
        self._framed = False  # by length or chunks (else the connection's end frames it)
        self._inflate: zlib._Decompress | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ transport events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.head_done and not self.done and not self._framed and self._error is None:
            self._finish()  # framed by the connection's end: this is the end
        elif not self.done and self._error is None:
            self._error = Disconnected(
                "the vendor closed the connection" if exc is None else f"the connection broke ({type(exc).__name__})"
            )
        self._wake()

    def data_received(self, data: bytes) -> None:
        self._last = self.loop.time()
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._error is None:
                self._error = Disconnected(f"the vendor's answer is not valid HTTP ({exc})")
            self.abort()
            self._wake()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))  # lower case once, here

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            return
        self.status = status
        self.head_done = True
        encoding = b""
        for name, value in self.headers:
            ln = name.lower()
            if ln == b"content-length" or ln == b"transfer-encoding":
                self._framed = True
            elif ln == b"content-encoding":
                encoding = value.strip().lower()
        if encoding in (b"gzip", b"x-gzip", b"deflate"):
            self._inflate = zlib.decompressobj(47)  # gzip or zlib header, detected
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._inflate is not None:
            try:
                body = self._inflate.decompress(body)
            except zlib.error:
                self._error = Disconnected("the vendor's compressed answer is corrupt")
                self.abort()
                return
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim (1xx) answer
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    def _finish(self) -> None:
        if self._inflate is not None:
            rest = self._inflate.flush()
            if rest:
                self._chunks.append(rest)
        self.done = True
        self._wake()

    # ------------------------------------------------------------ waiting, with the read deadline

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        """Until the parser has news; :class:`ReadTimeout` after ``timeout_s`` of vendor silence."""
        loop = self.loop
        self._last = loop.time()  # the deadline runs only while we wait for the vendor
        self._waiter = loop.create_future()
        due = self._last + self._timeout
        timer = self._timer
        if timer is None or timer.when() > due:  # a timer left from a longer deadline is too late
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._on_timer)
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        w = self._waiter
        if w is None or w.done():
            return
        due = self._last + self._timeout
        if self.loop.time() >= due:
            w.set_exception(ReadTimeout(f"nothing from the vendor for {self._timeout:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._on_timer)

    # ------------------------------------------------------------ the exchange

    def send(self, data: bytes, timeout: float) -> None:
        self._timeout = timeout
        self.status = 0
        self.headers = []
        self.got_bytes = False
        self.head_done = self.done = self.keep_alive = self._framed = False
        self._chunks.clear()
        self._buffered = 0
        self._inflate = None
        self._error = None
        assert self.transport is not None
        self.transport.write(data)

    async def read_head(self) -> None:
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read_chunk(self) -> bytes:
        """The next bytes of the answer as they arrived (several reads joined); ``b""`` at its end."""
        while not self._chunks:
            if self.done:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join([chunks.popleft() for _ in range(len(chunks))])
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def read_all(self) -> bytes:
        while not self.done:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        chunks.clear()
        return data

    def header(self, name: bytes) -> bytes:
        """The first value of a header (``name`` lower case), or ``b""``."""
        for k, v in self.headers:
            if len(k) == len(name) and k.lower() == name:
                return v
        return b""

    def abort(self) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.lost and not self._chunks and self._error is None


class VendorPool:
    """Every vendor connection the gateway holds, keyed by (scheme, host, port)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, str, int], list[VendorConnection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._sweeper = self.loop.call_later(KEEPALIVE_S / 2, self._sweep)
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def _connect(self, origin: Origin, timeout: float) -> VendorConnection:
        key = origin.key
        try:
            async with asyncio.timeout(timeout):
                _, conn = await self.loop.create_connection(
                    lambda: VendorConnection(self, key),
                    origin.host,
                    origin.port,
                    ssl=self._tls() if origin.scheme == "https" else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(
                f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            ) from None
        return conn

    async def exchange(
        self, origin: Origin, request: bytes, *, connect_timeout: float, read_timeout: float
    ) -> VendorConnection:
        """Send ``request`` (head and body) and return the connection once the answer's head is in.

        The caller reads the body from the connection, then :meth:`release` it (or ``abort``).
        """
        idle = self._idle.get(origin.key)
        conn: VendorConnection | None = None
        while idle:
            c = idle.pop()
            if not c.lost and c.transport is not None and not c.transport.is_closing():
                conn = c
                conn.reused = True
                break
        for attempt in (0, 1):
            if conn is None:
                conn = await self._connect(origin, connect_timeout)
            try:
                conn.send(request, read_timeout)
                await conn.read_head()
                return conn
            except Disconnected:
                # A pooled keep-alive connection the vendor closed as we reused it: nothing was
                # answered, so one immediate retry on a fresh connection is safe.
                retry = conn.reused and not conn.got_bytes and attempt == 0
                conn.abort()
                if not retry:
                    raise
                conn = None
            except BaseException:
                conn.abort()
                raise
        raise AssertionError("unreachable")

    def release(self, conn: VendorConnection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = self.loop.time()
            self._idle.setdefault(conn.key, []).append(conn)
        else:
            conn.abort()

    def _sweep(self) -> None:
        cutoff = self.loop.time() - KEEPALIVE_S
        for key, conns in list(self._idle.items()):
            keep = [c for c in conns if not c.lost and c.idle_since > cutoff]
            for c in conns:
                if c not in keep:
                    c.abort()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if not self._closed:
            self._sweeper = self.loop.call_later(KEEPALIVE_S / 2, self._sweep)

    async def close(self) -> None:
        self._closed = True
        self._sweeper.cancel()
        for conns in self._idle.values():
            for c in conns:
                c.abort()
        self._idle.clear()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # let the transports' close callbacks run
