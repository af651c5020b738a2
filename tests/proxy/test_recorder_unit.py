"""The record writer on a real SQLite store: batches, retry after a failure, bounds, fan-out."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from typing import Any

import orjson
import pytest
from helpers import wait_for_async
from sqlalchemy import create_engine, event

from proxy import recorder as recorder_mod
from proxy.metrics import Metrics
from proxy.recorder import Recorder, row_bytes
from store import usage
from store.db import Store


def rec(i: int, *, consumer: str = "c", status: int = 200, path: str = "/p") -> tuple[Any, ...]:
    return usage.record_row(
        {
            "ts": time.time(),
            "request_id": f"r{i}",
            "method": "POST",
            "path": path,
            "consumer": consumer,
            "api": "a",
            "service": "s",
            "model": "m",
            "key_name": "k",
            "status": status,
            "latency_ms": 1.0,
            "ttfb_ms": 0.5,
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "cost": 0.0,
            "stream": False,
            "estimated": False,
            "error": "",
        }
    )


def stored(store: Store) -> list[str]:
    with store.session() as s:
        return [r.request_id for r in usage.recent(s, 1000)]


async def test_batches_are_written_and_close_flushes(store: Store) -> None:
    r = Recorder(store, Metrics(), interval_s=0.05)
    r.start()
    for i in range(5):
        r.submit(rec(i))
    await wait_for_async(lambda: len(stored(store)) == 5, 5.0, 0.05, what="the first batch")
    assert stored(store) == [f"r{i}" for i in range(5)]
    r.submit(rec(99))
    await r.close()
    assert "r99" in stored(store)


async def test_failed_write_is_kept_and_retried(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(store, Metrics(), interval_s=10)
    calls = {"n": 0}
    real = r._writer.write  # the store's side: the recorder itself may be compiled

    def flaky(batch: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        real(batch)

    monkeypatch.setattr(r._writer, "write", flaky)
    r.submit(rec(1))
    assert await r.flush() is False and stored(store) == []
    r.submit(rec(2))
    assert await r.flush() is True
    assert stored(store) == ["r1", "r2"]


async def test_full_buffer_drops_and_counts(store: Store) -> None:
    m = Metrics()
    r = Recorder(store, m, max_pending_bytes=3 * row_bytes(rec(0)))
    for i in range(5):
        r.submit(rec(i))
    assert m.records_dropped == 2 and m.requests_total == 5
    await r.flush()
    assert stored(store) == ["r0", "r1", "r2"]


async def test_refusals_never_push_out_billed_records(store: Store) -> None:
    """A flood of refused requests (no consumer) is counted and sampled, with short paths; every
    billed record still finds room, whatever the flood filled."""
    m = Metrics()
    r = Recorder(store, m, max_pending_bytes=60 * row_bytes(rec(0)), max_unbilled_bytes=4096)
    for i in range(20_000):
        r.submit(rec(100_000 + i, consumer="", status=401 if i % 2 else 404, path="/" + "x" * 8000))
        if i % 400 == 0:
            r.submit(rec(i // 400))  # 50 billed records among them
    assert m.refused == {401: 10_000, 404: 10_000} and m.records_dropped == 0
    await r.flush()
    with store.session() as s:
        rows = usage.recent(s, 100_000)
    billed = [x for x in rows if x.consumer]
    refused = [x for x in rows if not x.consumer]
    assert len(billed) == 50
    assert 2 <= len(refused) <= 2 * 3, "one row per status per second (the loop takes a second or two)"
    assert all(len(x.path) <= 256 for x in refused)
    assert 'aigw_refused_total{status="401"} 10000' in m.render(revision=1, in_flight=0)


async def test_slow_subscriber_loses_events_but_never_blocks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_mod, "SUBSCRIBER_QUEUE", 2)
    r = Recorder(store, Metrics())
    q = r.subscribe()
    for i in range(4):
        r.submit(rec(i))  # returns at once although nobody reads
    first = q.get_nowait()
    assert first is not None and first.startswith(b"data: ")
    event = orjson.loads(first[6:])
    assert event["request_id"] == "r0" and event["time"].endswith("Z")
    await r.close()
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    assert items[-1] is None  # the end marker reaches even a full queue


def varied(i: int) -> tuple[Any, ...]:
    """A row whose every field differs by ``i``, with the awkward values a record can hold."""
    return usage.record_row(
        {
            "ts": 1_700_000_000.0 + i / 7,
            "request_id": f"req-{i:05d}",
            "method": "POST",
            "path": "/v1/chat/completions",
            "consumer": f"team-'{i % 3}'",
            "api": "chat",
            "service": "s",
            "model": f"gpt-Ω-{i % 5}",
            "key_name": "k",
            "status": 200 + i % 300,
            "latency_ms": i * 0.125,
            "ttfb_ms": None if i % 2 else i / 3,
            "prompt_tokens": i,
            "completion_tokens": 2 * i,
            "total_tokens": 3 * i,
            "cost": i * 1e-7,
            "stream": bool(i % 2),
            "estimated": bool(i % 3 == 0),
            "error": "" if i % 4 else 'vendor said "no"; DROP TABLE x',
            "attempts": []
            if i % 2
            else [{"service": "s", "key": "k", "status": 502, "reason": "connect", "ms": i / 4}],
        }
    )


def statements_for(store: Store, rows: list[tuple[Any, ...]], *, variable_limit: int | None = None) -> int:
    """Write ``rows`` through the gateway's writer; the number of INSERT statements it ran.

    ``variable_limit``: the writer gets an engine of its own on the same file whose
    connections have SQLite's parameter limit lowered to that.
    """
    engine = store.engine
    if variable_limit is not None:
        engine = create_engine(store.engine.url)
        event.listen(
            engine, "connect", lambda dbapi, _rec: dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
        )
    seen: list[str] = []

    def count(_conn: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if statement.startswith("INSERT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    writer = usage.RecordWriter(engine)
    try:
        writer.write(rows)
    finally:
        writer.close()
        event.remove(engine, "before_cursor_execute", count)
        if engine is not store.engine:
            engine.dispose()
    return len(seen)


def stored_rows(store: Store) -> list[tuple[Any, ...]]:
    """The rows as stored, the JSON column (``attempts``) read back as data."""
    at = usage.RECORD_FIELDS.index("attempts")
    with store.engine.connect() as conn:
        return [
            (*r[:at], json.loads(r[at]), *r[at + 1 :])
            for r in conn.exec_driver_sql(f"SELECT {', '.join(usage.RECORD_FIELDS)} FROM request_records ORDER BY id")
        ]


def test_a_large_batch_is_a_few_statements_and_every_row_intact(store: Store) -> None:
    """The writer thread lets go of the GIL in every statement and may wait a switch interval
    to get it back while the event loop is busy: one statement a row starved it under load on
    two cores (the backlog grew until records were dropped). 1,000 rows: 512+256+128+64+32+8."""
    rows = [varied(i) for i in range(1000)]
    assert statements_for(store, rows) == 6
    assert stored_rows(store) == rows


@pytest.mark.parametrize("n", [1, 2, 3, 511, 512, 513])
def test_batch_sizes_around_the_statement_size(store: Store, n: int) -> None:
    rows = [varied(i) for i in range(n)]
    statements_for(store, rows)
    assert stored_rows(store) == rows


def test_statements_shrink_to_sqlites_variable_limit(store: Store) -> None:
    """An SQLite built with the old limit of 999 parameters: 32 rows x 19 columns a statement."""
    rows = [varied(i) for i in range(100)]
    assert statements_for(store, rows, variable_limit=999) == 4  # 32+32+32+4
    assert stored_rows(store) == rows


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
async def test_the_writer_thread_runs_below_the_event_loop(store: Store) -> None:
    """SQLite's share of a batch must yield the core to requests (it was the p99 at low load)."""
    r = Recorder(store, Metrics())
    r.submit(rec(1))
    assert await r.flush()
    writer = next(t for t in threading.enumerate() if t.name.startswith("aigw-records"))
    assert writer.native_id is not None
    loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert os.getpriority(os.PRIO_PROCESS, writer.native_id) == min(19, loop_nice + recorder_mod.WRITER_NICE)
    await r.close()
    assert stored(store) == ["r1"]


def test_the_attempts_of_a_row_count_against_the_buffer() -> None:
    """A request that went through fallbacks holds one dict per attempt until it is written."""
    attempt = {"service": "s", "key": "k", "status": 502, "reason": "connect", "ms": 1.0}
    plain = usage.record_row({"ts": 1.0, "request_id": "r", "attempts": []})
    three = usage.record_row({"ts": 1.0, "request_id": "r", "attempts": [attempt] * 3})
    assert row_bytes(three) - row_bytes(plain) >= 3 * 300
