"""The HTTP/1.1 client that talks to vendors: a keep-alive pool of asyncio protocols on httptools.

Why not aiohttp's client: it was the largest single cost on the request path (a third of
the gateway's CPU in the profile), most of it per-request objects we never use — cookie
jars, tracing hooks, redirects, multidicts, a payload writer. A vendor call here is one
``transport.write`` of head and body, llhttp parsing the answer in C, and the body
handed over as the bytes that arrived.

What the relay's semantics depend on:
- one pool for every vendor, keyed by (scheme, host, port, proxy, ca_file), no per-host
  cap, idle connections reused LIFO and closed after :data:`KEEPALIVE_S`; a pooled
  connection the vendor had closed just as we reused it is retried once on a fresh one
  (nothing was answered, nothing billed);
- a connect deadline and a read deadline (no byte for ``timeout_s``) that a slow
  *client* never trips, because the deadline only runs while we wait for the vendor;
  interim ``1xx`` answers do not count as bytes: the final head is due ``timeout_s``
  after the request, however many interim answers come first; a shorter first-byte
  deadline (``first_byte_timeout``) bounds the wait for the answer's very first byte;
- answers framed by length, chunks or the connection's end; gzip/deflate decoded (the
  only encodings asked for), any other ``Content-Encoding`` refused;
- a streamed answer from a vendor that sends faster than the client reads is paused
  (bounded buffering); a whole answer is read to its end, up to :data:`MAX_ANSWER`;
- a hostile vendor cannot make the gateway hold more than :data:`MAX_HEAD` of head or
  :data:`MAX_ANSWER` of (decoded) answer, nor smuggle a second answer after the first;
- TLS with the system's trust store for ``https://`` services, plus a service's
  ``ca_file``; forward proxies from the service's ``proxy`` or the environment;
- the time an exchange waited on the vendor (connecting, then from each wait's start to
  the vendor's bytes arriving) is counted in ``waited_ns``, so ``aigw_overhead_seconds``
  can leave it out: two clock reads per wait, none when the bytes were already in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from time import perf_counter_ns
from urllib.parse import urlsplit

import httptools

from .outbound import Proxy, ProxyChooser, ProxyConfigError
from .upstream_errors import (
    ConnectFailed,
    ConnectTimeout,
    Disconnected,
    FirstByteTimeout,
    ProxyFailed,
    ReadTimeout,
    TLSFailed,
    UpstreamError,
    VendorFault,
)

#: Idle pooled connections are closed after this long.
KEEPALIVE_S = 60.0
#: Unread streamed bytes buffered before the vendor's socket is paused.
HIGH_WATER = 1024 * 1024
#: The largest answer read whole (non-streamed), after decoding gzip/deflate.
MAX_ANSWER = 64 * 1024 * 1024
#: An answer's head: all of it, one header line, the number of header lines.
MAX_HEAD = 64 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_HEADERS = 100
#: Interim (1xx) answers accepted before the final one.
MAX_INTERIM = 10
#: Sent with every request: the encodings :meth:`VendorConnection.on_body` decodes.
ACCEPT_ENCODING = b"accept-encoding: gzip, deflate\r\n"
_DECODED = {b"gzip": 47, b"x-gzip": 47, b"deflate": 15}  # 47: gzip or zlib, told by the header

PoolKey = tuple[str, str, int, str, str]


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

    @property
    def authority(self) -> bytes:
        """``host:port`` as a CONNECT target and in an absolute-form request."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"{shown}:{self.port}".encode("idna")


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


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing: ``error`` (or None: discard the rest)."""

    def __init__(self, error: UpstreamError | None) -> None:
        self.error = error


def _switched() -> VendorFault:
    return VendorFault(
        "the vendor tried to switch protocols (101 Switching Protocols); the gateway speaks "
        "HTTP/1.1 to vendors: check the service's address",
        "bad_answer",
    )


class VendorConnection(asyncio.Protocol):
    """One connection to a vendor, carrying one exchange at a time."""

    # One per request in flight (and per idle pooled connection): slots, not a __dict__
    # that grows to ~1.6 KB with these three dozen attributes.
    __slots__ = (
        "_buffered",
        "_chunks",
        "_deflate_probe",
        "_error",
        "_first_byte_timeout",
        "_framed",
        "_head_bytes",
        "_head_seen",
        "_inflate",
        "_interim",
        "_last",
        "_length",
        "_paused",
        "_timeout",
        "_timer",
        "_waiter",
        "_whole",
        "_woke_ns",
        "done",
        "got_bytes",
        "head_done",
        "headers",
        "idle_since",
        "keep_alive",
        "key",
        "loop",
        "lost",
        "parser",
        "reused",
        "status",
        "transport",
        "waited_ns",
    )

    def __init__(self, pool: VendorPool, key: PoolKey) -> None:
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
        self._whole = False  # read_all: read to the end without pausing, up to MAX_ANSWER
        self._head_seen = 0
        self._head_bytes = 0
        self._interim = 0
        self._length = -1
        self._error: UpstreamError | None = None
        self._framed = False  # by length or chunks (else the connection's end frames it)
        self._inflate: zlib._Decompress | None = None
        self._deflate_probe = False  # "deflate": zlib-wrapped or raw, told by the first bytes
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._first_byte_timeout = 0.0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        #: Nanoseconds this exchange waited on the vendor (set by the pool's ``exchange``).
        self.waited_ns = 0
        #: When the current wait was ended by the vendor's news (0: not yet).
        self._woke_ns = 0

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
        if self.done or self._error is not None:
            # Bytes after a complete answer (or after we gave up on it) are no answer to
            # anything we asked: drop them and the connection with them.
            self.abort()
            return
        self.got_bytes = True
        if self.head_done:
            self._last = self.loop.time()
            self._feed(data)
            return
        # Until the final head is in, bytes do not move the deadline (interim answers would
        # hold it open forever) and at most MAX_HEAD of them are parsed as a head.
        room = MAX_HEAD - self._head_seen
        self._head_seen += len(data)
        if len(data) <= room:
            self._feed(data)
        else:
            self._feed(data[:room])
            if not self.head_done and self._error is None:
                self._fail(VendorFault(f"the vendor's answer head is longer than {MAX_HEAD // 1024} KiB", "bad_head"))
            elif self._error is None and not self.done:
                self._feed(data[room:])
        if self.head_done:
            self._last = self.loop.time()

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
            if self._chunks:  # one wake for every body chunk of this read, not one each
                self._wake()
        except httptools.HttpParserUpgrade:
            self._fail(_switched())
        except httptools.HttpParserError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                if stop.error is None:  # a second answer after a complete one: discarded
                    self.abort()
                else:
                    self._fail(stop.error)
            else:
                self._fail(Disconnected(f"the vendor's answer is not valid HTTP ({exc})"))

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None:
            self._error = error
        self.abort()
        self._wake()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.done:
            raise _Stop(None)
        self.headers = []
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        if size > MAX_HEADER_LINE:
            raise _Stop(
                VendorFault(
                    f"the vendor sent a header line longer than {MAX_HEADER_LINE // 1024} KiB "
                    f"({name[:40].decode('latin-1')!r})",
                    "bad_head",
                )
            )
        if len(self.headers) >= MAX_HEADERS:
            raise _Stop(VendorFault(f"the vendor sent more than {MAX_HEADERS} header lines", "bad_head"))
        self._head_bytes += size
        self.headers.append((name.lower(), value))  # lower case once, here

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 101:
            raise _Stop(_switched())
        if 100 <= status < 200:  # an interim answer: the real one follows
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise _Stop(VendorFault(f"the vendor sent more than {MAX_INTERIM} interim (1xx) answers", "bad_answer"))
            return
        self.status = status
        self.head_done = True
        encoding = b""
        for name, value in self.headers:
            ln = name.lower()
            if ln == b"content-length":
                self._framed = True
                with contextlib.suppress(ValueError):
                    self._length = int(value)
            elif ln == b"transfer-encoding":
                self._framed = True
            elif ln == b"content-encoding":
                encoding = value.strip().lower()
        if encoding and encoding != b"identity":
            wbits = _DECODED.get(encoding)
            if wbits is None:
                shown = encoding[:40].decode("latin-1")
                raise _Stop(
                    VendorFault(
                        f"the vendor answered with Content-Encoding {shown!r}, which the gateway does "
                        "not decode (it asks for gzip or deflate); check the vendor, or a proxy in "
                        "front of it, that re-encodes answers",
                        "encoding",
                    )
                )
            self._inflate = zlib.decompressobj(wbits)
            self._deflate_probe = wbits == 15
        self._wake()

    def on_body(self, body: bytes) -> None:
        """Called once per HTTP chunk: a streamed answer's every event, often ten to a read.
        So it only collects; ``_feed`` wakes the reader once the read is parsed."""
        if self._inflate is not None:
            body = self._decode(body)
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER:
            self._over_high_water()

    def _over_high_water(self) -> None:
        if self._buffered > MAX_ANSWER:
            raise _Stop(self._too_large())
        if not self._paused and not self._whole and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _decode(self, data: bytes) -> bytes:
        """Inflate, never past :data:`MAX_ANSWER` (a small bomb must not become gigabytes)."""
        d = self._inflate
        assert d is not None
        if self._deflate_probe:  # "deflate" is zlib-wrapped by the standard, raw by some servers
            self._deflate_probe = False
            if data and (data[0] & 0x0F != 8 or (len(data) > 1 and (data[0] << 8 | data[1]) % 31)):
                d = self._inflate = zlib.decompressobj(-15)
        room = MAX_ANSWER - self._buffered
        try:
            out = d.decompress(data, room + 1)
        except zlib.error:
            raise _Stop(
                VendorFault("the vendor's compressed answer is corrupt; check the vendor", "bad_answer")
            ) from None
        if len(out) > room:
            raise _Stop(self._too_large())
        return out

    def _too_large(self) -> VendorFault:
        return VendorFault(
            f"the vendor's answer is larger than {MAX_ANSWER // (1024 * 1024)} MiB (decoded), the "
            "most the gateway reads whole; ask for less (fewer inputs, smaller max_tokens) or stream it",
            "too_large",
        )

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim (1xx) answer
        self.keep_alive = self.parser.should_keep_alive()
        self._finish()

    def _finish(self) -> None:
        if self._inflate is not None:
            rest = self._inflate.flush()
            if len(rest) + self._buffered > MAX_ANSWER:
                self._error = self._too_large()
                self.abort()
                return
            if rest:
                self._chunks.append(rest)
        self.done = True
        self._wake()

    # ------------------------------------------------------------ waiting, with the read deadline

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            # Stamped as the news arrives, not when the waiting task runs again: the time
            # it then waits for the event loop is the gateway's, not the vendor's.
            self._woke_ns = perf_counter_ns()
            w.set_result(None)

    async def _wait(self) -> None:
        """Until the parser has news; :class:`ReadTimeout` after ``timeout_s`` of vendor silence."""
        loop = self.loop
        if self.head_done:  # before the head, the deadline runs from the request's send
            self._last = loop.time()  # the deadline runs only while we wait for the vendor
        self._waiter = loop.create_future()
        due = self._due()
        timer = self._timer
        if timer is None or timer.when() > due:  # a timer left from a longer deadline is too late
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._on_timer)
        self._woke_ns = 0
        began = perf_counter_ns()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self.waited_ns += (self._woke_ns or perf_counter_ns()) - began  # a timeout, a cancel: until now

    def _due(self) -> float:
        """When the vendor's silence becomes a timeout: the first-byte deadline until a byte came."""
        if not self.got_bytes and 0 < self._first_byte_timeout < self._timeout:
            return self._last + self._first_byte_timeout
        return self._last + self._timeout

    def _on_timer(self) -> None:
        self._timer = None
        w = self._waiter
        if w is None or w.done():
            return
        due = self._due()
        if self.loop.time() >= due:
            if not self.got_bytes and 0 < self._first_byte_timeout < self._timeout:
                w.set_exception(FirstByteTimeout(f"no answer from the vendor within {self._first_byte_timeout:g} s"))
            else:
                w.set_exception(ReadTimeout(f"nothing from the vendor for {self._timeout:g} s"))
        else:
            self._timer = self.loop.call_at(due, self._on_timer)

    # ------------------------------------------------------------ the exchange

    def send(self, data: bytes, timeout: float, first_byte_timeout: float = 0.0) -> None:
        self._timeout = timeout
        self._first_byte_timeout = first_byte_timeout
        self._last = self.loop.time()
        self.status = 0
        self.headers = []
        self.got_bytes = False
        self.head_done = self.done = self.keep_alive = self._framed = self._whole = False
        self._chunks.clear()
        self._buffered = self._head_seen = self._interim = 0
        self._length = -1
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
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        self._resume()
        return data

    async def read_all(self) -> bytes:
        """The whole answer, up to :data:`MAX_ANSWER` (else :class:`VendorFault`)."""
        if self._inflate is None and self._length > MAX_ANSWER:
            self._fail(self._too_large())
        self._whole = True
        self._resume()
        while not self.done:
            if self._error is not None:
                raise self._error
            await self._wait()
        chunks = self._chunks
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        chunks.clear()
        return data

    def _resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

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


