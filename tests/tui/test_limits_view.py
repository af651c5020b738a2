"""Limits and current use on the Consumers and Consumer Groups screens: live and from the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import GatewayProcess
from mock_vendor import MockVendor
from pilot_helpers import wait_until
from textual.widgets import DataTable
from usage_env import COMPLETION, PROMPT, chat, configure, gateway_for

from store import repo
from store.db import Store, open_store
from store.spec import ConsumerGroupSpec
from tui.app import AigwApp
from tui.data.limits import NOT_RUNNING, from_store
from tui.gateway_process import GatewayController
from tui.screens.consumer_groups import ConsumerGroupsScreen
from tui.screens.consumers import ConsumersScreen

SIZE = (180, 50)
PER_REQUEST = PROMPT + COMPLETION


class Env:
    def __init__(self, db: Path, keys: dict[str, str], gw: GatewayProcess) -> None:
        self.db, self.keys, self.gw = db, keys, gw


@pytest.fixture(scope="module")
def env(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """``app`` (100 req/min, 10,000 tokens/min) and ``team`` (1,000 tokens a day), with use."""
    db = tmp_path_factory.mktemp("limits-view") / "data" / "aigw.db"
    keys = configure(db, vendor)
    st = open_store(str(db))
    try:
        with st.session() as s:  # only "limited" grants them the API (else "apps": unlimited)
            repo.save(
                s,
                "consumer_groups",
                ConsumerGroupSpec("apps", consumers=["ops"], model_apis=["hunyuan-api"]),
                original="apps",
            )
            repo.save(
                s,
                "consumer_groups",
                ConsumerGroupSpec(
                    "limited",
                    consumers=["app", "team"],
                    model_apis=["hunyuan-api"],
                    requests_per_minute=100,
                    tokens_per_minute=10_000,
                ),
            )
    finally:
        st.dispose()
    env = Env(db, keys, gateway_for(db).start())
    try:
        for _ in range(3):
            assert chat(env.gw.url, keys["app"]).status_code == 200
        for _ in range(2):
            assert chat(env.gw.url, keys["team"]).status_code == 200
        yield env
    finally:
        env.gw.stop()


@pytest.fixture
def console_store(env: Env) -> Iterator[Store]:
    st = open_store(str(env.db))
    yield st
    st.dispose()


def _app(st: Store, section: str) -> AigwApp:
    return AigwApp(st, start_section=section, gateway=GatewayController(st), poll_interval=None)


def _cells(table: DataTable[Any]) -> list[list[str]]:
    return [[getattr(c, "plain", str(c)) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def _consumers(pilot: Any, app: AigwApp, select: str) -> ConsumersScreen:
    screen: ConsumersScreen = await wait_until(
        pilot,
        lambda: isinstance(app.screen, ConsumersScreen) and app.screen.config is not None and app.screen,
        what="the Consumers screen",
    )
    screen.refill(select)
    return screen


def _row(table: DataTable[Any], label: str) -> list[str] | None:
    return next((r for r in _cells(table) if r[0].startswith(label)), None)


async def test_consumers_screen_shows_live_use_from_the_gateway(env: Env, console_store: Store) -> None:
    app = _app(console_store, "consumers")
    async with app.run_test(size=SIZE) as pilot:
        screen = await _consumers(pilot, app, "app")
        table = screen.query_one("#consumer-limits", DataTable)

        def live_rpm() -> list[str] | None:
            view = screen.limits_view
            return view is not None and view.live and _row(table, "hunyuan-api · requests/min")

        rpm = await wait_until(pilot, live_rpm, what="live per-minute use of 'app'")
        assert rpm[1:4] == ["100", "3", "97"]
        tpm = _row(table, "hunyuan-api · tokens/min")
        assert tpm is not None and tpm[1:4] == ["10,000", str(3 * PER_REQUEST), f"{10_000 - 3 * PER_REQUEST:,}"]

        screen.refill("team")
        quota = await wait_until(pilot, lambda: _row(table, "Quota"), what="the quota row of 'team'")
        assert quota[0] == "Quota (tokens per day)"
        assert quota[1:4] == ["1,000", str(2 * PER_REQUEST), f"{1000 - 2 * PER_REQUEST:,}"]
        assert quota[4].endswith("00:00 UTC")

        # More traffic shows up on the next refresh while the screen is shown.
        assert chat(env.gw.url, env.keys["team"]).status_code == 200
        await wait_until(
            pilot,
            lambda: (_row(table, "Quota") or [""] * 3)[2] == str(3 * PER_REQUEST),
            timeout=20,
            what="the refreshed quota use",
        )


async def test_group_members_show_their_current_use(env: Env, console_store: Store) -> None:
    app = _app(console_store, "consumer-groups")
    async with app.run_test(size=SIZE) as pilot:
        screen: ConsumerGroupsScreen = await wait_until(
            pilot,
            lambda: isinstance(app.screen, ConsumerGroupsScreen) and app.screen.config is not None and app.screen,
            what="the Consumer Groups screen",
        )
        screen.refill("limited")
        members = screen.query_one("#group-members", DataTable)

        def app_row() -> list[str] | None:
            view = screen.limits_view
            row = _row(members, "app")
            return view is not None and view.live and row and "…" not in row[2] and row

        row = await wait_until(pilot, app_row, what="the live use of member 'app'")
        assert row[2] == "3 / 100" and row[3] == f"{3 * PER_REQUEST} / 10,000" and row[4] == "—"
        team = _row(members, "team")
        assert team is not None and team[4].endswith("/ 1,000 tokens per day")
        assert int(team[4].split(" / ")[0]) >= 2 * PER_REQUEST


async def test_without_a_gateway_quota_use_comes_from_the_store(env: Env, vendor: MockVendor, tmp_path: Path) -> None:
    db = tmp_path / "data" / "aigw.db"
    keys = configure(db, vendor)
    gw = gateway_for(db).start()
    try:
        assert chat(gw.url, keys["team"]).status_code == 200
    finally:
        assert gw.stop() == 0  # the record is written before the gateway exits
    st = open_store(str(db))
    try:
        offline = from_store(st)
        assert offline["team"]["quota"]["used"] == PER_REQUEST
        assert offline["app"]["apis"]["hunyuan-api"]["requests_per_minute"] == {"limit": 0, "used": None}
        app = _app(st, "consumers")
        async with app.run_test(size=SIZE) as pilot:
            screen = await _consumers(pilot, app, "team")
            table = screen.query_one("#consumer-limits", DataTable)

            def offline_quota() -> list[str] | None:
                view = screen.limits_view
                return view is not None and not view.live and _row(table, "Quota")

            quota = await wait_until(pilot, offline_quota, what="the quota use from the store")
            assert quota[1:4] == ["1,000", str(PER_REQUEST), f"{1000 - PER_REQUEST:,}"]
            window = _row(table, "hunyuan-api · requests/min")
            assert window is not None and window[2] == NOT_RUNNING
            title = screen.query_one("#consumer-limits-title")
            assert "gateway not running" in str(title.render())
    finally:
        st.dispose()
