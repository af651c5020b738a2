"""The Traffic pane's rules without a UI: filter words, pause, the bound, prefill, stats, cells."""

from __future__ import annotations

import time
from typing import Any

from tui.data.traffic_feed import RecordFilter, TrafficFeed, TrafficStats, is_error, status_kind
from tui.follow import parse_event_line
from tui.widgets.traffic_table import COLUMNS, cells


def rec(
    i: int,
    *,
    status: int = 200,
    consumer: str = "app",
    api: str = "hunyuan-api",
    model: str = "hunyuan-turbos-latest",
    ts: float | None = None,
    latency: float = 10.0,
) -> dict[str, Any]:
    return {
        "ts": time.time() if ts is None else ts,
        "request_id": f"r{i}",
        "consumer": consumer,
        "api": api,
        "model": model,
        "service": "main",
        "key_name": "k1",
        "status": status,
        "latency_ms": latency,
        "ttfb_ms": None,
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "cost": 0.0000228,
        "estimated": False,
    }


def test_filter_words() -> None:
    recs = [
        rec(1),
        rec(2, status=429, consumer="team"),
        rec(3, status=503, model="deepseek-v3"),
        rec(4, status=499, api="other-api"),
    ]

    def ids(text: str) -> list[str]:
        f = RecordFilter.parse(text)
        return [r["request_id"] for r in recs if f.matches(r)]

    assert ids("") == ["r1", "r2", "r3", "r4"]
    assert ids("4xx") == ["r2", "r4"]
    assert ids("5xx") == ["r3"]
    assert ids("2xx") == ["r1"]
    assert ids("429") == ["r2"]
    assert ids("errors") == ["r2", "r3", "r4"]
    assert ids("TEAM") == ["r2"]
    assert ids("deepseek") == ["r3"]
    assert ids("other-api") == ["r4"]
    assert ids("consumer:app 5xx") == ["r3"]
    assert ids("model:turbos api:hunyuan") == ["r1", "r2"]
    assert ids("status:4xx consumer:app") == ["r4"]
    assert ids("nothing-like-this") == []


def test_status_colours_and_errors() -> None:
    assert [status_kind(s) for s in (200, 302, 400, 429, 499, 500, 504, 0)] == [
        "ok",
        "ok",
        "warn",
        "warn",
        "bad",
        "bad",
        "bad",
        "bad",
    ]
    assert not is_error(200) and is_error(404) and is_error(499) and is_error(0)


def test_newest_first_bounded_and_pause_counts() -> None:
    feed = TrafficFeed(maxlen=5)
    feed.add([rec(i) for i in range(3)])
    assert [r["request_id"] for r in feed.view()] == ["r2", "r1", "r0"]
    feed.pause()
    feed.add([rec(i) for i in range(3, 8)])
    assert feed.unseen == 5
    assert [r["request_id"] for r in feed.view()] == ["r2", "r1", "r0"]  # frozen
    feed.set_filter("r1")
    assert [r["request_id"] for r in feed.view()] == ["r1"]  # filtering a frozen view
    feed.set_filter("")
    feed.resume()
    assert feed.unseen == 0
    assert [r["request_id"] for r in feed.view()] == ["r7", "r6", "r5", "r4", "r3"]  # bounded to 5


def test_prefill_goes_behind_and_skips_duplicates() -> None:
    feed = TrafficFeed(maxlen=4)
    live = rec(10, ts=1000.0)
    feed.add([live])
    stored = [rec(7, ts=990.0), rec(8, ts=995.0), dict(live)]
    assert feed.add_older(stored) == 2
    assert [r["request_id"] for r in feed.view()] == ["r10", "r8", "r7"]
    assert feed.add_older([rec(1, ts=900.0), rec(2, ts=901.0)]) == 1  # only room for one
    assert [r["request_id"] for r in feed.view()] == ["r10", "r8", "r7", "r2"]
    assert len({r["_seq"] for r in feed.records}) == 4


def test_stats_per_second() -> None:
    stats = TrafficStats(window_s=10)
    now = 10_000.0
    stats.add(
        [
            rec(1, ts=now - 3.5, latency=100),
            rec(2, ts=now - 3.5, latency=300, status=500),
            rec(3, ts=now - 3.5, latency=200),
            rec(4, ts=now - 100),
        ],
        now=now,
    )
    rps, p50, err = stats.series(now=now)
    assert len(rps) == 10 and sum(rps) == 3  # the one from 100 s ago is outside the window
    i = rps.index(3.0)
    assert p50[i] == 200 and round(err[i], 1) == 33.3
    rate, median, errors = stats.recent(10, now=now)
    assert rate == 0.3 and median == 200 and round(errors, 1) == 33.3


def test_cells_mark_estimates_and_missing_values() -> None:
    r = rec(1, status=502)
    r.update(estimated=True, consumer="", ttfb_ms=None, latency_ms=1234.5)
    c = dict(zip([col.key for col in COLUMNS], cells(r), strict=True))
    assert c["consumer"] == "–" and c["status"] == "502" and c["latency"] == "1234ms" and c["ttfb"] == "–"
    assert c["in"] == "~11" and c["out"] == "~7" and c["cost"] == "$0.000023"


def test_sse_lines() -> None:
    assert parse_event_line('data: {"request_id": "x"}') == {"request_id": "x"}
    assert parse_event_line(": ping") is None
    assert parse_event_line("data: not json") is None
    assert parse_event_line("data: [1, 2]") is None
    assert parse_event_line("event: message") is None
