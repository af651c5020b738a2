"""This gateway's row in the store's ``nodes`` table: written at start, refreshed every
:data:`HEARTBEAT_S` (with the revision it serves), deleted on a clean stop.

``aigw nodes`` lists the rows; one unseen for 15 s is stale. The writes run in a thread,
off the event loop; a store that is busy or gone is logged once and tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable

from store import __version__, nodes
from store.db import Store
from store.models import Node

log = logging.getLogger("aigw")

#: How often the row is refreshed (a node unseen for 15 s counts as stale).
HEARTBEAT_S = 2.0


class NodeRegistration:
    def __init__(
        self, store: Store, *, listen: str, admin_listen: str, workers: int, revision: Callable[[], int]
    ) -> None:
        self.store = store
        self.revision = revision
        host = socket.gethostname()
        self.node = Node(
            id=f"{host}-{os.getpid()}-{secrets.token_hex(3)}",
            host=host,
            listen=listen,
            admin_listen=admin_listen,
            workers=workers,
            version=__version__,
            started_at=time.time(),
        )
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def _write(self) -> None:
        self.node.revision = self.revision()
        with self.store.session() as s:
            nodes.heartbeat(s, self.node)

    async def start(self) -> None:
        await asyncio.to_thread(self._write)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-node")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await asyncio.to_thread(self._write)
                if self._failing:
                    log.warning("node %s registered again", self.node.id)
                self._failing = False
            except Exception as exc:  # keep serving; the row goes stale meanwhile
                if not self._failing:
                    log.error("cannot refresh node %s in the store (%s)", self.node.id, type(exc).__name__)
                self._failing = True

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        def remove() -> None:
            with self.store.session() as s:
                nodes.remove(s, self.node.id)

        try:
            await asyncio.to_thread(remove)
        except Exception as exc:
            log.error(
                "cannot remove node %s from the store (%s); it will show as stale", self.node.id, type(exc).__name__
            )
