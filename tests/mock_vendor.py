"""A recording, scriptable OpenAI-compatible vendor — the only fake in the test suite.

Runs an aiohttp server on 127.0.0.1 (a free port) in a background thread, so both
in-process tests and a real ``aigw serve`` subprocess can call it. Every request is
recorded (path, headers, JSON body, whether the client went away). Tests script what
it answers:

    vendor.behave(status=500)                 # every later request
    vendor.queue(Behaviour(delay=5))          # the next request only
    vendor.reject_keys["bad-key"] = 401       # per credential (failover tests)
    vendor.max_in_flight                      # the most requests it ever held at once

Any path ending in ``/chat/completions``, ``/completions``, ``/embeddings`` or
``/models`` is served, so ``path_simplification = false`` can be observed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Behaviour:
    """What the vendor does with one request."""

    status: int = 200
    #: Replaces the normal JSON answer (dict → JSON; str/bytes → sent as is).
    body: Any = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before sending headers.
    delay: float = 0.0
    #: Streams: number of content chunks and the pause between them.
    chunks: int = 3
    chunk_delay: float = 0.0
    #: Streams: seconds between the head and the first event (a vendor that answers, then thinks).
    first_chunk_delay: float = 0.0
    #: ``"final"`` (OpenAI: one usage chunk, only if asked), ``"always"`` (a final usage
    #: chunk even if not asked), ``"cumulative"`` (usage on every chunk), ``"none"``.
    usage: str = "final"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    #: Streams: drop the connection after this many chunks (a broken stream).
    break_after: int | None = None
    #: Streams: never finish (sends a chunk every ``chunk_delay``) until the client leaves.
    endless: bool = False
    #: Close the connection without any answer.
    close: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    started: float
    finished: float | None = None
    #: The client (the gateway) went away before the answer was complete.
    cancelled: bool = False

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


class MockVendor:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.default = Behaviour()
        self.pending: list[Behaviour] = []
        self.reject_keys: dict[str, int] = {}
        #: Requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._lock = threading.Lock()

    # -------------------------------------------------------------- control

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """What a Model Service takes as ``address`` (an OpenAI SDK ``base_url``)."""
        return f"{self.base}/v1"

    def behave(self, **kw: Any) -> None:
        self.default = Behaviour(**kw)

    def queue(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self.pending.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.pending.clear()
            self.reject_keys.clear()
            self.default = Behaviour()
            self.max_in_flight = self.in_flight

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"mock vendor got {len(self.requests)} requests, expected {count}")

    def wait_until(self, pred: Any, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.01)
        raise AssertionError("condition on the mock vendor not met in time")

    # -------------------------------------------------------------- lifecycle

    def start(self) -> MockVendor:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="mock-vendor", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("mock vendor did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> MockVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- serving

    def _next(self) -> Behaviour:
        with self._lock:
            return self.pending.pop(0) if self.pending else self.default

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        rec = Recorded(request.method, request.path_qs, dict(request.headers), raw, parsed, time.time())
        self.requests.append(rec)
        b = self._next()
        self.in_flight += 1  # the vendor's own loop: no lock needed
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, rec, b, parsed if isinstance(parsed, dict) else {})
        except (asyncio.CancelledError, ConnectionResetError):
            rec.cancelled = True
            raise
        finally:
            self.in_flight -= 1
            rec.finished = time.time()

    async def _answer(
        self, request: web.Request, rec: Recorded, b: Behaviour, body: dict[str, Any]
    ) -> web.StreamResponse:
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.close:
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("mock closed the connection")
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ")
        if key in self.reject_keys:
            status = self.reject_keys[key]
            return web.json_response(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status=status,
            )
        if b.body is not None or b.status != 200:
            payload = (
                b.body
                if b.body is not None
                else {"error": {"message": f"mock vendor error {b.status}", "type": "server_error", "code": None}}
            )
            if isinstance(payload, dict | list):
                return web.json_response(payload, status=b.status, headers=b.headers)
            return web.Response(
                body=payload.encode() if isinstance(payload, str) else payload,
                status=b.status,
                content_type=b.content_type,
                headers=b.headers,
            )
        path = request.path
        model = body.get("model", "mock-model")
        if path.endswith("/models"):
            return web.json_response(
                {"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]}
            )
        if path.endswith("/embeddings"):
            inputs = body.get("input", "")
            n = len(inputs) if isinstance(inputs, list) else 1
            return web.json_response(
                {
                    "object": "list",
                    "model": model,
                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)],
                    "usage": {"prompt_tokens": b.prompt_tokens, "total_tokens": b.prompt_tokens},
                },
                headers=b.headers,
            )
        if body.get("stream"):
            return await self._stream(request, rec, b, body, model)
        text = f"Hello from mock ({model})."
        usage = {
            "prompt_tokens": b.prompt_tokens,
            "completion_tokens": b.completion_tokens,
            "total_tokens": b.prompt_tokens + b.completion_tokens,
        }
        answer: dict[str, Any] = {
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            answer = {
                "id": "cmpl-mock",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            }
        if b.usage != "none":
            answer["usage"] = usage
        return web.json_response(answer, headers=b.headers)

    async def _stream(
        self, request: web.Request, rec: Recorded, b: Behaviour, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **b.headers})
        await resp.prepare(request)
        if b.first_chunk_delay:
            await asyncio.sleep(b.first_chunk_delay)
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        i = 0
        while b.endless or i < b.chunks:
            if b.break_after is not None and i >= b.break_after:
                assert request.transport is not None
                request.transport.close()
                raise ConnectionResetError("mock broke the stream")
            chunk: dict[str, Any] = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            }
            if b.usage == "cumulative":
                done = min(i + 1, b.completion_tokens)
                chunk["usage"] = {
                    "prompt_tokens": b.prompt_tokens,
                    "completion_tokens": done,
                    "total_tokens": b.prompt_tokens + done,
                }
            elif include and b.usage == "final":
                chunk["usage"] = None
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            i += 1
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)
        last = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        if b.usage == "cumulative":
            last["usage"] = {
                "prompt_tokens": b.prompt_tokens,
                "completion_tokens": b.completion_tokens,
                "total_tokens": b.prompt_tokens + b.completion_tokens,
            }
        await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
        if (include and b.usage == "final") or b.usage == "always":
            usage_chunk = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": b.prompt_tokens,
                    "completion_tokens": b.completion_tokens,
                    "total_tokens": b.prompt_tokens + b.completion_tokens,
                },
            }
            await resp.write(b"data: " + json.dumps(usage_chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_vendor() -> Iterator[MockVendor]:
    with MockVendor() as v:
        yield v
