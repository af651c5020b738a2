"""The floor of aigw's own HTTP layer: ``python -m tests.bench.raw_relay PORT UPSTREAM_URL``.

aigw's data-plane server (:mod:`proxy.http_server`) and vendor client
(:mod:`proxy.vendor_client`) with nothing between them — no authentication, limits,
records or header hygiene. What it serves is the most any gateway built on this layer
(one Python process) can serve here; aigw's figure over this one is the cost of its
features. Not part of the benchmark's table: run it by hand and point wrk at it.
"""

from __future__ import annotations

import asyncio
import sys

from proxy.http_server import HttpServer, Request
from proxy.vendor_client import VendorPool, origin_of


async def main(port: int, upstream: str) -> None:
    pool = VendorPool()
    origin = origin_of(upstream)

    async def relay(req: Request) -> None:
        body = await req.read_body()
        head = (
            b"POST "
            + origin.base_path.encode()
            + b"/chat/completions HTTP/1.1\r\n"
            + origin.host_line
            + b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        conn = await pool.exchange(origin, head + body, connect_timeout=10, read_timeout=60)
        try:
            if conn.header(b"content-type").startswith(b"text/event-stream"):
                req.start_stream(conn.status, b"content-type: text/event-stream\r\n", await conn.read_chunk())
                while chunk := await conn.read_chunk():
                    await req.write(chunk)
                req.end_stream()
            else:
                req.respond(conn.status, b"content-type: application/json\r\n", await conn.read_all())
        finally:
            pool.release(conn)

    server = HttpServer(relay, client_timeout=60, max_body=8 * 1024 * 1024)
    await server.start("127.0.0.1", port, backlog=4096)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main(int(sys.argv[1]), sys.argv[2].rstrip("/")))
