"""The data-plane application: one catch-all handler and its long-lived resources.

Routing is not done by aiohttp's router (the table changes on every reload) but by a
dictionary lookup in the current snapshot, inside :func:`proxy.pipeline.handle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .context import RequestContext
from .errors import GatewayError
from .pipeline import MAX_BODY, error_response, handle, request_id_of
from .state import STATE, GatewayState

log = logging.getLogger("aigw")

#: How often the store's revision is checked (SPEC: changes live within 2 s).
POLL_S = 0.5


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    """ONE session and connection pool for every vendor call (keep-alive, no per-host cap)."""
    state = app[STATE]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60,
                                     ttl_dns_cache=300)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                    cookie_jar=aiohttp.DummyCookieJar(),
                                    timeout=aiohttp.ClientTimeout(total=None))
    state.session = session
    yield
    await session.close()
    state.session = None


async def _records(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.recorder.start()
    yield
    await state.recorder.close()


async def _poll_revision(state: GatewayState) -> None:
    failed = False
    while True:
        await asyncio.sleep(POLL_S)
        try:
            await state.reload()
            failed = False
        except Exception as exc:  # the store is busy or gone: keep serving the last snapshot
            if not failed:
                log.error("cannot read the configuration revision (%s); serving revision %d",
                          type(exc).__name__, state.snapshot.revision)
            failed = True


async def _revision_poller(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.get_running_loop().create_task(_poll_revision(app[STATE]), name="aigw-poll")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` is honoured; any other expectation gets our error shape."""
    expect = request.headers.get("Expect", "")
    if expect.lower() == "100-continue":
        if request.version == aiohttp.HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the real answer has not started yet
        return None
    ctx = RequestContext(request.app[STATE].snapshot, request_id_of(request), request.method,
                         request.path)
    return error_response(GatewayError(417, "invalid_request_error", "expectation_failed",
                                       "only 'Expect: 100-continue' is supported; drop the "
                                       "Expect header"), ctx)


def create_app(state: GatewayState) -> web.Application:
    # aiohttp refuses bodies larger than this; the pipeline turns that into our 413.
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = state
    app.cleanup_ctx.append(_records)
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_revision_poller)
    app.router.add_route("*", "/{tail:.*}", handle, expect_handler=expect_continue)
    return app
