"""The bounded async load generator: raw HTTP/1.1 keep-alive connections on asyncio streams.

Used when ``wrk`` is not installed, in the smoke mode, and always for what wrk cannot
measure: time to the first streamed byte and many streams held open at once. It
speaks just enough HTTP/1.1 (Content-Length and chunked bodies) to time answers
precisely without a client library's own overhead in the numbers.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """Where to send the benchmark's requests, and the credential to send (``None`` = none)."""

    name: str
    host: str
    port: int
    path: str
    key: str | None = None
    #: More header lines, each ending in CRLF (Portkey's routing headers).
    headers: bytes = b""

    def request(self, body: bytes) -> bytes:
        auth = b"Authorization: Bearer " + self.key.encode() + b"\r\n" if self.key else b""
        auth += self.headers
        return (
            b"POST "
            + self.path.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.host.encode()
            + b":"
            + str(self.port).encode()
            + b"\r\nContent-Type: application/json\r\n"
            + auth
            + b"Content-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )


@dataclass
class Answer:
    status: int
    #: Seconds from sending the request to the first body byte, and to the end of the answer.
    ttfb: float
    total: float
    body: bytes
    #: With ``stamps``: when each SSE event arrived (one stamp per event in a chunk).
    stamps: list[float] = field(default_factory=list)


class StampedReader(asyncio.StreamReader):
    """A stream reader that notes when each read from the socket arrived.

    Parsing a buffer that holds many chunks takes microseconds per chunk: the time a
    chunk is parsed is not the time it arrived. Each ``feed_data`` is one read from the
    socket; a chunk arrived with the read that brought its last byte."""

    def __init__(self) -> None:
        super().__init__(limit=1 << 20)
        #: Bytes received so far after each read, and when that read arrived.
        self.ends: list[int] = []
        self.times: list[float] = []
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.ends.append(self.fed)
        self.times.append(time.perf_counter())
        super().feed_data(data)

    def arrival(self, offset: int) -> float:
        """When the byte at ``offset`` (counted from the connection's start) arrived."""
        i = bisect.bisect_left(self.ends, offset)
        return self.times[min(i, len(self.times) - 1)]

    def forget_before(self, offset: int) -> None:
        i = bisect.bisect_left(self.ends, offset)
        if i > 64:
            del self.ends[:i], self.times[:i]


class Connection:
    """One keep-alive connection that sends a request and reads the whole answer."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.reader: StampedReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: Bytes of answers read on this connection (the offset of the next answer).
        self.consumed = 0

    async def open(self) -> Connection:
        loop = asyncio.get_running_loop()
        reader = StampedReader()
        transport, protocol = await loop.create_connection(
            lambda: asyncio.StreamReaderProtocol(reader), self.target.host, self.target.port
        )
        self.reader, self.writer = reader, asyncio.StreamWriter(transport, protocol, reader, loop)
        self.consumed = 0
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def send(
        self, data: bytes, *, on_first: Callable[[], None] | None = None, keep: bool = False, stamps: bool = False
    ) -> Answer:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        reader = self.reader
        t0 = time.perf_counter()
        self.writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        pos = self.consumed + len(head)
        status = int(head[9:12])
        low = head.lower()
        parts: list[bytes] = []
        times: list[float] = []
        ttfb = 0.0
        if b"transfer-encoding: chunked" in low:
            while True:
                line = await reader.readline()
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    pos += len(line) + len(await reader.readline())  # the CRLF after the last chunk
                    break
                data_crlf = await reader.readexactly(size + 2)
                pos += len(line) + size + 2
                if stamps:
                    at = reader.arrival(pos)
                    times.extend([at] * max(1, data_crlf.count(b"data: ")))
                if not ttfb:
                    ttfb = time.perf_counter() - t0
                    if on_first is not None:
                        on_first()
                if keep:
                    parts.append(data_crlf[:-2])
        else:
            i = low.find(b"content-length:")
            if i < 0:  # close-delimited: read to the end, the connection is spent
                parts.append(await reader.read())
                self.close()
            else:
                j = low.find(b"\r\n", i)
                n = int(low[i + 15 : j])
                if n:
                    parts.append(await reader.readexactly(n))
                pos += n
            ttfb = time.perf_counter() - t0
        self.consumed = pos
        reader.forget_before(pos)
        if times:
            ttfb = times[0] - t0
        return Answer(status, ttfb, time.perf_counter() - t0, b"".join(parts) if keep else b"", times)


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: With ``timing``: seconds to each answer's first body byte, and between its SSE events.
    ttfbs: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    #: What the first failed request got (a status or an exception), to say why a target failed.
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_load(
    target: Target,
    body: bytes,
    connections: int,
    duration: float,
    *,
    timing: bool = False,
    rounds: int = 0,
    connect_at_once: int = 200,
    vary: bytes = b"",
) -> LoadResult:
    """``connections`` workers sending back to back for ``duration`` seconds (req/s, latencies).

    With ``rounds``, each worker sends exactly that many requests instead (a wave of
    ``connections`` requests in flight at once, however slow the answers). With ``vary``,
    that marker in ``body`` is replaced by a number no other request of the run has (each
    request is then new to a cache)."""
    data = target.request(body)
    numbers = itertools.count()
    res = LoadResult()
    gate = asyncio.Semaphore(connect_at_once)

    async def opened() -> Connection:
        async with gate:
            return await Connection(target).open()

    conns = await asyncio.gather(*(opened() for _ in range(connections)))
    start = time.perf_counter()
    deadline = start + duration

    async def worker(conn: Connection) -> None:
        sent = 0
        while (sent < rounds) if rounds else (time.perf_counter() < deadline):
            sent += 1
            try:
                ans = await conn.send(
                    target.request(body.replace(vary, b"%d" % next(numbers))) if vary else data, stamps=timing
                )
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                res.errors += 1
                res.first_error = res.first_error or repr(exc)
                conn.close()
                continue
            if 200 <= ans.status < 300:
                res.requests += 1
                res.latencies.append(ans.total)
                if timing:
                    res.ttfbs.append(ans.ttfb)
                    st = ans.stamps
                    res.gaps.extend(st[i] - st[i - 1] for i in range(1, len(st)))
            else:
                res.errors += 1
                res.first_error = res.first_error or f"status {ans.status}"

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    res.seconds = time.perf_counter() - start
    return res


def raise_open_files(wanted: int) -> int:
    """Lift this process's open-file limit towards ``wanted`` (up to the hard limit): the soft limit it got."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


async def first_byte_times(target: Target, body: bytes, n: int) -> list[float]:
    """``n`` streams one after another on one connection: seconds to each one's first byte."""
    data = target.request(body)
    conn = await Connection(target).open()
    out: list[float] = []
    try:
        for _ in range(n):
            ans = await conn.send(data)
            if ans.status != 200:
                raise RuntimeError(f"{target.name}: stream answered {ans.status}")
            out.append(ans.ttfb)
    finally:
        conn.close()
    return out


@dataclass
class OpenStreams:
    wanted: int
    #: Most streams open (first byte received, end not yet) at the same moment.
    max_open: int = 0
    completed: int = 0
    #: Seconds until all ``wanted`` streams were open at once (0 if that never happened).
    all_open_after: float = 0.0
    #: What ``sample`` returned while all were open (e.g. the target's RSS).
    sampled: float = 0.0


async def hold_streams(
    target: Target, body: bytes, n: int, sample: Callable[[], Awaitable[float]], connect_at_once: int = 100
) -> OpenStreams:
    """Open ``n`` streams that the vendor holds after their first chunk; sample while all are open."""
    data = target.request(body)
    res = OpenStreams(n)
    is_open = 0
    all_open = asyncio.Event()
    gate = asyncio.Semaphore(connect_at_once)
    start = time.perf_counter()

    def opened() -> None:
        nonlocal is_open
        is_open += 1
        res.max_open = max(res.max_open, is_open)
        if is_open == n:
            res.all_open_after = time.perf_counter() - start
            all_open.set()

    async def one() -> None:
        nonlocal is_open
        conn = Connection(target)
        try:
            async with gate:
                await conn.open()
            ans = await conn.send(data, on_first=opened)
            is_open -= 1
            if ans.status == 200:
                res.completed += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            conn.close()

    tasks = [asyncio.ensure_future(one()) for _ in range(n)]
    waiter = asyncio.ensure_future(all_open.wait())
    done = asyncio.ensure_future(asyncio.gather(*tasks))
    await asyncio.wait([waiter, done], return_when=asyncio.FIRST_COMPLETED)
    if all_open.is_set():
        res.sampled = await sample()
    await done
    waiter.cancel()
    return res
