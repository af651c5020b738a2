"""One vendor attempt: send the request, relay the answer's bytes, say how it ended.

A non-streaming answer is read whole (it is bounded) and relayed as sent. A stream is
relayed as its events arrive, one write per read, cut at event boundaries so
:mod:`proxy.usage` sees whole events. Every attempt ends as one
:class:`~proxy.context.Outcome`: a failure *before* the first byte reaches the client
lets the pipeline try another key or service; after that a broken stream is ended
with an SSE ``error`` event.

When the client's protocol and the vendor's differ, the attempt carries a
:class:`~proxy.protocols.translation.Translation`: a whole answer is translated once
read, a stream event by event as it arrives (:class:`StreamPipe`), and the usage is the
vendor's own report, read by the translator.
"""

from __future__ import annotations

import asyncio
from time import perf_counter_ns
from typing import Any

from .context import Outcome, RequestContext, Usage
from .errors import GatewayError, bad_gateway, gateway_timeout
from .heads import relayed_head
from .http_server import Request
from .protocols.sse import SSEError
from .protocols.translation import ANTHROPIC, DEFAULT_ANTHROPIC_VERSION, RESPONSES, StreamPipe
from .response_cache import StreamRecorder
from .routes import CompiledKey, Service
from .upstream_errors import ConnectFailed, ConnectTimeout, FirstByteTimeout, ReadTimeout, UpstreamError, VendorFault
from .usage import StreamUsage, from_protocol, usage_of_answer
from .vendor_client import ACCEPT_ENCODING, VendorConnection, VendorPool, origin_of

#: The client headers passed to the vendor: the protocols' own request headers, nothing
#: else. Credentials, cookies, proxy and client-address headers (``Forwarded``,
#: ``X-Forwarded-*``, ``X-Real-IP``), account selectors (``OpenAI-Organization``,
#: ``OpenAI-Project``) and encodings (``Content-Encoding``: the body sent is ours) stay here.
FORWARD_REQUEST = frozenset(
    {
        b"accept",
        b"accept-language",
        b"user-agent",
        b"openai-beta",
        b"anthropic-version",
        b"anthropic-beta",
    }
)
CONNECT_TIMEOUT_S = 10.0
#: One stream event may grow this large without a boundary; beyond, the stream is ended (502).
MAX_EVENT = 1024 * 1024
#: A write this small to a client whose buffer is empty cannot make the connection pause.
_UNTIMED_WRITE = 16 * 1024
_DONE = b"data: [DONE]"


class ClientStalled(Exception):
    """The client stopped reading a stream for longer than the client timeout."""


class _Translated:
    """A translated stream in the place of :class:`StreamUsage`: complete vendor events
    in, the client's events out; the usage is the vendor's, as the translator read it."""

    __slots__ = ("pipe",)

    def __init__(self, pipe: StreamPipe) -> None:
        self.pipe = pipe

    def feed(self, complete: bytes) -> bytes:
        return self.pipe.feed(complete)

    def result(self, body: dict[str, Any] | None) -> Usage:
        return from_protocol(self.pipe.usage, body)


def end_marker(ctx: RequestContext) -> bytes:
    """The bytes that end a stream in the client's protocol: once sent, the client has it all."""
    if ctx.protocol == ANTHROPIC:
        return b"event: message_stop"
    if ctx.route is not None and ctx.route.op == RESPONSES:
        return b"event: response.completed"
    return _DONE


def stream_error(ctx: RequestContext, err: GatewayError) -> bytes:
    """The SSE ``error`` event that ends a broken stream, in the client's protocol."""
    return b"event: error\ndata: " + err.body(ctx.protocol) + b"\n\n"


def upstream_target(ctx: RequestContext, svc: Service, query: str) -> bytes:
    """The request target at the vendor: the service's path, the API's base path unless
    simplified away, the operation, and the client's query string as it came."""
    assert ctx.route is not None and ctx.api is not None
    prefix = "" if ctx.api.path_simplification else ctx.api.base_path
    op = ctx.translation.op if ctx.translation is not None else ctx.route.op
    path = (origin_of(svc.address).base_path + prefix + op).encode()
    return path + b"?" + query.encode("latin-1") if query else path


