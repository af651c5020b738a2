"""Two real ``aigw serve`` on one SQLite store, seen from one console: Instance Info lists
both nodes, Traffic shows each one's requests once, the header rate counts both, and a
node that stops (cleanly or not) leaves the other's traffic flowing."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import GatewayProcess
from mock_vendor import MockVendor
from pilot_helpers import wait_until
from sqlmodel import select
from usage_env import chat, configure, gateway_for

from store import __version__, models
from store.db import Store, open_store
from tui.app import AigwApp
from tui.data.nodes import NODE_COLUMNS, short_id
from tui.gateway_process import GatewayController
from tui.screens.instance import InstanceScreen
from tui.screens.traffic import TrafficScreen
from tui.widgets.gateway_header import GatewayHeader
from tui.widgets.traffic_table import TrafficTable


class Env:
    def __init__(self, db: Path, keys: dict[str, str], own: GatewayProcess) -> None:
        self.db, self.keys, self.own = db, keys, own


@pytest.fixture(scope="module")
def env(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The store, and the gateway on the ports its settings name (the console's own)."""
    db = tmp_path_factory.mktemp("nodes") / "data" / "aigw.db"
    keys = configure(db, vendor)
    own = gateway_for(db).start()
    try:
        yield Env(db, keys, own)
    finally:
        own.stop()


@pytest.fixture
def other(env: Env) -> Iterator[GatewayProcess]:
    """A second ``aigw serve`` on the same store, on other ports (as on another machine)."""
    gw = GatewayProcess(env.db).start()
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def console_store(env: Env) -> Iterator[Store]:
    st = open_store(str(env.db))
    yield st
    st.dispose()


def _app(st: Store, section: str) -> AigwApp:
    return AigwApp(st, start_section=section, gateway=GatewayController(st), poll_interval=0.5)


def _ids(screen: TrafficScreen) -> list[str]:
    return [r["request_id"] for r in screen.query_one(TrafficTable).rows]


def _send(env: Env, gw: GatewayProcess, n: int, tag: str) -> list[str]:
    ids = []
    for _ in range(n):
        rid = f"{tag}-{uuid.uuid4().hex[:10]}"
        assert chat(gw.url, env.keys["app"], request_id=rid).status_code == 200
        ids.append(rid)
    return ids


def _node_id(st: Store, gw: GatewayProcess) -> str:
    with st.session() as s:
        rows = [n for n in s.exec(select(models.Node)).all() if n.admin_listen.endswith(f":{gw.admin_port}")]
    assert len(rows) == 1, rows
    return rows[0].id


def _status(screen: TrafficScreen) -> str:
    return str(screen.query_one("#traffic-status").render())


def _admins(screen: InstanceScreen) -> set[str]:
    return {n.admin_listen for n in screen.nodes or ()}


async def test_instance_info_lists_both_nodes_and_a_stale_one(
    env: Env, other: GatewayProcess, console_store: Store
) -> None:
    app = _app(console_store, "instance")
    own_admin, other_admin = f"127.0.0.1:{env.own.admin_port}", f"127.0.0.1:{other.admin_port}"
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, InstanceScreen)
        await wait_until(pilot, lambda: _admins(screen) == {own_admin, other_admin}, what="both nodes listed")
        table = screen.query_one("#instance-nodes")
        assert table.display and table.row_count == 2
        row = dict(zip(NODE_COLUMNS, map(str, table.get_row(_node_id(console_store, other))), strict=True))
        assert row["Admin"] == other_admin and row["Listen"] == f"127.0.0.1:{other.port}"
        assert row["State"] == "live" and row["Workers"] == "1" and row["Last seen"].endswith("s ago")
        assert row["Version"] == __version__ and row["Started"]
        # A gateway that died without a word: its row stays, marked stale, and nobody follows it.
        with console_store.session() as s:
            s.add(
                models.Node(
                    id="dead-1-abcdef",
                    host="elsewhere",
                    admin_listen="0.0.0.0:9",
                    started_at=time.time() - 100,
                    last_seen=time.time() - 60,
                )
            )
            s.commit()
        await wait_until(pilot, lambda: table.row_count == 3, what="the dead node listed")
        assert str(table.get_row("dead-1-abcdef")[NODE_COLUMNS.index("State")]) == "stale"
        assert "1 stale" in str(screen.query_one("#instance-nodes-note").render())
        # A clean stop removes the node: the list follows.
        other.stop()
        await wait_until(pilot, lambda: other_admin not in _admins(screen), what="the stopped node gone")
        assert own_admin in _admins(screen)
    with console_store.session() as s:
        s.delete(s.get(models.Node, "dead-1-abcdef"))
        s.commit()


