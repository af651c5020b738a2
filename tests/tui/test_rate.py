"""The header and the Traffic pane show one request rate, from one definition."""

from __future__ import annotations

import time

from pilot_helpers import wait_until
from textual.widgets import Label

from store.db import Store
from tui.app import AigwApp
from tui.gateway_process import RUNNING, GatewayStatus
from tui.rate import RequestRate
from tui.widgets.gateway_header import GatewayHeader


def test_rate_is_requests_finished_per_second_over_the_window() -> None:
    rate = RequestRate(window_s=10)
    assert rate.observe(100, now=0.0) is None  # one sample: no rate yet
    for t in range(1, 21):
        last = rate.observe(100 + 3 * t, now=float(t))
    assert last == 3.0
    assert rate.observe(5, now=21.0) is None  # the counter went back: a new gateway


async def test_header_and_traffic_show_the_same_number(store: Store) -> None:
    app = AigwApp(store, start_section="traffic", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        screen = app.screen
        now = time.time()
        # Records say 5 req/s over the last 10 s; the gateway's counter says 2.5.
        screen.feed.stats.add([{"ts": now - 1 - i / 5, "latency_ms": 1, "status": 200} for i in range(50)], now=now)
        app.gateway_status = GatewayStatus(state=RUNNING, listen="127.0.0.1:8080", rate=2.5)
        screen._refresh_stats()
        await pilot.pause()
        header = str(screen.query_one(GatewayHeader).visual)
        label = str(screen.query_one("#spark-rps-label", Label).visual)
        await wait_until(pilot, lambda: "2.5 req/s" in str(screen.query_one(GatewayHeader).visual))
        assert "2.5 req/s" in label, (header, label)


async def test_header_says_how_many_nodes_the_rate_covers_when_it_fits(store: Store) -> None:
    app = AigwApp(store, start_section="instance", poll_interval=None)  # the header's longest title
    status = GatewayStatus(
        state=RUNNING, listen="127.0.0.1:8080", public_url="http://127.0.0.1:8080", rate=2.5, nodes=2
    )
    async with app.run_test(size=(160, 48)) as pilot:
        header = app.screen.query_one(GatewayHeader)
        # The first poll (no gateway: stopped) must land before ours, or it would replace it.
        await wait_until(pilot, lambda: not [w for w in app.workers if w.group == "gateway-poll" and not w.is_finished])
        await pilot.pause()
        app.gateway_status = status
        await wait_until(pilot, lambda: "2.5 req/s · 2 nodes" in str(header.visual))
        await pilot.resize_terminal(80, 24)
        # At 80 columns the count would be cut mid-word: the rate stays, the count goes.
        await wait_until(pilot, lambda: "nodes" not in str(header.visual) and "2.5 req/s" in str(header.visual))
        assert not str(header.visual).rstrip().endswith("·")
