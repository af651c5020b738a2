"""Forward one attempt to a vendor and relay its answer: headers, bodies, SSE, usage.

A non-streaming answer is read whole (it is bounded) and relayed as sent. A stream is
relayed as its events arrive, one write per read, without parsing anything that
cannot hold ``usage``. Failures *before* the first byte reaches the client come back
as an :class:`Attempt` so the pipeline can fail over to another key or service; after
that the stream is ended with an SSE ``error`` event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .context import RequestContext, Usage
from .errors import GatewayError, bad_gateway, error_body, gateway_timeout
from .http_server import Request
from .limits import LIMIT_HEADERS
from .routes import CompiledKey, Service
from .vendor_client import (
    ConnectFailed,
    ConnectTimeout,
    ReadTimeout,
    UpstreamError,
    VendorConnection,
    VendorPool,
    origin_of,
)

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Client headers that must never reach the vendor (credentials, framing, ours to set).
DROP_REQUEST = HOP_BY_HOP | {
    b"authorization",
    b"x-api-key",
    b"api-key",
    b"cookie",
    b"host",
    b"content-length",
    b"content-type",
    b"accept-encoding",
    b"x-request-id",
    b"expect",
    b"http2-settings",
}
#: Vendor headers not passed back (framing, cookies, ours to set).
DROP_RESPONSE = HOP_BY_HOP | {
    b"set-cookie",
    b"content-length",
    b"content-encoding",
    b"x-request-id",
    b"server",
    b"date",
    # CORS is the gateway's to answer (per API), not a vendor's to open.
    b"access-control-allow-origin",
    b"access-control-allow-credentials",
    b"access-control-expose-headers",
}
CONNECT_TIMEOUT_S = 10.0
#: Stream bytes kept to estimate tokens when the vendor reports no usage.
ESTIMATE_KEEP = 2 * 1024 * 1024
_EVENT_SPLIT = re.compile(rb"\r?\n\r?\n")
_USAGE = b'"usage"'
_DONE = b"data: [DONE]"


@dataclass(slots=True)
class Attempt:
    """A failed attempt that reached no client byte: what to relay if nothing else works."""

    error: GatewayError | None = None
    status: int = 0
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""
    retryable: bool = False
    #: The vendor refused the key itself (401/403/429): cool it down, try the next one.
    key_rejected: bool = False
    reason: str = ""


def upstream_target(ctx: RequestContext, svc: Service, query: str) -> bytes:
    """The request target at the vendor: the service's path, the API's base path unless
    simplified away, the operation, and the client's query string as it came."""
    assert ctx.route is not None and ctx.api is not None
    prefix = "" if ctx.api.path_simplification else ctx.api.base_path
    path = (origin_of(svc.address).base_path + prefix + ctx.route.op).encode()
    return path + b"?" + query.encode("latin-1") if query else path


