"""The console's protocol fields: a service's protocol, default max_tokens and Responses
setting, an API's protocol and the routes it offers, and the curl of an Anthropic API."""

from __future__ import annotations

from pilot_helpers import wait_until
from seed import seed
from test_entity_screens import SIZE, app_for, config, open_section, wait_screen
from textual.widgets import Input, Select, SelectionList, Static

from store import repo
from store.db import Store
from store.spec import ModelApiSpec
from tui.modals.form import EntityForm
from tui.modals.request_detail import detail_table


async def test_service_form_anthropic_vendor_fills_protocol_and_address(store: Store) -> None:
    seed(store, upto="model_keys")
    app = app_for(store, "model-services")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelServicesScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        await pilot.press(*"claude")
        form.query_one("#vendor", Select).value = "anthropic"
        address = form.query_one("#address", Input)
        await wait_until(pilot, lambda: address.value == "https://api.anthropic.com/v1", what="address filled")
        assert form.query_one("#protocol", Select).value == "anthropic"
        assert form.query_one("#default-model", Input).value == "claude-sonnet-4-5"
        form.query_one("#default-max-tokens", Input).value = "2048"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_services, what="saved")
    svc = config(store).model_services[0]
    assert (svc.vendor, svc.protocol, svc.default_max_tokens, svc.responses) == ("anthropic", "anthropic", 2048, None)


async def test_service_form_hunyuan_anthropic_address_and_responses(store: Store) -> None:
    seed(store, upto="model_keys")
    app = app_for(store, "model-services")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelServicesScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        await pilot.press(*"hy")
        assert form.query_one("#vendor", Select).value == "hunyuan"
        address = form.query_one("#address", Input)
        assert address.value == "https://api.hunyuan.cloud.tencent.com/v1"
        form.query_one("#protocol", Select).value = "anthropic"
        await wait_until(
            pilot,
            lambda: address.value == "https://api.hunyuan.cloud.tencent.com/anthropic/v1",
            what="the Anthropic address",
        )
        form.query_one("#protocol", Select).value = "openai"
        await wait_until(pilot, lambda: address.value.endswith("tencent.com/v1"), what="the OpenAI address again")
        form.query_one("#responses", Select).value = "on"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_services, what="saved")
    assert config(store).model_services[0].responses is True


async def test_api_form_protocol_offers_its_routes(store: Store) -> None:
    seed(store, upto="model_services")
    app = app_for(store, "model-apis")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelApisScreen")
        await pilot.press("n")
        form = await wait_screen(pilot, app, EntityForm)
        await pilot.press(*"claude-api")
        routes = form.query_one("#routes", SelectionList)
        assert "/v1/responses" in [routes.get_option_at_index(i).value for i in range(routes.option_count)]
        form.query_one("#protocol", Select).value = "anthropic"
        await wait_until(pilot, lambda: routes.selected == ["/v1/messages"], what="Anthropic's routes")
        assert routes.option_count == 2
        form.query_one("#base-path", Input).value = "/claude"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: config(store).model_apis, what="saved")
    api = config(store).model_apis[0]
    assert (api.protocol, api.routes) == ("anthropic", ["/v1/messages"])


async def test_route_management_curl_in_anthropic_shape(store: Store) -> None:
    seed(store, upto="model_services")
    with store.session() as s:
        repo.save(
            s,
            "model_apis",
            ModelApiSpec("claude-api", protocol="anthropic", base_path="/claude", services=["hunyuan-service"]),
        )
    app = app_for(store, "model-apis")
    async with app.run_test(size=SIZE) as pilot:
        await open_section(pilot, app, "ModelApisScreen")
        await pilot.press("t")
        detail = await wait_until(
            pilot,
            lambda: type(app.screen).__name__ == "RouteManagementScreen" and app.screen,
            what="route management",
        )
        curl = str(detail.query_one("#routes-curl", Static).visual)
    assert "/claude/v1/messages" in curl
    assert "x-api-key: <API_KEY>" in curl and "anthropic-version: 2023-06-01" in curl
    assert "Authorization" not in curl and '"max_tokens": 1024' in curl


def test_request_detail_shows_both_protocols() -> None:
    table = detail_table({"ts": 1.0, "protocol": "anthropic", "vendor_protocol": "openai"})
    labels = [str(c) for c in table.columns[0]._cells]
    values = [str(c) for c in table.columns[1]._cells]
    assert values[labels.index("Client protocol")] == "anthropic"
    assert values[labels.index("Vendor protocol")] == "openai"
