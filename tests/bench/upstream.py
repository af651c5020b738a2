"""The benchmark's vendor: a raw asyncio HTTP/1.1 server that answers at once, as fast as Python can.

A standalone script (``python upstream.py PORT [--chunk-gap-ms MS]``), so it runs in
its own process (and on its own core). Any POST ending in ``/chat/completions`` gets a
fixed chat completion, or, with ``"stream": true`` in the body, a 20-chunk SSE stream
written in one go (plus the usage chunk when ``stream_options.include_usage`` is asked).

The model name picks how a real vendor would behave, because every proxy forwards it
untouched (a body field of our own might be dropped by a peer):

- ``bench-split-N``: a stream of N chunks, each SSE event its own ``transport.write``
  with a return to the event loop between them (and ``--chunk-gap-ms`` of sleep, if
  given), the way tokens arrive from a real model;
- ``bench-slow-MS``: the answer after MS milliseconds; a stream sends its 20 events
  one by one, spread evenly over MS milliseconds.

A body field ``"bench_hold_s": S`` sends the first chunk at once and the rest after S
seconds: that is how the benchmark holds many streams open. No framework, no
per-request parsing beyond what is needed, so the vendor is never the bottleneck
of the gateway measurement.
"""

from __future__ import annotations

import asyncio
import json
import sys

CHUNKS = 20
MODEL = "bench-model"

ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! I am a benchmark vendor. I answer every request at once with this text.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32},
    },
    separators=(",", ":"),
).encode()


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


DONE = b"data: [DONE]\n\n"


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _events(n: int) -> list[bytes]:
    """``n`` content chunks, the last one with ``finish_reason``."""
    out = [_chunk({"role": "assistant", "content": "word0 "}, None)]
    out += [_chunk({"content": f"word{i} "}, None) for i in range(1, n - 1)]
    return [*out, _chunk({"content": "end."}, "stop")] if n > 1 else out


def _usage(n: int) -> bytes:
    return _event(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": n, "total_tokens": 12 + n},
        }
    )


_SPLIT: dict[tuple[int, bool], list[bytes]] = {}


def split_stream(n: int, usage: bool) -> list[bytes]:
    """The HTTP chunks of an ``n``-chunk stream, one per SSE event, then the last-chunk marker."""
    key = (n, usage)
    if key not in _SPLIT:
        events = [*_events(n), *([_usage(n)] if usage else []), DONE]
        _SPLIT[key] = [_http_chunk(e) for e in events] + [b"0\r\n\r\n"]
    return _SPLIT[key]


#: Seconds between two separate writes of a split stream (``--chunk-gap-ms``; 0 = yield only).
GAP_S = 0.0

EVENTS = _events(CHUNKS)
USAGE_EVENT = _usage(CHUNKS)


JSON_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(ANSWER)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
FIRST = SSE_HEAD + _http_chunk(EVENTS[0])
REST_NO_USAGE = b"".join(_http_chunk(e) for e in [*EVENTS[1:], DONE]) + b"0\r\n\r\n"
REST_USAGE = b"".join(_http_chunk(e) for e in [*EVENTS[1:], USAGE_EVENT, DONE]) + b"0\r\n\r\n"
MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()
MODELS_RESP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(MODELS)
) + MODELS
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"


def _wants_stream(body: bytes) -> bool:
    return b'"stream":true' in body or b'"stream": true' in body


def _mode_of(body: bytes) -> tuple[str, int]:
    """``("split", N)``, ``("slow", MS)`` or ``("", 0)``, from the model name."""
    i = body.find(b'"model":')
    if i < 0:
        return "", 0
    j = body.find(b'"', i + 8)
    k = body.find(b'"', j + 1)
    name = body[j + 1 : k]
    for mode in (b"split", b"slow"):
        prefix = b"bench-" + mode + b"-"
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return mode.decode(), int(name[len(prefix) :])
    return "", 0


def _wants_usage(body: bytes) -> bool:
    return b'"include_usage":true' in body or b'"include_usage": true' in body


class VendorProtocol(asyncio.Protocol):
    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            length = 0
            low = head.lower()
            i = low.find(b"\r\ncontent-length:")
            if i >= 0:
                j = low.find(b"\r\n", i + 2)
                length = int(low[i + 17 : j if j >= 0 else len(low)])
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4 : end + 4 + length]
            buf = buf[end + 4 + length :]
            self._answer(head, body)
        self.buf = buf

    def _answer(self, head: bytes, body: bytes) -> None:
        t = self.transport
        assert t is not None
        line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
        target = line.split(b" ")[1] if line.count(b" ") >= 2 else b""
        path = target.split(b"?")[0]
        if line.startswith(b"GET ") and path.endswith(b"/models"):
            t.write(MODELS_RESP)
        elif not path.endswith(b"/completions"):
            t.write(NOT_FOUND)
        elif (mode := _mode_of(body))[0]:
            self._shaped(t, body, *mode)
        elif not _wants_stream(body):
            t.write(JSON_HEAD + ANSWER)
        else:
            rest = REST_USAGE if _wants_usage(body) else REST_NO_USAGE
            hold = _hold_of(body)
            if hold > 0:
                t.write(FIRST)
                asyncio.get_running_loop().call_later(hold, _write_later, t, rest)
            else:
                t.write(FIRST + rest)

    def _shaped(self, t: asyncio.Transport, body: bytes, mode: str, n: int) -> None:
        loop = asyncio.get_running_loop()
        if mode == "slow" and not _wants_stream(body):
            loop.call_later(n / 1000.0, _write_later, t, JSON_HEAD + ANSWER)
        elif mode == "slow":
            parts = split_stream(CHUNKS, _wants_usage(body))
            _Spread(t, parts, n / 1000.0 / CHUNKS)
        elif _wants_stream(body):
            _Spread(t, split_stream(max(1, n), _wants_usage(body)), GAP_S)
        else:
            t.write(JSON_HEAD + ANSWER)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _hold_of(body: bytes) -> float:
    if b"bench_hold_s" not in body:
        return 0.0
    try:
        return float(json.loads(body).get("bench_hold_s") or 0)
    except (ValueError, AttributeError):
        return 0.0


def _write_later(t: asyncio.Transport, data: bytes) -> None:
    if not t.is_closing():
        t.write(data)


class _Spread:
    """The head, then each part as a write of its own, back to the loop (and ``gap`` s) between.

    A chain of loop callbacks rather than a task that sleeps between writes: a task's step
    costs several times a callback's, and at 500 events a stream the vendor, not the proxy
    under test, was then what limited the rate.
    """

    __slots__ = ("gap", "i", "loop", "parts", "t")

    def __init__(self, t: asyncio.Transport, parts: list[bytes], gap: float) -> None:
        self.t, self.parts, self.gap, self.i = t, parts, gap, 0
        self.loop = asyncio.get_running_loop()
        t.write(SSE_HEAD)
        self._next()

    def _next(self) -> None:
        if self.gap > 0:
            self.loop.call_later(self.gap, self._step)
        else:
            self.loop.call_soon(self._step)

    def _step(self) -> None:
        if self.t.is_closing():
            return
        self.t.write(self.parts[self.i])
        self.i += 1
        if self.i < len(self.parts):
            self._next()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(VendorProtocol, "127.0.0.1", port, backlog=4096)
    print(f"upstream listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    global GAP_S
    port = int(sys.argv[1])
    if len(sys.argv) > 3 and sys.argv[2] == "--chunk-gap-ms":
        GAP_S = float(sys.argv[3]) / 1000.0
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


if __name__ == "__main__":
    main()
