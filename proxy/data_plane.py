"""The data plane: its HTTP server, the vendor pool, the record writer and the revision poller.

Routing is not done by a router (the table changes on every reload) but by a dictionary
lookup in the current snapshot, inside :func:`proxy.pipeline.make_handler`'s handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .http_server import HttpServer
from .pipeline import MAX_BODY, make_handler, record_refusal
from .state import GatewayState
from .vendor_client import VendorPool

log = logging.getLogger("aigw")

#: How often the store's revision is checked (changes go live within 2 s).
POLL_S = 0.5


async def _poll_revision(state: GatewayState) -> None:
    failed = False
    while True:
        await asyncio.sleep(POLL_S)
        try:
            await state.reload()
            failed = False
        except Exception as exc:  # the store is busy or gone: keep serving the last snapshot
            if not failed:
                log.error(
                    "cannot read the configuration revision (%s); serving revision %d",
                    type(exc).__name__,
                    state.snapshot.revision,
                )
            failed = True


class DataPlane:
    """Started once by ``aigw serve``; stopped in the order that loses nothing."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.server: HttpServer | None = None
        self._poller: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        state = self.state
        state.recorder.start()
        state.pool = VendorPool()  # ONE keep-alive pool for every vendor call
        state.probes.sync(state.snapshot.services.values())
        self._poller = asyncio.get_running_loop().create_task(_poll_revision(state), name="aigw-poll")

        def refused(method: str, path: str, headers: dict[str, str], status: int, message: str) -> str:
            return record_refusal(state, method, path, headers, status, message)

        self.server = HttpServer(
            make_handler(state),
            client_timeout=state.client_timeout_s,
            max_body=MAX_BODY,
            on_refused=refused,
            max_connections=lambda: state.snapshot.gateway.max_connections,
            metrics=state.metrics,
        )

    async def listen(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        assert self.server is not None
        await self.server.start(host, port, backlog=1024, reuse_port=reuse_port)

    async def cleanup(self, drain_s: float) -> None:
        """Stop accepting, let in-flight requests finish, then flush the records."""
        if self.server is not None:
            await self.server.shutdown(drain_s)
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.state.probes.close()
        if self.state.pool is not None:
            await self.state.pool.close()
        await self.state.recorder.close()
        await self.state.slots.close()  # before the limiter: a shared counter uses its connections
        await self.state.limiter.close()
        await self.state.cache.close()