def upstream_request(req: Request, target: bytes, svc: Service, credential: str, request_id: str, body: bytes) -> bytes:
    """The whole request to the vendor, head and body, as one buffer for one write."""
    parts = [req.method.encode() + b" " + target + b" HTTP/1.1\r\n", origin_of(svc.address).host_line]
    parts.extend(k + b": " + v + b"\r\n" for k, v in req.raw_headers if k in FORWARD_REQUEST)
    parts.append(ACCEPT_ENCODING)
    if svc.protocol == ANTHROPIC:  # Anthropic's own credential header, and the API version it requires
        if "anthropic-version" not in req.headers:
            parts.append(b"anthropic-version: " + DEFAULT_ANTHROPIC_VERSION.encode() + b"\r\n")
        parts.append(b"x-api-key: " + credential.encode() + b"\r\n")
    else:
        parts.append(b"authorization: Bearer " + credential.encode() + b"\r\n")
    parts.append(
        b"x-request-id: %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        % (request_id.encode(), len(body))
    )
    parts.append(body)
    return b"".join(parts)


def _failed(exc: UpstreamError, svc: Service, stage: str) -> Outcome:
    """A vendor call that broke, as a retryable :class:`Outcome` with the user's message."""
    err: GatewayError
    if isinstance(exc, VendorFault):  # its message says what is wrong and what to check
        err = bad_gateway(f"model service {svc.name!r} ({stage}): {exc}", code=exc.code)
        return Outcome(False, err.status, exc.reason, retryable=True, error=err, detail=err.message)
    if isinstance(exc, ConnectTimeout):
        err = bad_gateway(
            f"model service {svc.name!r} did not accept a connection at {svc.address} within "
            f"{min(svc.timeout_s, CONNECT_TIMEOUT_S):g} s; check the service's address",
            code="upstream_unreachable",
        )
    elif isinstance(exc, FirstByteTimeout):
        err = gateway_timeout(
            f"model service {svc.name!r} sent no answer within its first_byte_timeout_s "
            f"({svc.first_byte_timeout_s:g} s); retry later or raise the service's first_byte_timeout_s"
        )
    elif isinstance(exc, ReadTimeout):
        err = gateway_timeout(
            f"model service {svc.name!r} sent nothing for {svc.timeout_s:g} s ({stage}); retry "
            "later or raise the service's timeout_s"
        )
    elif isinstance(exc, ConnectFailed):
        err = bad_gateway(
            f"cannot reach model service {svc.name!r} at {svc.address}; check the service's "
            "address and that the vendor is up",
            code="upstream_unreachable",
        )
    else:
        err = bad_gateway(
            f"model service {svc.name!r} broke the connection ({stage}): {type(exc).__name__}; retry the request",
            code="upstream_error",
        )
    return Outcome(False, err.status, exc.reason, retryable=True, error=err, detail=err.message)


