"""Forward one attempt to a vendor and relay its answer: headers, bodies, SSE, usage.

A non-streaming answer is read whole (it is bounded) and relayed as sent. A stream is
relayed as its events arrive, one write per read, without parsing anything that
cannot hold ``usage``. Failures *before* the first byte reaches the client come back
as an :class:`Attempt` so the pipeline can fail over to another key or service; after
that the stream is ended with an SSE ``error`` event.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from .context import RequestContext, Usage
from .errors import GatewayError, bad_gateway, error_body, gateway_timeout
from .routes import CompiledKey, Service

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: Client headers that must never reach the vendor (credentials, framing, ours to set).
DROP_REQUEST = HOP_BY_HOP | {
    "authorization", "x-api-key", "api-key", "cookie", "host", "content-length",
    "accept-encoding", "x-request-id", "expect",
}
#: Vendor headers not passed back (framing, cookies, ours to set).
DROP_RESPONSE = HOP_BY_HOP | {
    "set-cookie", "content-length", "content-encoding", "x-request-id", "server", "date",
}
CONNECT_TIMEOUT_S = 10.0
#: Stream bytes kept to estimate tokens when the vendor reports no usage.
ESTIMATE_KEEP = 2 * 1024 * 1024
_EVENT_SPLIT = re.compile(rb"\r?\n\r?\n")
_USAGE = b'"usage"'


@dataclass(slots=True)
class Attempt:
    """A failed attempt that reached no client byte: what to relay if nothing else works."""

    error: GatewayError | None = None
    status: int = 0
    headers: CIMultiDictProxy[str] | None = None
    body: bytes = b""
    retryable: bool = False
    #: The vendor refused the key itself (401/403/429): cool it down, try the next one.
    key_rejected: bool = False
    reason: str = ""


@lru_cache(maxsize=64)
def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=min(seconds, CONNECT_TIMEOUT_S),
                                 sock_read=seconds)


def upstream_url(ctx: RequestContext, svc: Service, query: str) -> str:
    assert ctx.route is not None and ctx.api is not None
    prefix = "" if ctx.api.path_simplification else ctx.api.base_path
    url = svc.address + prefix + ctx.route.op
    return url + "?" + query if query else url


def upstream_headers(client: CIMultiDictProxy[str], credential: str,
                     request_id: str) -> CIMultiDict[str]:
    named = client.get("Connection", "")
    extra = {h.strip().lower() for h in named.split(",")} if named else ()
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in client.items():
        lk = k.lower()
        if lk in DROP_REQUEST or lk in extra:
            continue
        out.add(k, v)
    out["Authorization"] = "Bearer " + credential
    out["x-request-id"] = request_id
    out["Content-Type"] = "application/json"
    return out


def response_headers(vendor: CIMultiDictProxy[str], ctx: RequestContext) -> CIMultiDict[str]:
    named = vendor.get("Connection", "")
    extra = {h.strip().lower() for h in named.split(",")} if named else ()
    out: CIMultiDict[str] = CIMultiDict()
    for k, v in vendor.items():
        lk = k.lower()
        if lk not in DROP_RESPONSE and lk not in extra:  # headers named by Connection are hop-by-hop
            out.add(k, v)
    out["x-request-id"] = ctx.request_id
    if ctx.limit_headers:
        out.update(ctx.limit_headers)
    return out


def _classify(exc: BaseException, svc: Service, stage: str) -> Attempt:
    """Turn a client-side exception talking to the vendor into a retryable :class:`Attempt`."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Attempt(bad_gateway(
            f"model service {svc.name!r} did not accept a connection at {svc.address} within "
            f"{min(svc.timeout_s, CONNECT_TIMEOUT_S):g} s; check the service's address",
            code="upstream_unreachable"), retryable=True, reason="connect_timeout")
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Attempt(gateway_timeout(
            f"model service {svc.name!r} sent nothing for {svc.timeout_s:g} s ({stage}); retry "
            "later or raise the service's timeout_s"), retryable=True, reason="timeout")
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return Attempt(bad_gateway(
            f"cannot reach model service {svc.name!r} at {svc.address}; check the service's "
            "address and that the vendor is up", code="upstream_unreachable"),
            retryable=True, reason="connect")
    return Attempt(bad_gateway(
        f"model service {svc.name!r} broke the connection ({stage}): {type(exc).__name__}; "
        "retry the request", code="upstream_error"), retryable=True, reason="broken")


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