class _TunnelReader(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT`` (its head only), then hands the socket over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head = bytearray()
        self.done: asyncio.Future[bytes] = loop.create_future()

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head and not self.done.done():
            self.done.set_result(bytes(self.head))
        elif len(self.head) > MAX_HEAD and not self.done.done():
            self.done.set_exception(ProxyFailed("the proxy's answer to CONNECT has an oversized head"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(bytes(self.head))


def _cert_problem(exc: ssl.SSLError, host: str) -> TLSFailed:
    """What is wrong with the vendor's TLS, in the verifier's own words."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = str(exc.verify_message or exc.reason or exc).rstrip(".")
        return TLSFailed(
            f"the TLS certificate of {host} was refused: {why}; set the service's ca_file to the "
            "PEM of the CA that signed it (or SSL_CERT_FILE for every vendor), or fix the "
            "vendor's certificate"
        )
    return TLSFailed(f"the TLS handshake with {host} failed: {exc.reason or exc}; check that the address speaks https")


class VendorPool:
    """Every vendor connection the gateway holds, keyed by (scheme, host, port, proxy, ca_file)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle: dict[PoolKey, list[VendorConnection]] = {}
        self._ssl: dict[tuple[str, int], ssl.SSLContext] = {}
        self._proxies = ProxyChooser(os.environ)
        self._routes: dict[tuple[str, str, str, int], Proxy | ProxyConfigError | None] = {}
        self._sweeper = self.loop.call_later(KEEPALIVE_S / 2, self._sweep)
        self._closed = False

    def _tls(self, ca_file: str) -> ssl.SSLContext:
        """The system's trust store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` included), plus ``ca_file``.

        Keyed by the file's modification time, so a renewed CA file is read again.
        """
        mtime = 0
        if ca_file:
            try:
                mtime = os.stat(ca_file).st_mtime_ns
            except OSError as exc:
                raise TLSFailed(f"cannot read the service's ca_file {ca_file}: {exc.strerror or exc}") from None
        ctx = self._ssl.get((ca_file, mtime))
        if ctx is None:
            ctx = ssl.create_default_context()
            if ca_file:
                try:
                    ctx.load_verify_locations(cafile=ca_file)
                except (OSError, ssl.SSLError) as exc:
                    raise TLSFailed(f"cannot load the service's ca_file {ca_file}: {exc}") from None
            self._ssl = {k: v for k, v in self._ssl.items() if k[0] != ca_file}
            self._ssl[(ca_file, mtime)] = ctx
        return ctx

    def _proxy_for(self, origin: Origin, setting: str) -> Proxy | None:
        key = (setting, origin.scheme, origin.host, origin.port)
        if key not in self._routes:
            try:
                self._routes[key] = self._proxies.choose(setting, origin.scheme, origin.host, origin.port)
            except ProxyConfigError as exc:
                self._routes[key] = exc
        found = self._routes[key]
        if isinstance(found, ProxyConfigError):
            raise ProxyFailed(f"{found}; fix the proxy setting")
        return found

    async def _connect(
        self, origin: Origin, key: PoolKey, proxy: Proxy | None, ca_file: str, timeout: float
    ) -> VendorConnection:
        tls = self._tls(ca_file) if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                if proxy is None:
                    _, conn = await self.loop.create_connection(
                        lambda: VendorConnection(self, key), origin.host, origin.port, ssl=tls
                    )
                    return conn
                return await self._via_proxy(origin, key, proxy, tls)
        except TimeoutError:
            if proxy is not None:
                raise ProxyFailed(
                    f"no connection through the proxy {proxy.shown} (from {proxy.source}) within {timeout:g} s; "
                    "check the proxy"
                ) from None
            raise ConnectTimeout(f"no connection within {timeout:g} s") from None
        except ssl.SSLError as exc:
            raise _cert_problem(exc, origin.host) from None
        except OSError as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from None

    async def _via_proxy(
        self, origin: Origin, key: PoolKey, proxy: Proxy, tls: ssl.SSLContext | None
    ) -> VendorConnection:
        """A connection through ``proxy``: plain for ``http://`` vendors, a CONNECT tunnel for https."""
        where = f"the proxy {proxy.shown} (from {proxy.source})"
        if tls is None:  # absolute-form requests on a plain connection to the proxy
            try:
                _, conn = await self.loop.create_connection(lambda: VendorConnection(self, key), proxy.host, proxy.port)
            except OSError as exc:
                raise ProxyFailed(f"cannot reach {where}: {exc.strerror or exc}; check the proxy") from None
            return conn
        try:
            transport, reader = await self.loop.create_connection(
                lambda: _TunnelReader(self.loop), proxy.host, proxy.port
            )
        except OSError as exc:
            raise ProxyFailed(f"cannot reach {where}: {exc.strerror or exc}; check the proxy") from None
        try:
            target = origin.authority
            transport.write(b"CONNECT %b HTTP/1.1\r\nhost: %b\r\n%b\r\n" % (target, target, proxy.auth_line))
            head = await reader.done
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            status = line.split(" ", 2)[1] if line.count(" ") >= 1 else ""
            if not status.isdigit() or not 200 <= int(status) < 300:
                shown = " ".join(line.split(" ")[1:])[:80] or "no answer"
                hint = (
                    "check the proxy's credentials in its URL"
                    if status == "407"
                    else "check that the proxy may reach the vendor"
                )
                raise ProxyFailed(f"{where} refused to open a tunnel to {origin.host}:{origin.port} ({shown}); {hint}")
            conn = VendorConnection(self, key)
            tls_transport = await self.loop.start_tls(transport, reader, tls, server_hostname=origin.host)
            if tls_transport is None:
                raise ProxyFailed(f"{where} closed the tunnel during the TLS handshake")
            tls_transport.set_protocol(conn)
            conn.connection_made(tls_transport)
            return conn
        except BaseException:
            transport.close()
            raise

    async def exchange(
        self,
        origin: Origin,
        request: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
        first_byte_timeout: float = 0.0,
        proxy: str = "",
        ca_file: str = "",
    ) -> VendorConnection:
        """Send ``request`` (head and body) and return the connection once the answer's head is in.

        ``proxy`` is the service's setting (empty: the environment's), ``ca_file`` the
        service's extra trusted certificates. ``first_byte_timeout`` (0 = none), when shorter
        than ``read_timeout``, bounds the wait for the answer's first byte. The caller reads the body from the
        connection, then :meth:`release` it (or ``abort``).
        """
        via = self._proxy_for(origin, proxy)
        key: PoolKey = (*origin.key, via.key if via is not None else "", ca_file if origin.scheme == "https" else "")
        if via is not None and origin.scheme == "http":  # absolute form, credentials for the proxy
            method, _, rest = request.partition(b" ")
            line, _, tail = rest.partition(b"\r\n")
            request = method + b" http://" + origin.authority + line + b"\r\n" + via.auth_line + tail
        idle = self._idle.get(key)
        conn: VendorConnection | None = None
        while idle:
            c = idle.pop()
            if not c.lost and c.transport is not None and not c.transport.is_closing():
                conn = c
                conn.reused = True
                break
        connect_ns = 0  # connecting (TCP, a proxy's tunnel, TLS) is waiting on the vendor too
        for attempt in (0, 1):
            if conn is None:
                began = perf_counter_ns()
                conn = await self._connect(origin, key, via, ca_file, connect_timeout)
                connect_ns += perf_counter_ns() - began
            conn.waited_ns = connect_ns
            try:
                conn.send(request, read_timeout, first_byte_timeout)
                await conn.read_head()
            except Disconnected:
                # A pooled keep-alive connection the vendor closed as we reused it: nothing was
                # answered, so one immediate retry on a fresh connection is safe.
                retry = conn.reused and not conn.got_bytes and attempt == 0
                conn.abort()
                if not retry:
                    raise
                conn = None
                continue
            except BaseException:
                conn.abort()
                raise
            if via is not None and origin.scheme == "http" and conn.status == 407:
                conn.abort()
                raise ProxyFailed(
                    f"the proxy {via.shown} (from {via.source}) refused the request (407 Proxy "
                    "Authentication Required); check the proxy's credentials in its URL"
                )
            return conn
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
