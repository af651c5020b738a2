"""Quick Start making an Anthropic API: the protocol chosen in the API step, the Messages
route, the curl in Anthropic's shape, and the test request answered through the
translation to the (OpenAI) vendor behind it."""

from __future__ import annotations

from mock_vendor import MockVendor
from pilot_helpers import wait_until
from test_quickstart import CREDENTIAL, SIZE, app_for, at_step, config, gw, replace_text, step, wizard
from textual.widgets import Input, Static

from store.db import Store
from tui.gateway_process import GatewayController
from tui.modals.secret import ShowSecretModal

__all__ = ["gw"]  # the fixture, shared with the Quick Start storyboards


async def test_quick_start_makes_an_anthropic_api_that_answers(
    store: Store, gw: GatewayController, fresh_vendor: MockVendor
) -> None:
    app = app_for(store, gw)
    async with app.run_test(size=SIZE) as pilot:
        qs = await wizard(pilot, app)
        await at_step(pilot, qs, 0)
        await pilot.press(*CREDENTIAL, "enter")
        await at_step(pilot, qs, 1)
        step(qs, 1).query_one("#address", Input).focus()
        await replace_text(pilot, fresh_vendor.url)
        await pilot.press("enter")
        await at_step(pilot, qs, 2)
        api = step(qs, 2)
        api.control("protocol").value = "anthropic"
        await wait_until(pilot, lambda: api.value("routes") == "/v1/messages", what="the Messages route offered")
        api.query_one("#name", Input).focus()
        await pilot.press("enter")
        await at_step(pilot, qs, 3)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(qs.app.screen, ShowSecretModal), what="key shown once")
        await pilot.press("enter")
        await at_step(pilot, qs, 4)
        await pilot.press("enter")
        await at_step(pilot, qs, 5)
        inv = qs.invoke
        assert str(inv.query_one("#access-url", Static).visual).endswith("/hunyuan/v1/messages")
        curl = str(inv.query_one("#curl", Static).visual)
        assert "x-api-key:" in curl and "anthropic-version: 2023-06-01" in curl
        await pilot.press("ctrl+t")
        result = inv.query_one("#result", Static)
        await wait_until(
            pilot, lambda: result.has_class("-ok") or result.has_class("-failed"), timeout=60, what="answer"
        )
        assert "Hello from mock (hunyuan-turbos-latest)" in str(result.visual), str(
            result.visual
        )  # the Quick Start default model
        assert fresh_vendor.requests[-1].path == "/v1/chat/completions"  # translated for the OpenAI vendor
    saved = config(store).model_apis[0]
    assert (saved.protocol, saved.routes) == ("anthropic", ["/v1/messages"])
