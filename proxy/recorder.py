"""Request records off the request path: a bounded buffer, batch writes, live subscribers.

``submit`` is synchronous and O(1): it never waits for the database or a slow
``/events`` reader. A background task writes batches through a worker thread; a
failed batch is kept (bounded) and retried, and ``close`` flushes everything left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from store import usage
from store.db import Store

from .events import event_bytes
from .metrics import Metrics

log = logging.getLogger("aigw.records")

MAX_PENDING = 50_000
#: Rows that wake the writer before its interval. Small on purpose: the writer thread shares
#: the gateway's CPU, and a batch of 1,000 rows (~8 ms of SQLite work) delayed the requests
#: running meanwhile by as much; 64 rows take ~0.5 ms. Under load batches grow by themselves
#: (rows gather while the previous batch is written).
BATCH = 64
INTERVAL_S = 0.3
SUBSCRIBER_QUEUE = 2000
#: How much lower the writer thread's priority is than the rest of the gateway (nice
#: steps). On a core it shares with the event loop, SQLite's part of a batch (run without
#: the GIL) then yields to the loop when a request needs the CPU, instead of holding it for
#: the batch's millisecond; 10 steps still leave it ~10% of a saturated core (it needs ~6%).
WRITER_NICE = 10


def _lower_priority() -> None:
    """Make the calling thread a background one. Linux only: there a thread's id is a valid
    ``setpriority`` target with a nice value of its own; elsewhere a thread id may name a
    process (or nothing), so nothing is changed."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError):  # refused (e.g. a sandbox): the writer runs as is
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))


class Recorder:
    def __init__(
        self, store: Store, metrics: Metrics, *, max_pending: int = MAX_PENDING, interval_s: float = INTERVAL_S
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.interval_s = interval_s
        #: Rows ready for the writer (built here, on the loop: the writer thread only inserts).
        self._pending: list[tuple[Any, ...]] = []
        self._writer = usage.RecordWriter(store.engine)
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._drop_logged = False
        self._fail_logged = False
        self._flush_lock = asyncio.Lock()
        self._writing = 0
        #: One thread of its own (not the loop's default executor, which also resolves vendor
        #: host names): it can run at a lower priority.
        self._executor = ThreadPoolExecutor(1, "aigw-records", initializer=_lower_priority)

    # ------------------------------------------------------------ producer side

    def submit(self, row: tuple[Any, ...]) -> None:
        """Count, publish and queue one record (a row in ``RECORD_FIELDS`` order)."""
        self.metrics.observe(row)
        if self._subscribers:
            data = event_bytes(row)
            for q in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):  # a slow reader loses events, never blocks us
                    q.put_nowait(data)
        if len(self._pending) >= self.max_pending:
            self.metrics.records_dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                log.warning("record buffer full (%d): dropping records until the database catches up", self.max_pending)
            return
        self._pending.append(row)
        if len(self._pending) >= BATCH:
            self._wake.set()

    @property
    def pending_count(self) -> int:
        """Records not yet stored: waiting, or in the batch being written."""
        return len(self._pending) + self._writing

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        q: asyncio.Queue[bytes | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        self._subscribers.discard(q)

    # ------------------------------------------------------------ writer side

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aigw-records")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            await self._flush_once()

    async def flush(self) -> bool:
        """Write what is pending now; returns when every earlier record is stored (or failed)."""
        return await self._flush_once()

    async def _flush_once(self) -> bool:
        async with self._flush_lock:  # one writer at a time, so "flushed" means flushed
            return await self._flush_locked()

    async def _flush_locked(self) -> bool:
        if not self._pending:
            return True
        batch, self._pending = self._pending, []
        self._writing = len(batch)
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
        except Exception as exc:  # the database is busy or gone: keep the batch, retry later
            self.metrics.record_write_errors += 1
            keep = batch + self._pending
            overflow = len(keep) - self.max_pending
            if overflow > 0:
                self.metrics.records_dropped += overflow
                keep = keep[overflow:]
            self._pending = keep
            self._writing = 0
            if not self._fail_logged:
                self._fail_logged = True
                log.error("cannot write request records (%s); keeping %d for retry", type(exc).__name__, len(keep))
            return False
        self._writing = 0
        if self._fail_logged:
            self._fail_logged = False
            log.info("request records written again")
        self._drop_logged = False
        return True

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        self._writer.write(batch)

    async def close(self, attempts: int = 5) -> None:
        """Stop the writer, write everything pending, end every ``/events`` stream. Once."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        for i in range(attempts):
            if await self._flush_once() and not self._pending:
                break
            await asyncio.sleep(0.2 * (i + 1))
        if self._pending:
            log.error("could not store %d request records on stop", len(self._pending))
        await asyncio.get_running_loop().run_in_executor(self._executor, self._writer.close)
        self._executor.shutdown(wait=False)
        for q in list(self._subscribers):
            if q.full():  # make room for the end marker: the reader is leaving anyway
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(None)