async def forward(
    req: Request, ctx: RequestContext, pool: VendorPool, svc: Service, key: CompiledKey, client_timeout_s: float
) -> Outcome:
    """One attempt with ``key`` at ``svc``, sending ``ctx.upstream_body``."""
    credential = key.resolve()
    request = upstream_request(
        req, upstream_target(ctx, svc, req.query), svc, credential, ctx.request_id, ctx.upstream_body
    )
    sent = asyncio.get_running_loop().time()
    began = perf_counter_ns()
    try:
        conn = await pool.exchange(
            origin_of(svc.address),
            request,
            connect_timeout=min(svc.timeout_s, CONNECT_TIMEOUT_S),
            read_timeout=svc.timeout_s,
            first_byte_timeout=svc.first_byte_timeout_s,
            proxy=svc.proxy,
            ca_file=svc.ca_file,
        )
    except UpstreamError as exc:
        ctx.waited_ns += perf_counter_ns() - began  # all of it the vendor's: it never answered
        return _failed(exc, svc, "before answering")
    del request  # sent: its bytes need not stay in this frame for the length of a stream
    try:
        status = conn.status
        if status == 200 and ctx.stream and conn.header(b"content-type").startswith(b"text/event-stream"):
            fb = svc.first_byte_timeout_s
            first_due = sent + fb if 0 < fb < svc.timeout_s else None
            return await _relay_stream(req, ctx, conn, svc, client_timeout_s, first_due)
        try:
            data = await conn.read_all()
        except UpstreamError as exc:
            return _failed(exc, svc, "while answering")
        if status >= 400:
            secret = credential.encode()
            if secret and secret in data:  # some vendors echo the key they were sent
                data = data.replace(secret, b"***")
            return Outcome(
                False,
                status,
                f"http_{status}",
                retryable=status == 429 or status >= 500,
                key_rejected=status in (401, 403, 429),
                headers=conn.headers,
                body=data,
                detail=f"vendor answered {status} (model key {key.name!r})",
            )
        if ctx.translation is not None:
            try:
                data, usage = ctx.translation.answer(data)
            except (ValueError, TypeError, AttributeError):
                err = bad_gateway(
                    f"model service {svc.name!r} answered {status} with a body that is not a JSON object; "
                    "check that the service's protocol and address are right",
                    code="upstream_error",
                )
                return Outcome(False, err.status, "bad_answer", retryable=True, error=err, detail=err.message)
            ctx.usage = from_protocol(usage, ctx.body)
        else:
            ctx.usage = usage_of_answer(ctx.body, data)
        ctx.status = status
        req.respond(status, relayed_head(conn.headers, ctx.request_id, ctx.extra_lines()), data)
        ctx.mark_first_byte()
        if ctx.cache_key is not None:  # the answer as the client got it, for the cache to store
            ctx.cache_headers, ctx.cache_body = list(conn.headers), data
        return Outcome(True, status)
    finally:
        ctx.waited_ns += conn.waited_ns
        pool.release(conn)  # back to the pool if the answer was read to its end, else closed


def _unreadable(svc: Service, exc: SSEError) -> Outcome:
    err = bad_gateway(f"model service {svc.name!r} sent a stream the gateway cannot read: {exc}", code="upstream_error")
    return Outcome(True, 502, "bad_stream", error=err, detail=err.message)


def last_boundary(buf: bytes | bytearray, start: int = 0) -> int:
    """The end of the last complete event in ``buf`` (after its blank line), or -1.

    Only ``buf[start:]`` is searched: the bytes before were searched when they came.
    """
    i = buf.rfind(b"\n\n", start)
    j = buf.rfind(b"\n\r\n", start)
    return max(i + 2 if i >= 0 else -1, j + 3 if j >= 0 else -1)


def _complete_events(pending: bytearray, chunk: bytes) -> bytes:
    """The complete events once ``chunk`` is added to ``pending`` (kept: the unfinished rest).

    A vendor usually sends whole events, so with nothing pending a read that ends at an
    event's end is passed on as it is, copied nowhere.
    """
    if not pending:
        if chunk.endswith(b"\n\n"):
            return chunk
        end = last_boundary(chunk)
        if end == len(chunk):
            return chunk
        if end > 0:
            pending += chunk[end:]
            return chunk[:end]
        pending += chunk
        return b""
    searched = max(0, len(pending) - 2)  # a boundary may straddle the old end
    pending += chunk
    end = last_boundary(pending, searched)
    if end <= 0:
        return b""
    complete = bytes(pending[:end])
    del pending[:end]
    return complete


async def _write(req: Request, data: bytes, timeout_s: float) -> int:
    """One stream chunk, waiting for a slow client but not for one that stopped reading.

    Returns the nanoseconds spent waiting for the client (0 when the kernel took the bytes
    at once, which is not timed): the client's time, not the gateway's.
    """
    conn = req.conn
    transport = conn.transport
    if (
        not conn.paused
        and len(data) < _UNTIMED_WRITE
        and transport is not None
        and not transport.get_write_buffer_size()
    ):
        req.write_now(data)  # the kernel takes it: no wait, no timer
        return 0
    began = perf_counter_ns()
    try:
        async with asyncio.timeout(timeout_s):
            await req.write(data)
    except TimeoutError:
        raise ClientStalled from None
    return perf_counter_ns() - began


