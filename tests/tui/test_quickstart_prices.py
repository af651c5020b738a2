"""Quick Start asks for prices in step 2 (so cost is not silently 0) and proposes the README's model."""

from __future__ import annotations

from pilot_helpers import wait_until
from test_quickstart import CREDENTIAL, at_step, config, step, wizard
from textual.widgets import Input

from store.db import Store
from store.spec import Price
from tui.app import AigwApp
from tui.widgets.form_field import FormField


async def test_step_two_saves_prices_and_proposes_the_readme_model(store: Store) -> None:
    app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        qs = await wizard(pilot, app)
        await at_step(pilot, qs, 0)
        await pilot.press(*CREDENTIAL, "enter")
        await at_step(pilot, qs, 1)
        svc = step(qs, 1)
        assert svc.value("default_model") == "hunyuan-turbos-latest"
        prices = svc.query_one("#field-prices", FormField)
        assert "cost" in prices.hint
        svc.query_one("#prices", Input).value = "hunyuan-turbos-latest=0.8/2.0"
        await pilot.press("ctrl+n")
        await at_step(pilot, qs, 2)
    service = config(store).model_services[0]
    assert service.default_model == "hunyuan-turbos-latest"
    assert service.prices == {"hunyuan-turbos-latest": Price(0.8, 2.0)}


async def test_a_price_that_does_not_parse_stops_at_the_field(store: Store) -> None:
    app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        qs = await wizard(pilot, app)
        await pilot.press(*CREDENTIAL, "enter")
        await at_step(pilot, qs, 1)
        step(qs, 1).query_one("#prices", Input).value = "hunyuan-turbos-latest=cheap"
        await pilot.press("ctrl+n")
        field = step(qs, 1).query_one("#field-prices", FormField)
        await wait_until(pilot, lambda: field.error, what="price error")
        assert qs.index == 1
