"""A recording, scriptable Anthropic Messages vendor, in the shape of ``mock_vendor``.

Serves ``POST /v1/messages`` (a streamed or whole answer; a ``tool_use`` block when the
request has tools and its ``tool_choice`` asks for one, or the behaviour says so),
``POST /v1/messages/count_tokens`` and ``GET /v1/models``. Checks ``x-api-key`` and
``anthropic-version`` as Anthropic does (a bearer token is taken too), answering errors in its shape. Tests script it:

    vendor.behave(status=529)                       # every later request
    vendor.queue(AnthropicBehaviour(silent=True))   # the next: headers, then nothing
    vendor.reject_keys["bad-key"] = 401
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from mock_vendor import Recorded, _free_port

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass
class AnthropicBehaviour:
    status: int = 200
    #: Replaces the normal answer (dict → JSON; str/bytes → sent as is).
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before sending headers.
    delay: float = 0.0
    #: Streams: text deltas and the pause between events.
    chunks: int = 3
    chunk_delay: float = 0.0
    #: Streams: send the headers and ``message_start``, then nothing until the client leaves.
    silent: bool = False
    #: Answer with a ``tool_use`` block whenever the request has tools.
    tool_use: bool = False
    input_tokens: int = 11
    output_tokens: int = 7
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    stop_reason: str | None = None


class MockAnthropic:
    def __init__(self, api_keys: tuple[str, ...] = ()) -> None:
        self.requests: list[Recorded] = []
        self.default = AnthropicBehaviour()
        self.pending: list[AnthropicBehaviour] = []
        self.reject_keys: dict[str, int] = {}
        #: When not empty, only these keys are accepted (others: 401).
        self.api_keys = set(api_keys)
        self.port = _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        """What the ``anthropic`` SDK takes as ``base_url``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """What an ``anthropic`` Model Service takes as ``address`` (ends in ``/v1``)."""
        return f"{self.base}/v1"

    def behave(self, **kw: Any) -> None:
        self.default = AnthropicBehaviour(**kw)

    def queue(self, *behaviours: AnthropicBehaviour) -> None:
        with self._lock:
            self.pending.extend(behaviours)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.pending.clear()
            self.reject_keys.clear()
            self.default = AnthropicBehaviour()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.requests) >= count:
                return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"mock Anthropic got {len(self.requests)} requests, expected {count}")

    def wait_until_cancelled(self, rec: Recorded, timeout: float = 5.0) -> None:
        """Until the client has gone away from ``rec``'s answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rec.cancelled:
                return
            time.sleep(0.01)
        raise AssertionError("the client did not leave the mock Anthropic's answer in time")

    # -------------------------------------------------------------- lifecycle

    def start(self) -> MockAnthropic:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="mock-anthropic", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("mock Anthropic did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> MockAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- serving

    def _next(self) -> AnthropicBehaviour:
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
        try:
            return await self._answer(request, b, parsed if isinstance(parsed, dict) else {})
        except (asyncio.CancelledError, ConnectionResetError):
            rec.cancelled = True
            raise
        finally:
            rec.finished = time.time()

    async def _answer(self, request: web.Request, b: AnthropicBehaviour, body: dict[str, Any]) -> web.StreamResponse:
        if b.delay:
            await asyncio.sleep(b.delay)
        # The SDK sends ``Authorization: Bearer`` in its newer versions; the gateway x-api-key.
        key = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not key:
            return _error(401, "x-api-key header is required")
        if key in self.reject_keys or (self.api_keys and key not in self.api_keys):
            return _error(self.reject_keys.get(key, 401), "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required")
        if b.body is not None:
            if isinstance(b.body, dict | list):
                return web.json_response(b.body, status=b.status, headers=b.headers)
            payload = b.body.encode() if isinstance(b.body, str) else b.body
            return web.Response(body=payload, status=b.status, headers=b.headers)
        if b.status != 200:
            return _error(b.status, f"mock Anthropic error {b.status}", b.headers)
        path = request.path
        if request.method == "GET" and path.endswith("/models"):
            model = {
                "type": "model",
                "id": "claude-mock-1",
                "display_name": "Claude Mock",
                "created_at": "2025-01-01T00:00:00Z",
            }
            return web.json_response(
                {"data": [model], "has_more": False, "first_id": model["id"], "last_id": model["id"]}
            )
        if request.method == "POST" and path.endswith("/messages/count_tokens"):
            return web.json_response({"input_tokens": max(1, len(json.dumps(body.get("messages", []))) // 4)})
        if request.method != "POST" or not path.endswith("/messages"):
            return _error(404, f"no route {request.method} {path}")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error(400, f"{name}: Field required")
        tool = _tool_to_use(body, b.tool_use)
        if body.get("stream"):
            return await self._stream(request, b, body, tool)
        content: list[dict[str, Any]] = [{"type": "text", "text": _text(body)}]
        if tool is not None:
            content.append({"type": "tool_use", "id": "toolu_mock1", "name": tool["name"], "input": _input(tool)})
        return web.json_response(
            {
                "id": "msg_mock",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": b.stop_reason or ("tool_use" if tool else "end_turn"),
                "stop_sequence": None,
                "usage": _usage(b),
            },
            headers=b.headers,
        )

    async def _stream(
        self, request: web.Request, b: AnthropicBehaviour, body: dict[str, Any], tool: dict[str, Any] | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", **b.headers})
        await resp.prepare(request)

        async def send(data: dict[str, Any]) -> None:
            await resp.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
            if b.chunk_delay:
                await asyncio.sleep(b.chunk_delay)

        usage = {**_usage(b), "output_tokens": 1}
        message = {
            "id": "msg_mock",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        await send({"type": "message_start", "message": message})
        if b.silent:
            while True:  # until the client goes away (the handler is then cancelled)
                await asyncio.sleep(3600)
        await send({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        await send({"type": "ping"})
        for i in range(b.chunks):
            await send({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}})
        await send({"type": "content_block_stop", "index": 0})
        if tool is not None:
            block = {"type": "tool_use", "id": "toolu_mock1", "name": tool["name"], "input": {}}
            await send({"type": "content_block_start", "index": 1, "content_block": block})
            args = json.dumps(_input(tool))
            for piece in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                await send({"type": "content_block_delta", "index": 1, "delta": delta})
            await send({"type": "content_block_stop", "index": 1})
        stop = b.stop_reason or ("tool_use" if tool else "end_turn")
        await send(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": b.output_tokens},
            }
        )
        await send({"type": "message_stop"})
        await resp.write_eof()
        return resp


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status, headers={"request-id": "req_mock", **(headers or {})})


def _usage(b: AnthropicBehaviour) -> dict[str, int]:
    return {
        "input_tokens": b.input_tokens,
        "output_tokens": b.output_tokens,
        "cache_read_input_tokens": b.cache_read_input_tokens,
        "cache_creation_input_tokens": b.cache_creation_input_tokens,
    }


def _text(body: dict[str, Any]) -> str:
    return f"Hello from mock Anthropic ({body['model']})."


def _tool_to_use(body: dict[str, Any], always: bool) -> dict[str, Any] | None:
    """The tool the request asks for: ``tool_choice`` ``tool`` (that one) or ``any``
    (the first), or the first whenever the behaviour says so."""
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice") or {}
    if choice.get("type") == "tool":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    if choice.get("type") == "any" or always:
        return dict(tools[0])
    return None


def _input(tool: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy the tool's schema: a sample value per required property."""
    schema = tool.get("input_schema") or {}
    props = schema.get("properties") or {}
    samples = {"string": "sample", "integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    return {
        name: samples.get((props.get(name) or {}).get("type", "string"), "sample")
        for name in schema.get("required", [])
    }