async def _relay_stream(
    req: Request,
    ctx: RequestContext,
    conn: VendorConnection,
    svc: Service,
    client_timeout_s: float,
    first_due: float | None = None,
) -> Outcome:
    """``first_due``: the loop time the first event is due by (``first_byte_timeout_s``): a
    vendor that sends its head at once and then nothing is as silent as one sending nothing."""
    try:  # the first bytes decide: nothing reached the client yet, so a failure may fail over
        if first_due is None:
            first = await conn.read_chunk()
        else:
            async with asyncio.timeout_at(first_due):
                first = await conn.read_chunk()
    except UpstreamError as exc:
        return _failed(exc, svc, "before the first event")
    except TimeoutError:
        return _failed(FirstByteTimeout("no event within the first-byte timeout"), svc, "before the first event")
    ctx.status = conn.status
    translation = ctx.translation
    scan: StreamUsage | _Translated = (
        StreamUsage(strip=not ctx.client_wants_usage) if translation is None else _Translated(translation.stream())
    )
    done = end_marker(ctx)
    # The cache keeps exactly the bytes the client gets, and only a stream that ended cleanly.
    rec = StreamRecorder(conn.status, conn.headers, ctx.cache_max_entry) if ctx.cache_key is not None else None
    pending = bytearray()
    out = _complete_events(pending, first)
    if out:
        try:
            out = scan.feed(out)
        except SSEError:
            out = b""
    if done in out:
        ctx.complete = True
    req.start_stream(conn.status, relayed_head(conn.headers, ctx.request_id, ctx.extra_lines()), out)
    ctx.mark_first_byte()
    if rec is not None:
        rec.feed(out)
    broken: Outcome | None = None
    client_ns = 0  # waiting for a slow client to take the events
    # The read deadline only runs while we wait for the vendor: a slow client is not the
    # vendor's silence. The client's own deadline runs only while we wait for it.
    try:
        while True:
            if len(pending) > MAX_EVENT:
                err = bad_gateway(
                    f"model service {svc.name!r} sent a stream event over {MAX_EVENT // 1024} KiB "
                    "without an event boundary; the stream was ended",
                    code="upstream_error",
                )
                broken = Outcome(True, 502, "event_too_large", error=err, detail=err.message)
                pending.clear()
                break
            try:
                chunk = await conn.read_chunk()
            except UpstreamError as exc:
                failed = _failed(exc, svc, "midway through the stream")
                broken = Outcome(True, failed.status, failed.reason, error=failed.error, detail=failed.detail)
                break
            if not chunk:
                break
            complete = _complete_events(pending, chunk)
            if complete:
                try:
                    data = scan.feed(complete)
                except SSEError as exc:
                    broken = _unreadable(svc, exc)
                    break
                if data:
                    if done in data:  # the client has it all: leaving now is not a 499
                        ctx.complete = True
                    client_ns += await _write(req, data, client_timeout_s)
                    if rec is not None:
                        rec.feed(data)
        if broken is None:
            data = scan.feed(bytes(pending)) if pending.strip() else b""
            if isinstance(scan, _Translated):  # what the client's protocol says at the end
                data += scan.pipe.close()
            if data:
                client_ns += await _write(req, data, client_timeout_s)
                if rec is not None:
                    rec.feed(data)
                if done in data:
                    ctx.complete = True
        if broken is not None and broken.error is not None:
            err = broken.error
            ctx.status = err.status
            ctx.error = err.message
            client_ns += await _write(req, stream_error(ctx, err), client_timeout_s)
    except ClientStalled:
        ctx.status = 499
        ctx.error = f"client stopped reading the stream for {client_timeout_s:g} s"
        if req.conn.transport is not None:
            req.conn.transport.abort()  # its unread bytes would hold the socket open for ever
        return Outcome(True, 499)
    finally:  # also when the client leaves: what was relayed is counted
        ctx.usage = scan.result(ctx.body)
        ctx.waited_ns += client_ns
    req.end_stream()
    if broken is None and rec is not None and rec.recording:
        ctx.cache_stream = rec
    return broken or Outcome(True, conn.status)
