"""The admin listener: health, Prometheus metrics, live records, reload.

``/events``, ``/reload``, ``/limits`` and ``/cache/clear`` need the admin token (constant-time check); health and
metrics are open, so they must never carry a credential or a consumer key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from store import __version__
from store.admin_token import check

from .errors import GatewayError, cache_unavailable, error_body, unauthorized
from .metrics import render_resilience
from .state import CLIENT_TIMEOUT_S, GatewayState

log = logging.getLogger("aigw")

HEARTBEAT_S = 10.0

#: How the admin handlers find the shared state.
STATE = web.AppKey("aigw_state", GatewayState)


class _DropClientHttpErrors(logging.Filter):
    """HTTP a client got wrong is the client's problem: aiohttp logs each one with a traceback
    and the offending bytes (which may hold an API key), so anyone could flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


class _JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering HTTP it cannot parse in the API's error shape
    (plain text by default) and never echoing the bytes."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs (filtered); refuses if already answering
        if status < 500:
            body = error_body(
                "the request is not valid HTTP/1.1 (request line, a header or the framing); fix the client",
                "invalid_request_error",
                "bad_http_request",
            )
        else:
            body = error_body(
                "the gateway failed to handle this request; see gateway.log", "api_error", "internal_error"
            )
        resp = web.Response(
            status=status, body=body, content_type="application/json", headers={"x-request-id": os.urandom(16).hex()}
        )  # every answer has one
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    """Makes :class:`_JsonErrorHandler` connections (aiohttp's makes its own class)."""

    def __init__(self, base: web.Server, **kwargs: Any) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            **kwargs,
        )
        self._handler_kwargs = kwargs

    def __call__(self) -> web.RequestHandler:
        return _JsonErrorHandler(self, loop=asyncio.get_running_loop(), **self._handler_kwargs)


class _AdminRunner(web.AppRunner):
    """The app's runner with :class:`_JsonErrorServer` as its connection factory."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_kwargs = {k: v for k, v in kwargs.items() if k not in _RUNNER_ONLY}

    async def _make_server(self) -> web.Server:
        return _JsonErrorServer(await super()._make_server(), **self._handler_kwargs)


#: ``AppRunner`` options that are the runner's own, not the connection handler's.
_RUNNER_ONLY = frozenset({"handle_signals", "shutdown_timeout", "handler_cancellation"})


class AdminListener:
    """The admin app on its own aiohttp runner (started after the data plane listens).

    ``keepalive_timeout`` closes a connection that sends no complete request head within
    the client timeout, idle or trickling (aiohttp's default would keep it an hour).
    """

    def __init__(self, state: GatewayState) -> None:
        logging.getLogger("aiohttp.server").addFilter(_DropClientHttpErrors())
        self.runner = _AdminRunner(
            create_admin_app(state),
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=2.0,
            handle_signals=False,
            keepalive_timeout=CLIENT_TIMEOUT_S,
        )

    async def start(self, host: str, port: int) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()

    async def start_unix(self, path: str) -> None:
        """A worker's admin app, on a private socket only its supervisor reads."""
        await self.runner.setup()
        await web.UnixSite(self.runner, path).start()

    async def cleanup(self) -> None:
        await self.runner.cleanup()


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(err: GatewayError) -> web.Response:
    return web.Response(body=err.body(), status=err.status, content_type="application/json", headers=err.headers)


def _authorized(state: GatewayState, request: web.Request) -> bool:
    return check(state.admin_token, request.headers.get("Authorization"))


def _denied() -> web.Response:
    return _error(
        unauthorized(
            "this admin endpoint needs 'Authorization: Bearer <admin token>'; "
            "the token is in the file admin.token in the gateway's data "
            "directory",
            code="invalid_admin_token",
        )
    )


async def healthz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            "status": "ok",
            "version": __version__,
            "revision": state.snapshot.revision,
            "listen": state.info.listen,
            "admin_listen": state.info.admin_listen,
            "public_url": state.info.public_url,
            "pid": os.getpid(),
            "started_at": state.started_at,
            "requests_total": state.metrics.requests_total,
            "in_flight": state.in_flight,
            "db": state.store.location.describe(),
            "services": state.services_health(),
            "keys": state.keys_load(await state.shared_key_load()),
            "limits": state.limiter.describe(),
            "cache": state.cache.describe(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.metrics.records_pending = state.recorder.pending_count
    state.metrics.limits_shared = int(state.limiter.shared)
    try:
        cache = await state.cache.stats()
    except Exception as exc:  # a shared backend gone away: the rest of the metrics still count
        log.warning("response cache stats failed: %s", type(exc).__name__)
        cache = None
    text = state.metrics.render(revision=state.snapshot.revision, in_flight=state.in_flight, cache=cache)
    text += render_resilience(state.services_health(), state.keys_load())
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
    )


async def events(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if not _authorized(state, request):
        return _denied()
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    queue = state.recorder.subscribe()
    try:
        await resp.write(b": connected\n\n")
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            if item is None:  # the gateway is stopping
                break
            await resp.write(item)
    except (ConnectionResetError, asyncio.CancelledError):
        state.recorder.unsubscribe(queue)
        raise
    state.recorder.unsubscribe(queue)
    with contextlib.suppress(ConnectionResetError):
        await resp.write_eof()
    return resp


async def reload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _authorized(state, request):
        return _denied()
    try:
        revision = await state.reload(force=True)
    except Exception as exc:
        log.error("reload failed: %s", type(exc).__name__)
        return _error(
            GatewayError(
                500,
                "api_error",
                "reload_failed",
                f"could not read the configuration: {type(exc).__name__}; see gateway.log",
            )
        )
    return _json({"status": "ok", "revision": revision})


async def limits(request: web.Request) -> web.Response:
    """Each consumer's limits and current use in this process (the console's consumer pages)."""
    state = request.app[STATE]
    if not _authorized(state, request):
        return _denied()
    snap = state.snapshot
    use = state.limiter.current_use(snap)
    if not isinstance(use, dict):  # counted in Redis: read from there
        use = await use
    return _json({"revision": snap.revision, "consumers": use})


async def cache_clear(request: web.Request) -> web.Response:
    """Drop cached answers: every API's, or one API's (``?api=NAME``)."""
    state = request.app[STATE]
    if not _authorized(state, request):
        return _denied()
    name = request.query.get("api")
    if name is not None and name not in state.snapshot.apis:
        known = ", ".join(sorted(state.snapshot.apis)) or "(none configured)"
        return _error(
            GatewayError(404, "invalid_request_error", "model_api_not_found", f"no model API {name!r}; known: {known}")
        )
    try:
        cleared = await (state.cache.clear() if name is None else state.cache.drop_api(name))
    except Exception as exc:  # the shared store cannot be reached: nothing was cleared for sure
        log.warning("response cache clear failed: %s", type(exc).__name__)
        return _error(cache_unavailable())
    log.info(
        "response cache cleared: %d entr%s%s", cleared, "y" if cleared == 1 else "ies", f" of {name!r}" * bool(name)
    )
    return _json({"cleared": cleared})


def create_admin_app(state: GatewayState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/events", events)
    app.router.add_post("/reload", reload)
    app.router.add_get("/limits", limits)
    app.router.add_post("/cache/clear", cache_clear)
    return app