async def forward(request: web.Request, ctx: RequestContext, session: aiohttp.ClientSession,
                  svc: Service, key: CompiledKey, body: bytes) -> web.StreamResponse | Attempt:
    """One attempt: the relayed response, or an :class:`Attempt` when nothing was sent yet."""
    credential = key.resolve()
    url = upstream_url(ctx, svc, request.query_string)
    headers = upstream_headers(request.headers, credential, ctx.request_id)
    timeout = _timeout(svc.timeout_s)
    for retry in (True, False):
        try:
            resp = await session.request(request.method, url, data=body, headers=headers,
                                         timeout=timeout, allow_redirects=False)
            break
        except aiohttp.ServerDisconnectedError as exc:
            # Most often a pooled keep-alive connection the vendor closed just as we reused
            # it (no answer, nothing billed): one immediate retry on a fresh connection.
            if not retry:
                return _classify(exc, svc, "before answering")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return _classify(exc, svc, "before answering")
    try:
        ctype = resp.headers.get("Content-Type", "")
        if resp.status == 200 and ctx.stream and ctype.startswith("text/event-stream"):
            return await _relay_stream(request, ctx, resp, svc)
        try:
            if resp.content.is_eof():  # the whole answer came with its headers: no deadline needed
                data = await resp.read()
            else:
                async with asyncio.timeout(svc.timeout_s):  # see _relay_stream: framing can stall
                    data = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return _classify(exc, svc, "while answering")
        if resp.status >= 400:
            st = resp.status
            secret = credential.encode()
            if secret and secret in data:  # some vendors echo the key they were sent
                data = data.replace(secret, b"***")
            return Attempt(status=st, headers=resp.headers, body=data,
                           retryable=st == 429 or st >= 500, key_rejected=st in (401, 403, 429),
                           reason=f"http_{st}")
        ctx.status = resp.status
        ctx.usage = _usage_of_answer(ctx, data)
        out = web.Response(body=data, status=resp.status, headers=response_headers(resp.headers, ctx))
        ctx.ttfb_ms = ctx.elapsed_ms()
        return out
    finally:
        resp.release()


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


async def _relay_stream(request: web.Request, ctx: RequestContext, resp: aiohttp.ClientResponse,
                        svc: Service) -> web.StreamResponse | Attempt:
    reader = resp.content
    try:  # the first bytes decide: nothing reached the client yet, so a failure may fail over
        async with asyncio.timeout(svc.timeout_s):
            first = await reader.readany()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return _classify(exc, svc, "before the first event")
    out = web.StreamResponse(status=resp.status, headers=response_headers(resp.headers, ctx))
    await out.prepare(request)
    ctx.status = resp.status
    ctx.ttfb_ms = ctx.elapsed_ms()
    scan = _StreamScan(strip=not ctx.client_wants_usage)
    buf = first
    broken: Attempt | None = None
    loop = asyncio.get_running_loop()
    try:
        # Our own idle deadline besides aiohttp's sock_read: a vendor that breaks the chunked
        # framing and hangs up can leave aiohttp's parser waiting with no timer running.
        async with asyncio.timeout(None) as idle:
            while True:
                end = _last_boundary(buf)
                if end > 0:
                    data = scan.feed(buf[:end])
                    buf = buf[end:]
                    if data:
                        await out.write(data)  # a slow client is not the vendor's silence
                idle.reschedule(loop.time() + svc.timeout_s)
                try:
                    chunk = await reader.readany()
                except (aiohttp.ClientError, OSError) as exc:
                    broken = _classify(exc, svc, "midway through the stream")
                    break
                idle.reschedule(None)
                if not chunk:
                    break
                buf = buf + chunk if buf else chunk
    except TimeoutError as exc:
        broken = _classify(exc, svc, "midway through the stream")
    if buf.strip() and broken is None:
        data = scan.feed(buf)
        if data:
            await out.write(data)
    ctx.usage = scan.usage or scan.estimate(ctx)
    if broken is not None and broken.error is not None:
        err = broken.error
        ctx.status = err.status
        ctx.error = err.message
        ctx.upstream_failure = broken.reason
        await out.write(b"event: error\ndata: " + error_body(err.message, err.type, err.code) + b"\n\n")
    await out.write_eof()
    return out