def _connection_named(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers the ``Connection`` header names: hop-by-hop too, so never passed on."""
    out: set[bytes] = set()
    for k, v in headers:
        if len(k) == 10 and k.lower() == b"connection":
            out.update(h.strip().lower() for h in v.split(b","))
    return out


def upstream_request(req: Request, target: bytes, svc: Service, credential: str, request_id: str, body: bytes) -> bytes:
    """The whole request to the vendor, head and body, as one buffer for one write."""
    origin = origin_of(svc.address)
    named = _connection_named(req.raw_headers) if "connection" in req.headers else None
    parts = [req.method.encode() + b" " + target + b" HTTP/1.1\r\n", origin.host_line]
    drop = DROP_REQUEST
    for k, v in req.raw_headers:
        lk = k.lower()
        if lk in drop or (named and lk in named):
            continue
        parts.append(k + b": " + v + b"\r\n")
    parts.append(
        b"authorization: Bearer %b\r\nx-request-id: %b\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % (credential.encode(), request_id.encode(), len(body))
    )
    parts.append(body)
    return b"".join(parts)


def response_head(vendor: list[tuple[bytes, bytes]], ctx: RequestContext) -> bytes:
    """The vendor's headers minus hop-by-hop and ours to set, plus the request id and limits."""
    named = _connection_named(vendor)
    limits = ctx.limit_headers
    ours = LIMIT_HEADERS if limits else ()
    parts = []
    for k, v in vendor:
        lk = k.lower()
        if lk in DROP_RESPONSE or lk in named or lk in ours:
            continue
        parts.append(k + b": " + v + b"\r\n")
    parts.append(b"x-request-id: " + ctx.request_id.encode() + b"\r\n")
    parts.append(limits)
    parts.append(ctx.cors_headers)
    return b"".join(parts)


def _classify(exc: UpstreamError, svc: Service, stage: str) -> Attempt:
    """Turn a failed vendor call into a retryable :class:`Attempt` with the user's message."""
    if isinstance(exc, ConnectTimeout):
        return Attempt(
            bad_gateway(
                f"model service {svc.name!r} did not accept a connection at {svc.address} within "
                f"{min(svc.timeout_s, CONNECT_TIMEOUT_S):g} s; check the service's address",
                code="upstream_unreachable",
            ),
            retryable=True,
            reason=exc.reason,
        )
    if isinstance(exc, ReadTimeout):
        return Attempt(
            gateway_timeout(
                f"model service {svc.name!r} sent nothing for {svc.timeout_s:g} s ({stage}); retry "
                "later or raise the service's timeout_s"
            ),
            retryable=True,
            reason=exc.reason,
        )
    if isinstance(exc, ConnectFailed):
        return Attempt(
            bad_gateway(
                f"cannot reach model service {svc.name!r} at {svc.address}; check the service's "
                "address and that the vendor is up",
                code="upstream_unreachable",
            ),
            retryable=True,
            reason=exc.reason,
        )
    return Attempt(
        bad_gateway(
            f"model service {svc.name!r} broke the connection ({stage}): {type(exc).__name__}; retry the request",
            code="upstream_error",
        ),
        retryable=True,
        reason=exc.reason,
    )


def extract_usage(obj: Any) -> Usage | None:
    u = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(u, dict):
        return None
    pt = u.get("prompt_tokens") or u.get("input_tokens") or 0
    ct = u.get("completion_tokens") or u.get("output_tokens")
    if ct is None:
        total = u.get("total_tokens") or 0
        ct = max(0, total - pt) if isinstance(total, int) and isinstance(pt, int) else 0
    if not isinstance(pt, int) or not isinstance(ct, int):
        return None
    return Usage(pt, ct)


def _chars(value: Any) -> int:
    """Characters of text in a prompt/answer structure (strings inside lists and dicts).

    Iterative: a client may nest as deep as the JSON parser allows.
    """
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(x for k, x in v.items() if k in ("content", "text", "input"))
    return n


def estimate_prompt(body: dict[str, Any] | None) -> int:
    if not body:
        return 0
    n = _chars(body.get("messages")) + _chars(body.get("prompt")) + _chars(body.get("input"))
    return (n + 3) // 4


def _estimate_text(choices: Any, delta: bool) -> int:
    n = 0
    if isinstance(choices, list):
        for c in choices:
            if isinstance(c, dict):
                part = c.get("delta" if delta else "message")
                n += _chars(part) if part is not None else _chars(c.get("text"))
    return n


async def forward(
    req: Request, ctx: RequestContext, pool: VendorPool, svc: Service, key: CompiledKey, body: bytes
) -> Attempt | None:
    """One attempt: ``None`` once the answer went to the client, else an :class:`Attempt`."""
    credential = key.resolve()
    request = upstream_request(req, upstream_target(ctx, svc, req.query), svc, credential, ctx.request_id, body)
    try:
        conn = await pool.exchange(
            origin_of(svc.address),
            request,
            connect_timeout=min(svc.timeout_s, CONNECT_TIMEOUT_S),
            read_timeout=svc.timeout_s,
        )
    except UpstreamError as exc:
        return _classify(exc, svc, "before answering")
    try:
        status = conn.status
        if status == 200 and ctx.stream and conn.header(b"content-type").startswith(b"text/event-stream"):
            return await _relay_stream(req, ctx, conn, svc)
        try:
            data = await conn.read_all()
        except UpstreamError as exc:
            return _classify(exc, svc, "while answering")
        if status >= 400:
            secret = credential.encode()
            if secret and secret in data:  # some vendors echo the key they were sent
                data = data.replace(secret, b"***")
            return Attempt(
                status=status,
                headers=conn.headers,
                body=data,
                retryable=status == 429 or status >= 500,
                key_rejected=status in (401, 403, 429),
                reason=f"http_{status}",
            )
        ctx.status = status
        ctx.usage = _usage_of_answer(ctx, data)
        req.respond(status, response_head(conn.headers, ctx), data)
        ctx.ttfb_ms = ctx.elapsed_ms()
        return None
    finally:
        pool.release(conn)  # back to the pool if the answer was read to its end, else closed


def _usage_of_answer(ctx: RequestContext, data: bytes) -> Usage:
    parsed: Any = None
    if _USAGE in data:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        u = extract_usage(parsed)
        if u is not None:
            return u
    if parsed is None:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = {}
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    return Usage(estimate_prompt(ctx.body), (_estimate_text(choices, False) + 3) // 4, estimated=True)


class _StreamScan:
    """Usage found so far and what a client that did not ask for it must not see."""

    __slots__ = ("kept", "kept_bytes", "strip", "usage")

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self.usage: Usage | None = None
        self.kept: list[bytes] = []
        self.kept_bytes = 0

    def feed(self, complete: bytes) -> bytes:
        """Complete events in, the bytes to send out (unchanged unless a usage chunk is dropped)."""
        n = complete.count(_USAGE)
        if n == 0 or n == complete.count(b'"usage": null') + complete.count(b'"usage":null'):
            if self.usage is None and self.kept_bytes < ESTIMATE_KEEP:
                self.kept.append(complete)
                self.kept_bytes += len(complete)
            return complete
        # Only the events that mention usage are parsed; the bytes around them pass as they are.
        out: list[bytes] = []
        pos = 0
        i = complete.find(_USAGE)
        while i >= 0:
            start, end = _event_bounds(complete, i)
            obj = _event_json(complete[start:end])
            u = extract_usage(obj)
            if u is not None:
                self.usage = u  # the last one wins: some vendors repeat cumulative usage
                if self.strip and isinstance(obj, dict) and obj.get("choices") == []:
                    out.append(complete[pos:start])
                    pos = end
            i = complete.find(_USAGE, end)
        if not out:
            return complete
        out.append(complete[pos:])
        return b"".join(out)

    def estimate(self, ctx: RequestContext) -> Usage:
        chars = 0
        for block in self.kept:
            for event in _split_events(block):
                obj = _event_json(event)
                if isinstance(obj, dict):
                    chars += _estimate_text(obj.get("choices"), True)
        return Usage(estimate_prompt(ctx.body), (chars + 3) // 4, estimated=True)


def _split_events(block: bytes) -> list[bytes]:
    """Events of a block; the regex (slow: it scans every byte) only for CRLF streams."""
    return _EVENT_SPLIT.split(block) if b"\r" in block else block.split(b"\n\n")


def _event_bounds(block: bytes, i: int) -> tuple[int, int]:
    """Start and end (after its blank line) of the event holding ``block[i]``."""
    a = block.rfind(b"\n\n", 0, i)
    b = block.rfind(b"\n\r\n", 0, i)
    start = max(a + 2 if a >= 0 else 0, b + 3 if b >= 0 else 0)
    c = block.find(b"\n\n", i)
    d = block.find(b"\n\r\n", i)
    ends = [e for e in (c + 2 if c >= 0 else -1, d + 3 if d >= 0 else -1) if e > 0]
    return start, min(ends) if ends else len(block)


def _event_json(event: bytes) -> Any:
    payload = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _last_boundary(buf: bytes) -> int:
    i = buf.rfind(b"\n\n")
    j = buf.rfind(b"\n\r\n")
    return max(i + 2 if i >= 0 else -1, j + 3 if j >= 0 else -1)


async def _relay_stream(req: Request, ctx: RequestContext, conn: VendorConnection, svc: Service) -> Attempt | None:
    try:  # the first bytes decide: nothing reached the client yet, so a failure may fail over
        first = await conn.read_chunk()
    except UpstreamError as exc:
        return _classify(exc, svc, "before the first event")
    head = response_head(conn.headers, ctx)
    ctx.status = conn.status
    scan = _StreamScan(strip=not ctx.client_wants_usage)
    end = _last_boundary(first)
    if end > 0:
        out = scan.feed(first[:end])
        buf = first[end:]
    else:
        out, buf = b"", first
    if _DONE in out:
        ctx.complete = True
    req.start_stream(conn.status, head, out)
    ctx.ttfb_ms = ctx.elapsed_ms()
    broken: Attempt | None = None
    # The read deadline only runs while we wait for the vendor: a slow client is not the
    # vendor's silence (``req.write`` waits for the client without it).
    try:
        while True:
            try:
                chunk = await conn.read_chunk()
            except UpstreamError as exc:
                broken = _classify(exc, svc, "midway through the stream")
                break
            if not chunk:
                break
            buf = buf + chunk if buf else chunk
            end = _last_boundary(buf)
            if end > 0:
                data = scan.feed(buf[:end]) if end < len(buf) else scan.feed(buf)
                buf = buf[end:]
                if data:
                    if _DONE in data:  # the client has it all: leaving now is not a 499
                        ctx.complete = True
                    await req.write(data)
        if buf.strip() and broken is None:
            data = scan.feed(buf)
            if data:
                await req.write(data)
    finally:  # also when the client leaves: what was relayed is counted
        ctx.usage = scan.usage or scan.estimate(ctx)
    if broken is not None and broken.error is not None:
        err = broken.error
        ctx.status = err.status
        ctx.error = err.message
        ctx.upstream_failure = broken.reason
        await req.write(b"event: error\ndata: " + error_body(err.message, err.type, err.code) + b"\n\n")
    req.end_stream()
    return None
