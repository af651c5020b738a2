"""The record writer on a real SQLite store: batches, retry after a failure, bounds, fan-out."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from proxy import recorder as recorder_mod
from proxy.metrics import Metrics
from proxy.recorder import Recorder
from store import usage
from store.db import Store


def rec(i: int) -> tuple[Any, ...]:
    return usage.record_row({"ts": time.time(), "request_id": f"r{i}", "method": "POST", "path": "/p",
            "consumer": "c", "api": "a", "service": "s", "model": "m", "key_name": "k",
            "status": 200, "latency_ms": 1.0, "ttfb_ms": 0.5, "prompt_tokens": 1,
            "completion_tokens": 2, "total_tokens": 3, "cost": 0.0, "stream": False,
            "estimated": False, "error": ""})


def stored(store: Store) -> list[str]:
    with store.session() as s:
        return [r.request_id for r in usage.recent(s, 1000)]


async def test_batches_are_written_and_close_flushes(store: Store) -> None:
    r = Recorder(store, Metrics(), interval_s=0.05)
    r.start()
    for i in range(5):
        r.submit(rec(i))
    for _ in range(100):
        if len(stored(store)) == 5:
            break
        await asyncio.sleep(0.05)
    assert stored(store) == [f"r{i}" for i in range(5)]
    r.submit(rec(99))
    await r.close()
    assert "r99" in stored(store)


async def test_failed_write_is_kept_and_retried(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(store, Metrics(), interval_s=10)
    calls = {"n": 0}
    real = r._write

    def flaky(batch: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        real(batch)

    monkeypatch.setattr(r, "_write", flaky)
    r.submit(rec(1))
    assert await r.flush() is False and stored(store) == []
    r.submit(rec(2))
    assert await r.flush() is True
    assert stored(store) == ["r1", "r2"]


async def test_full_buffer_drops_and_counts(store: Store) -> None:
    m = Metrics()
    r = Recorder(store, m, max_pending=3)
    for i in range(5):
        r.submit(rec(i))
    assert m.records_dropped == 2 and m.requests_total == 5
    await r.flush()
    assert stored(store) == ["r0", "r1", "r2"]


async def test_slow_subscriber_loses_events_but_never_blocks(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
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
