"""The Usage section: the numbers are ``store.usage.totals``; period and grouping switch; quota use."""

from __future__ import annotations

import time
from typing import Any

from pilot_helpers import wait_until
from rich.text import Text
from textual.widgets import DataTable

from store import repo, usage
from store.db import Store
from store.spec import ConsumerSpec
from store.usage import insert_records
from tui.app import AigwApp
from tui.bars import bar
from tui.screens.usage import UsageScreen, period_since

DAY = 86_400.0


def _rec(
    ts: float,
    consumer: str,
    *,
    model: str = "m-a",
    api: str = "api-a",
    pt: int = 11,
    ct: int = 7,
    cost: float = 0.0000228,
    status: int = 200,
) -> dict[str, Any]:
    return {
        "ts": ts,
        "request_id": f"r-{ts}-{consumer}",
        "consumer": consumer,
        "api": api,
        "model": model,
        "service": "svc",
        "status": status,
        "latency_ms": 12.0,
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "total_tokens": pt + ct,
        "cost": cost,
    }


def _seed(store: Store) -> float:
    """Records today, 3 days ago and 20 days ago; ``team`` has a daily token quota."""
    now = time.time()
    today = max(usage.period_start("day", now) + 1, now - 60)
    recs = [
        _rec(today, "app"),
        _rec(today, "app", model="m-b", api="api-b", pt=100, ct=50, cost=0.5),
        _rec(today, "team", pt=300, ct=200, cost=0.25),
        _rec(today, "team", status=502, pt=0, ct=0, cost=0),
        _rec(now - 3 * DAY, "app", pt=1000, ct=1000, cost=2.0),
        _rec(now - 20 * DAY, "team", model="m-b", pt=5000, ct=5000, cost=10.0),
    ]
    with store.session() as s:
        insert_records(s, recs)
        repo.save(s, "consumers", ConsumerSpec("app"))
        repo.save(s, "consumers", ConsumerSpec("team", quota=1000, quota_unit="tokens", quota_period="day"))
    return now


def _cells(table: DataTable[Any]) -> dict[str, dict[str, str]]:
    """First cell → {column label → cell text}."""
    labels = [c.label.plain for c in table.ordered_columns]
    out = {}
    for key in table.rows:
        row = [c.plain if isinstance(c, Text) else str(c) for c in table.get_row(key)]
        out[row[0]] = dict(zip(labels, row, strict=False))
    return out


def _expected(store: Store, by: str, period: str) -> dict[str, dict[str, Any]]:
    with store.session() as s:
        return {r[by]: r for r in usage.totals(s, by=by, since=period_since(period))}


async def _loaded(pilot: Any, screen: UsageScreen, period: str, by: str, store: Store) -> dict[str, dict[str, str]]:
    want = _expected(store, by, period)
    table = screen.query_one("#usage-table", DataTable)
    await wait_until(
        pilot,
        lambda: screen.period == period and screen.by == by and set(_cells(table)) == set(want),
        what=f"{period}/{by} rows",
    )
    cells = _cells(table)
    for name, r in want.items():
        row = cells[name]
        assert row["Requests"] == f"{r['requests']:,}" and row["Errors"] == f"{r['errors']:,}"
        assert row["Tokens in"] == f"{r['prompt_tokens']:,}" and row["Tokens out"] == f"{r['completion_tokens']:,}"
        assert row["Total tokens"] == f"{r['total_tokens']:,}"
        assert abs(float(row["Cost"].lstrip("$").replace(",", "")) - r["cost"]) < 0.005  # to the cent
    return cells


async def test_usage_numbers_match_totals_and_switch(store: Store) -> None:
    _seed(store)
    app = AigwApp(store, start_section="usage", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, UsageScreen)
        today = await _loaded(pilot, screen, "today", "consumer", store)
        assert today["app"]["Requests"] == "2" and today["team"]["Requests"] == "2"
        assert today["team"]["Errors"] == "1"
        summary = str(screen.query_one("#usage-summary").render())
        assert "4 requests" in summary and "$0.75" in summary
        await pilot.press("w")
        week = await _loaded(pilot, screen, "7d", "consumer", store)
        assert week["app"]["Requests"] == "3"
        await pilot.press("m")
        month = await _loaded(pilot, screen, "30d", "consumer", store)
        assert month["team"]["Total tokens"] == f"{500 + 10_000:,}"
        assert month["team"]["Share of cost"].strip() == "█" * 16  # the biggest spender fills the bar
        await pilot.press("g")
        await _loaded(pilot, screen, "30d", "api", store)
        await pilot.press("g")
        models = await _loaded(pilot, screen, "30d", "model", store)
        assert set(models) == {"m-a", "m-b"}
        await pilot.press("d")
        await _loaded(pilot, screen, "today", "model", store)


async def test_quota_use_shown(store: Store) -> None:
    now = _seed(store)
    with store.session() as s:
        used = usage.quota_used(s, "team", "tokens", usage.period_start("day", now))
    assert used == 500
    app = AigwApp(store, start_section="usage", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, UsageScreen)
        quotas = screen.query_one("#usage-quotas", DataTable)
        await wait_until(pilot, lambda: quotas.row_count == 1, what="the quota row")
        row = _cells(quotas)["team"]
        assert row["Quota"] == "1,000 tokens per day"
        assert row["Used"] == "500 tokens" and row["Left"] == "500 tokens"
        assert row["Use"].endswith("50.0%")


async def test_tokens_and_cost_saved_by_the_cache_shown(store: Store) -> None:
    now = time.time()
    hit = {**_rec(now - 1, "app", pt=40, ct=20, cost=0.0), "service": "", "cache": "hit", "cost_saved": 0.125}
    with store.session() as s:
        insert_records(s, [_rec(now - 1, "app"), hit])
    app = AigwApp(store, start_section="usage", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, UsageScreen)
        await wait_until(pilot, lambda: "from the cache" in str(screen.query_one("#usage-summary").render()))
        summary = str(screen.query_one("#usage-summary").render())
        assert "2 requests" in summary and "18 tokens" in summary  # the hit's 60 are not used again
        assert "1 from the cache saved 60 tokens, $0.125000" in summary


def test_bar_lengths() -> None:
    assert bar(0, 10, 8).plain == " " * 8
    assert bar(10, 10, 8).plain == "█" * 8
    assert bar(5, 10, 8).plain == "████    "
    assert bar(0.001, 10, 8).plain.strip() == "▏"  # a non-zero value is never invisible
