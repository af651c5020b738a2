"""Process control against a real ``aigw serve``: start, attach, crash, stop, and "Try it"."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from helpers import free_port, wait_for
from pilot_helpers import wait_until
from seed import seed
from textual.widgets import Input, Static

from store import repo
from store.db import Store
from tui.app import AigwApp
from tui.gateway_process import ATTACHED, CRASHED, RUNNING, STOPPED, GatewayController
from tui.modals.quit import QuitModal


def use_free_ports(store: Store) -> tuple[int, int]:
    port, admin = free_port(), free_port()
    with store.session() as s:
        gw = repo.load_config(s).gateway
        gw.listen, gw.admin_listen = f"127.0.0.1:{port}", f"127.0.0.1:{admin}"
        repo.save_gateway(s, gw)
    return port, admin


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def controller(store: Store) -> Iterator[GatewayController]:
    ctl = GatewayController(store)
    yield ctl
    ctl.stop()


def test_start_attach_stop(store: Store, controller: GatewayController) -> None:
    _, admin = use_free_ports(store)
    st = controller.start()
    assert st.state == RUNNING, st
    assert st.pid and alive(st.pid)
    assert httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).json()["pid"] == st.pid
    assert (store.data_dir / "gateway.log").exists()

    with store.session() as s:
        assert controller.reload() == repo.get_revision(s)  # /reload with the admin token

    first = controller.status()
    for _ in range(3):
        httpx.get(f"http://127.0.0.1:{st.listen.rpartition(':')[2]}/nothing", timeout=5)
    later = controller.status()
    assert first.requests_total is not None and later.requests_total is not None
    assert later.requests_total >= first.requests_total + 3
    assert later.rate is not None and later.rate > 0  # from requests_total deltas

    other = GatewayController(store)  # a second console: attaches, never starts a second gateway
    seen = other.start()
    assert (seen.state, seen.pid) == (ATTACHED, st.pid)
    assert other.proc is None

    stopped = controller.stop()
    assert stopped.state == STOPPED
    wait_for(lambda: not alive(st.pid), 10, what="gateway process gone")


def test_start_restart_stop_a_supervisor_with_workers(store: Store, controller: GatewayController) -> None:
    """``workers = 2`` in the store: the console starts, restarts and stops the supervisor and
    its workers with it."""
    _, admin = use_free_ports(store)
    with store.session() as s:
        gw = repo.load_config(s).gateway
        gw.workers = 2
        repo.save_gateway(s, gw)
    st = controller.start()
    assert st.state == RUNNING, st
    workers = [w["pid"] for w in httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).json()["workers"]]
    assert len(workers) == 2 and all(alive(p) for p in workers)
    again = controller.restart()
    assert again.state == RUNNING and again.pid != st.pid
    wait_for(lambda: not any(alive(p) for p in workers), 20, what="the first workers gone")
    later = [w["pid"] for w in httpx.get(f"http://127.0.0.1:{admin}/healthz", timeout=5).json()["workers"]]
    assert controller.stop().state == STOPPED
    wait_for(lambda: not any(alive(p) for p in [again.pid, *later]), 20, what="supervisor and workers gone")


def test_crash_reports_the_log(store: Store, controller: GatewayController) -> None:
    port, _ = use_free_ports(store)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        st = controller.start(timeout=20)
        if st.state != CRASHED:
            st = wait_for(lambda: (s := controller.status()).state == CRASHED and s, 20, what="crash")
    assert st.exit_code not in (None, 0)
    assert st.log_tail.strip()


async def test_console_starts_gateway_tries_it_and_stops_on_quit(store: Store, fresh_vendor: Any) -> None:
    key = seed(store, address=fresh_vendor.url)
    port, _ = use_free_ports(store)
    controller = GatewayController(store)
    app = AigwApp(store, start_section="model-apis", gateway=controller, poll_interval=0.5)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: app.screen.config is not None, what="apis")
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: app.gateway_status.state == RUNNING, timeout=40, what="running")
            header = app.screen.query_one("#gateway-header", Static)
            await wait_until(pilot, lambda: "running" in str(header.visual), what="header")
            assert f"127.0.0.1:{port}" in str(header.visual)

            await pilot.press("t")
            detail = await wait_until(
                pilot, lambda: type(app.screen).__name__ == "RouteManagementScreen" and app.screen, what="routes"
            )
            detail.query_one("#tryit-key", Input).value = key or ""
            await pilot.press("ctrl+t")
            result = detail.query_one("#tryit-result", Static)
            await wait_until(pilot, lambda: "HTTP 200" in str(result.visual), timeout=30, what="answer")
            assert fresh_vendor.requests[-1].authorization == "Bearer sk-vendor-secret-0001"

            detail.query_one("#tryit-key", Input).value = "sk-aigw-unknownunknownunknownunknown00"
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: "HTTP 401" in str(result.visual), timeout=30, what="401")
            assert "does not accept this API key" in str(result.visual)

            pid = app.gateway_status.pid
            assert pid is not None
            await pilot.press("escape")
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: isinstance(app.screen, QuitModal), what="quit question")
            await pilot.press("s")
            await wait_until(pilot, lambda: not alive(pid), timeout=30, what="gateway stopped")
    finally:
        controller.stop()


async def test_instance_info_shows_a_crash_with_the_end_of_the_log(store: Store) -> None:
    port, _ = use_free_ports(store)
    controller = GatewayController(store)
    app = AigwApp(store, start_section="instance", gateway=controller, poll_interval=0.5)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                await wait_until(pilot, lambda: app.screen.settings is not None, what="instance")
                await pilot.press("s")
                await wait_until(pilot, lambda: app.gateway_status.state == CRASHED, timeout=40, what="crashed")
                header = app.screen.query_one("#gateway-header", Static)
                await wait_until(pilot, lambda: "crashed" in str(header.visual), what="header")
                log = app.screen.query_one("#instance-log", Static)
                await wait_until(pilot, lambda: log.display and "gateway.log" in str(log.visual), what="log tail shown")
        finally:
            controller.stop()
