"""Request records off the request path: a bounded buffer, batch writes, live subscribers.

``submit`` is synchronous and O(1): it never waits for the database or a slow
``/events`` reader. A background task writes batches through a worker thread; a
failed batch is kept (bounded) and retried, and ``close`` flushes everything left.

Billed records (those with a consumer) and the rest have budgets of their own, in
bytes: a flood of refused requests cannot push out a billed record. Refusals without a
consumer (no key, no route, bad HTTP) are counted (``aigw_refused_total{status}``) and
only sampled into the store — one row per status per second, its path and message cut
to 256 characters — since anyone can send them as fast as the network allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from store import usage
from store.db import Store
from store.usage import RECORD_FIELDS

from .events import event_bytes
from .metrics import Metrics

log = logging.getLogger("aigw.records")

#: Bytes of billed records (with a consumer) waiting to be written, at most.
MAX_PENDING_BYTES = 64 * 1024 * 1024
#: Bytes of the other records (refused before a consumer was known) waiting, at most.
MAX_UNBILLED_BYTES = 8 * 1024 * 1024
#: What a refused request without a consumer stores of its path and its message.
REFUSED_TEXT = 256
#: What a row costs besides its strings (the tuple, numbers, the database's row).
ROW_OVERHEAD = 200
_CONSUMER, _STATUS, _PATH, _ERROR, _ATTEMPTS = (
    RECORD_FIELDS.index(k) for k in ("consumer", "status", "path", "error", "attempts")
)
#: What one ``attempts`` entry holds in memory (a dict of five and its values: ~400 bytes measured).
ATTEMPT_BYTES = 400
#: The row's text fields (every one a ``str``: :func:`proxy.events.record_of` writes ``""`` for none).
_TEXTS = operator.itemgetter(
    *(
        i
        for i, k in enumerate(RECORD_FIELDS)
        if k in ("request_id", "method", "path", "api", "service", "model", "key_name", "error")
    )
)
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


def row_bytes(row: tuple[Any, ...]) -> int:
    """About what a row holds in memory until it is written (its strings dominate)."""
    return ROW_OVERHEAD + sum(map(len, _TEXTS(row))) + ATTEMPT_BYTES * len(row[_ATTEMPTS])


def _shortened(row: tuple[Any, ...]) -> tuple[Any, ...]:
    path, error = row[_PATH], row[_ERROR]
    if len(path) <= REFUSED_TEXT and len(error) <= REFUSED_TEXT:
        return row
    out = list(row)
    out[_PATH] = path[:REFUSED_TEXT]
    out[_ERROR] = error[:REFUSED_TEXT]
    return tuple(out)


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
        self,
        store: Store,
        metrics: Metrics,
        *,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        max_unbilled_bytes: int = MAX_UNBILLED_BYTES,
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending_bytes = max_pending_bytes
        self.max_unbilled_bytes = max_unbilled_bytes
        self.interval_s = interval_s
        #: Rows ready for the writer (built here, on the loop: the writer thread only inserts).
        self._pending: list[tuple[Any, ...]] = []
        #: Bytes pending (waiting or being written), billed and not.
        self._billed_bytes = 0
        self._unbilled_bytes = 0
        #: The second in which a refusal of each status was last stored.
        self._sampled: dict[int, int] = {}
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
        billed = bool(row[_CONSUMER])
        if not billed and 400 <= row[_STATUS] < 500:  # refused before any consumer was known
            status = row[_STATUS]
            refused = self.metrics.refused
            refused[status] = refused.get(status, 0) + 1
            second = int(time.monotonic())
            if self._sampled.get(status) == second:
                return  # counted; one of this second's is stored already
            self._sampled[status] = second
            row = _shortened(row)
        size = row_bytes(row)
        if billed:
            room = self._billed_bytes + size <= self.max_pending_bytes
        else:
            room = self._unbilled_bytes + size <= self.max_unbilled_bytes
        if not room:
            self.metrics.records_dropped += 1
            if not self._drop_logged:
                self._drop_logged = True
                log.warning(
                    "record buffer full (%s records): dropping them until the database catches up",
                    "billed" if billed else "unbilled",
                )
            return
        if billed:
            self._billed_bytes += size
        else:
            self._unbilled_bytes += size
        if self._subscribers:
            data = event_bytes(row)
            for q in self._subscribers:
                with contextlib.suppress(asyncio.QueueFull):  # a slow reader loses events, never blocks us
                    q.put_nowait(data)
        self._pending.append(row)
        if len(self._pending) >= BATCH:
            self._wake.set()

    def _release(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows written (or dropped): their bytes are free again."""
        for row in rows:
            if row[_CONSUMER]:
                self._billed_bytes -= row_bytes(row)
            else:
                self._unbilled_bytes -= row_bytes(row)

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
            keep = batch + self._pending  # within budget: every row was admitted against it
            self._pending = keep
            self._writing = 0
            if not self._fail_logged:
                self._fail_logged = True
                log.error("cannot write request records (%s); keeping %d for retry", type(exc).__name__, len(keep))
            return False
        self._writing = 0
        self._release(batch)
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
