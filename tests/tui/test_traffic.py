"""The Traffic pane against a real ``aigw serve``: live rows, pause, filter, detail, reconnect."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import GatewayProcess, record_for
from mock_vendor import MockVendor
from pilot_helpers import wait_until
from rich.console import Console
from textual.widgets import Static
from usage_env import CHAT, CLIENT, MODEL, chat, configure, gateway_for

from store.db import Store, open_store
from tui.app import AigwApp
from tui.gateway_process import GatewayController
from tui.modals.request_detail import RequestDetailModal
from tui.screens.traffic import TrafficScreen
from tui.widgets.traffic_table import TrafficTable


class Env:
    def __init__(self, db: Path, keys: dict[str, str], gw: GatewayProcess) -> None:
        self.db, self.keys, self.gw = db, keys, gw


@pytest.fixture(scope="module")
def env(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    db = tmp_path_factory.mktemp("traffic") / "data" / "aigw.db"
    keys = configure(db, vendor)
    env = Env(db, keys, gateway_for(db).start())
    try:
        yield env
    finally:
        env.gw.stop()  # the reconnect test replaces the process: stop the current one


@pytest.fixture
def console_store(env: Env) -> Iterator[Store]:
    st = open_store(str(env.db))
    yield st
    st.dispose()


def _app(st: Store) -> AigwApp:
    return AigwApp(st, start_section="traffic", gateway=GatewayController(st), poll_interval=None)


def _plain(renderable: Any) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def _ids(screen: TrafficScreen) -> list[str]:
    return [r["request_id"] for r in screen.query_one(TrafficTable).rows]


def _send(env: Env, n: int = 1, *, consumer: str = "app", stream: bool = False, tag: str = "t") -> list[str]:
    ids = []
    for _ in range(n):
        rid = f"{tag}-{uuid.uuid4().hex[:12]}"
        assert chat(env.gw.url, env.keys[consumer], stream=stream, request_id=rid).status_code == 200
        ids.append(rid)
    return ids


async def _connected(pilot: Any, screen: TrafficScreen) -> None:
    await wait_until(pilot, lambda: screen.connected, timeout=15, what="the /events stream")


async def test_requests_appear_live_newest_first_with_fields(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        first, second = _send(env, 2)
        # "within a second" of the request: generous bound for a loaded CI box, but the
        # records come from /events, not the 0.3 s database batches or a poll.
        await wait_until(pilot, lambda: _ids(screen)[:2] == [second, first], timeout=5, what="live rows")
        table = screen.query_one(TrafficTable)
        row = table.rows[0]
        assert row["consumer"] == "app" and row["api"] == "hunyuan-api" and row["status"] == 200
        assert row["prompt_tokens"] == 11 and row["completion_tokens"] == 7 and row["cost"] > 0
        text = table.row_text(0)
        assert "app" in text and "hunyuan-api" in text and "200" in text and "$0.000023" in text
        await pilot.pause(1.2)  # a stats tick
        assert sum(screen.feed.stats.series()[0]) >= 2


async def test_prefill_from_store_on_open(env: Env, console_store: Store) -> None:
    (rid,) = _send(env, 1, tag="before")
    record_for(console_store, rid)  # stored before the pane opens: only the prefill can show it
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await wait_until(pilot, lambda: rid in _ids(screen), timeout=10, what="prefilled row")
        assert _ids(screen).count(rid) == 1


async def test_pause_keeps_and_counts_then_resume_shows(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        (before,) = _send(env, 1, tag="pre")
        await wait_until(pilot, lambda: _ids(screen)[:1] == [before], timeout=5)
        await pilot.press("space")
        assert screen.feed.paused
        during = _send(env, 3, tag="paused")
        await wait_until(pilot, lambda: screen.feed.unseen == 3, timeout=5, what="3 counted while paused")
        assert not set(during) & set(_ids(screen))  # frozen
        status = str(screen.query_one("#traffic-status").render())
        assert "paused" in status and "3 new" in status
        await pilot.press("space")
        assert not screen.feed.paused
        assert _ids(screen)[:4] == [*reversed(during), before]


async def test_filter_by_consumer_and_status_class(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        a = _send(env, 1, consumer="app", tag="fa")
        b = _send(env, 1, consumer="team", tag="fb")
        await wait_until(pilot, lambda: set(a + b) <= set(_ids(screen)), timeout=5)
        await pilot.press("slash")
        await pilot.press(*"team")
        await wait_until(pilot, lambda: screen.feed.filter.text == "team")
        rows = screen.query_one(TrafficTable).rows
        assert rows and all(r["consumer"] == "team" for r in rows) and b[0] in _ids(screen)
        await pilot.press("enter")  # keep the filter, back to the table
        assert isinstance(app.focused, TrafficTable)
        assert "filter: team" in str(screen.query_one("#traffic-status").render())
        await pilot.press("slash", "ctrl+u", *"4xx")
        await wait_until(pilot, lambda: screen.feed.filter.text == "4xx")
        assert _ids(screen) == []
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.feed.filter)
        assert set(a + b) <= set(_ids(screen))


async def test_detail_modal_shows_every_field(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        (rid,) = _send(env, 1, stream=True, tag="detail")
        await wait_until(pilot, lambda: _ids(screen)[:1] == [rid], timeout=5)
        screen.query_one(TrafficTable).focus()
        await pilot.press("home", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RequestDetailModal))
        modal = app.screen
        text = _plain(modal.query_one("#request-detail-fields", Static).content)
        for label in (
            "Request id",
            "Consumer",
            "Model API",
            "Model service",
            "Model key",
            "Status",
            "Latency",
            "Time to first byte",
            "Prompt tokens",
            "Completion tokens",
            "Cost",
            "Streamed",
            "Time (UTC)",
        ):
            assert label in text, label
        assert rid in text and "hunyuan-api" in text and "k1" in text and "yes" in text
        assert "sk-vendor-usage-secret-1" not in text
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)


async def test_error_rows_and_error_text(env: Env, console_store: Store, vendor: MockVendor) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        vendor.behave(status=500)
        try:
            r = chat(env.gw.url, env.keys["app"], request_id="boom-1")
        finally:
            vendor.reset()
        assert r.status_code >= 500
        await wait_until(pilot, lambda: _ids(screen)[:1] == ["boom-1"], timeout=5)
        await pilot.press("slash", *"5xx", "enter")
        assert _ids(screen) and all(rr["status"] >= 500 for rr in screen.query_one(TrafficTable).rows)
        await pilot.press("home", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, RequestDetailModal))
        error = _plain(app.screen.query_one("#request-detail-error", Static).content).strip()
        assert error and error != "none"


async def test_reconnects_after_gateway_restart(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        env.gw.stop()
        await wait_until(pilot, lambda: not screen.connected, timeout=10, what="the pane noticing")
        assert "reconnecting" in str(screen.query_one("#traffic-status").render())
        env.gw = gateway_for(env.db)
        env.gw.start()
        await _connected(pilot, screen)
        (rid,) = _send(env, 1, tag="after")
        await wait_until(pilot, lambda: _ids(screen)[:1] == [rid], timeout=5, what="a row after restart")


async def test_a_burst_through_the_gateway_all_appear(env: Env, console_store: Store) -> None:
    app = _app(console_store)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await _connected(pilot, screen)
        n = 150
        tag = f"burst{uuid.uuid4().hex[:6]}"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

        def one(i: int) -> int:
            return CLIENT.post(
                env.gw.url + CHAT,
                json=body,
                headers={"Authorization": f"Bearer {env.keys['ops']}", "x-request-id": f"{tag}-{i}"},
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(n)]
            while not all(f.done() for f in futures):
                await pilot.pause(0.05)  # keep the UI running while the load goes on
        assert all(f.result() == 200 for f in futures)
        await wait_until(
            pilot,
            lambda: sum(rid.startswith(tag) for rid in _ids(screen)) == n,
            timeout=10,
            what="every burst request in the table",
        )


async def test_records_arriving_together_are_one_table_update(store: Store) -> None:
    """The reader thread only appends; the UI takes the whole inbox per tick (no gateway needed)."""
    app = AigwApp(store, start_section="traffic", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await pilot.pause(0.3)
        before = screen.updates
        now = time.time()
        screen._inbox.extend(
            {"ts": now, "request_id": f"b{i}", "consumer": "app", "status": 200, "latency_ms": 5.0} for i in range(500)
        )
        table = screen.query_one(TrafficTable)
        await wait_until(pilot, lambda: len(table.rows) == 500, what="500 rows")
        assert screen.updates - before == 1
        assert table.rows[0]["request_id"] == "b499"
        # the cursor stays on its request while newer ones arrive above it
        table.focus()
        await pilot.press("down", "down")
        assert table.current is not None and table.current["request_id"] == "b497"
        screen._inbox.extend({"ts": now, "request_id": f"c{i}", "status": 200} for i in range(3))
        await wait_until(pilot, lambda: len(table.rows) == 503, what="3 more rows")
        assert table.current["request_id"] == "b497" and table.cursor == 5


async def test_a_gateway_the_console_starts(vendor: MockVendor, tmp_path: Path) -> None:
    """ctrl+g in the pane starts ``aigw serve`` (detached, console-owned); its traffic shows up."""
    db = tmp_path / "data" / "aigw.db"
    keys = configure(db, vendor)
    st = open_store(str(db))
    controller = GatewayController(st)
    try:
        app = AigwApp(st, start_section="traffic", gateway=controller, poll_interval=None)
        async with app.run_test(size=(160, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, TrafficScreen)
            assert not screen.connected
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: app.gateway_status.is_up, timeout=40, what="the console's gateway")
            assert controller.owned
            await _connected(pilot, screen)
            rid = f"owned-{uuid.uuid4().hex[:8]}"
            url = app.gateway_status.public_url
            assert chat(url, keys["app"], request_id=rid).status_code == 200
            await wait_until(pilot, lambda: _ids(screen)[:1] == [rid], timeout=5, what="the row")
    finally:
        controller.stop()
        st.dispose()
