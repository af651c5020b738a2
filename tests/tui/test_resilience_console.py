"""The console's side of resilience: the forms' fields, circuit states and key slots read from a
real gateway's ``/healthz``, and the attempts of a request in the Traffic pane."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import GatewayProcess, free_port
from mock_vendor import MockVendor
from pilot_helpers import wait_until
from rich.console import Console
from seed import seed
from test_entity_screens import SIZE, app_for, config, open_section, wait_screen
from textual.app import App
from textual.widgets import DataTable, Input, Static
from usage_env import configure, gateway_for

from store import repo
from store.db import Store, open_store
from store.spec import ModelKeySpec, ModelServiceSpec
from tui.app import AigwApp
from tui.gateway_process import GatewayController
from tui.modals.form import EntityForm
from tui.modals.request_detail import RequestDetailModal
from tui.widgets.form_field import FormField
from tui.widgets.traffic_table import STATUS_COLUMN, cells


def _plain(renderable: Any) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


async def test_service_form_saves_the_resilience_fields_after_their_checks(store: Store) -> None:
    seed(store, upto="model_keys")
    app = app_for(store, "model-services")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelServicesScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        await pilot.press(*"guarded")
        assert form.query_one("#queue-timeout-s", Input).value == "10"  # the defaults, shown
        assert form.query_one("#circuit-failures", Input).value == "5"
        form.query_one("#circuit-cooldown-s", Input).value = "0"
        await pilot.press("ctrl+s")
        cooldown = form.query_one("#field-circuit-cooldown-s", FormField)
        await wait_until(pilot, lambda: cooldown.has_class("-invalid"), what="cool-down refused")
        assert "greater than 0" in cooldown.error
        for wid, value in (
            ("circuit-cooldown-s", "45"),
            ("queue-timeout-s", "0"),
            ("circuit-failures", "3"),
            ("probe-interval-s", "20"),
            ("first-byte-timeout-s", "6"),
        ):
            form.query_one(f"#{wid}", Input).value = value
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_services, what="saved")
    svc = config(store).model_services[0]
    assert (svc.queue_timeout_s, svc.circuit_failures, svc.circuit_cooldown_s) == (0.0, 3, 45.0)
    assert (svc.probe_interval_s, svc.first_byte_timeout_s) == (20.0, 6.0)


async def test_key_form_saves_max_concurrency(store: Store) -> None:
    app = app_for(store, "model-keys")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelKeysScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        form.query_one("#name", Input).value = "hy"
        form.query_one("#credential", Input).value = "sk-hy-secret"
        form.query_one("#max-concurrency", Input).value = "five"
        await pilot.press("ctrl+s")
        field = form.query_one("#field-max-concurrency", FormField)
        await wait_until(pilot, lambda: field.has_class("-invalid"), what="not a number")
        form.query_one("#max-concurrency", Input).value = "5"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_keys, what="saved")
    assert config(store).model_keys[0].max_concurrency == 5


@pytest.fixture(scope="module")
def probed_gateway(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway whose store also holds a service on a dead address, probed every 0.2 s."""
    db = tmp_path_factory.mktemp("resil-console") / "data" / "aigw.db"
    configure(db, vendor)
    st = open_store(str(db))
    with st.session() as s:
        repo.save(s, "model_keys", ModelKeySpec("capped", "sk-capped-secret", max_concurrency=3))
        dead = f"http://127.0.0.1:{free_port()}/v1"
        repo.save(
            s,
            "model_services",
            ModelServiceSpec(
                "down", vendor="custom", address=dead, keys=["capped"], default_model="m", probe_interval_s=0.2
            ),
        )
    st.dispose()
    gw = gateway_for(db).start()
    try:
        yield gw
    finally:
        gw.stop()


def _cell(app: App[Any], row: str, column: int) -> str:
    table = app.screen.query_one("#entity-table", DataTable)
    return str(table.get_row(row)[column])


async def test_services_show_their_circuit_state_and_keys_their_slots(probed_gateway: GatewayProcess) -> None:
    st = open_store(str(probed_gateway.db))
    try:
        app = AigwApp(st, start_section="model-services", gateway=GatewayController(st), poll_interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelServicesScreen")
            await wait_until(pilot, lambda: _cell(app, "down", 1) == "open", timeout=15, what="down shown open")
            assert _cell(app, "main", 1) in ("unknown", "healthy")
        app = AigwApp(st, start_section="model-keys", gateway=GatewayController(st), poll_interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            await open_section(pilot, app, "ModelKeysScreen")
            await wait_until(pilot, lambda: _cell(app, "capped", 2) == "0/3", timeout=15, what="capped's slots")
            assert _cell(app, "k1", 2) == "0/∞"
    finally:
        st.dispose()


def _record(attempts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "ts": 1_700_000_000.0,
        "request_id": "r-fallback",
        "status": 200,
        "service": "backup",
        "key_name": "k2",
        "attempts": attempts,
    }


ATTEMPTS = [
    {"service": "primary", "key": "", "status": 503, "reason": "circuit_open", "ms": 0.1},
    {"service": "backup", "key": "k2", "status": 200, "reason": "ok", "ms": 812.4},
]


def test_the_traffic_table_marks_a_request_that_took_several_attempts() -> None:
    assert cells(_record(ATTEMPTS))[STATUS_COLUMN] == "200↻"
    assert cells(_record(ATTEMPTS[1:]))[STATUS_COLUMN] == "200"
    assert cells(_record([]))[STATUS_COLUMN] == "200"


async def test_request_detail_lists_the_attempts() -> None:
    class Host(App[None]):
        def on_mount(self) -> None:
            self.push_screen(RequestDetailModal(_record(ATTEMPTS)))

    app = Host()
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, RequestDetailModal), what="detail")
        text = _plain(app.screen.query_one("#request-detail-attempts", Static).content)
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    assert lines[0][:5] == ["1.", "primary", "–", "503", "circuit_open"]
    assert lines[1][:6] == ["2.", "backup", "k2", "200", "ok", "812"]
