"""The yardstick: the least an aiohttp relay can do (``python bare_relay.py PORT UPSTREAM_URL``).

uvloop, one shared ``ClientSession`` with an unbounded keep-alive pool, the body passed
through as bytes, streams relayed chunk by chunk as they arrive. No authentication,
no limits, no records, no header hygiene: what any Python gateway on aiohttp pays
before doing its job, so "aigw / bare relay" is the cost of aigw's own work.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    session = request.app[SESSION]
    async with session.request(
        request.method,
        request.app[UPSTREAM] + request.path_qs,
        data=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench-vendor"},
    ) as resp:
        ctype = resp.headers.get("Content-Type", "application/json")
        if ctype.startswith("text/event-stream"):
            out = web.StreamResponse(status=resp.status, headers={"Content-Type": ctype})
            await out.prepare(request)
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
        data = await resp.read()
        return web.Response(body=data, status=resp.status, headers={"Content-Type": ctype})


async def _session(app: web.Application):  # type: ignore[no-untyped-def]
    app[SESSION] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60), timeout=aiohttp.ClientTimeout(total=None)
    )
    yield
    await app[SESSION].close()


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app[UPSTREAM] = upstream
    app.cleanup_ctx.append(_session)
    app.router.add_route("*", "/{tail:.*}", relay)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        backlog=4096,
        shutdown_timeout=1.0,
        loop=loop_factory() if loop_factory else None,
    )


if __name__ == "__main__":
    main()