async def test_traffic_and_rate_cover_both_nodes_then_one_stops(
    env: Env, other: GatewayProcess, console_store: Store
) -> None:
    app = _app(console_store, "traffic")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, TrafficScreen)
        await wait_until(
            pilot,
            lambda: len(screen.streams) == 2 and all(s.connected for s in screen.streams),
            timeout=20,
            what="both gateways' /events followed",
        )
        assert "live from 2 nodes" in _status(screen)
        own_ids = _send(env, env.own, 3, "own")
        other_ids = _send(env, other, 3, "other")
        await wait_until(
            pilot, lambda: set(own_ids + other_ids) <= set(_ids(screen)), timeout=10, what="both nodes' rows"
        )
        assert all(_ids(screen).count(rid) == 1 for rid in own_ids + other_ids)  # each once
        # The header's rate counts the other gateway too: only it served these.
        await wait_until(pilot, lambda: app.gateway_status.nodes == 2, what="both gateways counted")
        _send(env, other, 5, "rate")
        await wait_until(pilot, lambda: (app.gateway_status.rate or 0) > 0, timeout=10, what="a rate from the other")
        header = str(screen.query_one(GatewayHeader).render())
        assert "2 nodes" in header and "0.0 req/s" not in header and "– req/s" not in header

        other.stop()  # a clean stop: its node row goes, and so does its stream
        await wait_until(pilot, lambda: [s.key for s in screen.streams] == [""], timeout=15, what="the node dropped")
        assert screen.streams[0].connected and "live from" in _status(screen)
        (rid,) = _send(env, env.own, 1, "after")
        await wait_until(pilot, lambda: _ids(screen)[:1] == [rid], timeout=10, what="the own node's traffic")
        await wait_until(pilot, lambda: app.gateway_status.nodes == 1, what="the rate over one node")


async def test_an_unreachable_node_is_named_and_the_others_flow(env: Env, console_store: Store) -> None:
    other = GatewayProcess(env.db).start()
    try:
        app = _app(console_store, "traffic")
        async with app.run_test(size=(160, 48)) as pilot:
            screen = app.screen
            assert isinstance(screen, TrafficScreen)
            await wait_until(
                pilot, lambda: sum(s.connected for s in screen.streams) == 2, timeout=20, what="both followed"
            )
            node_id = _node_id(console_store, other)
            other.stop(signal.SIGKILL)  # no goodbye: its row stays until it is stale
            await wait_until(
                pilot,
                lambda: f"{short_id(node_id)} unreachable" in _status(screen),
                timeout=15,
                what="the pane naming the lost node",
            )
            assert "live from" in _status(screen)
            (rid,) = _send(env, env.own, 1, "still")
            await wait_until(pilot, lambda: _ids(screen)[:1] == [rid], timeout=10, what="the other's traffic")
            tip: Any = screen.query_one("#traffic-status").tooltip
            assert node_id in str(tip)
    finally:
        other.stop()
        with console_store.session() as s:  # the killed gateway could not remove its row
            for row in s.exec(select(models.Node)).all():
                if row.admin_listen.endswith(f":{other.admin_port}"):
                    s.delete(row)
            s.commit()
