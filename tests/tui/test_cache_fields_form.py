"""The response cache's settings in the console: the model API form and the gateway form."""

from __future__ import annotations

from typing import Any

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import DataTable, Input, Select

from store import repo
from store.db import Store
from tui.app import AigwApp
from tui.modals.form import EntityForm
from tui.widgets.form_field import FormField

SIZE = (160, 60)


def _config(store: Store) -> Any:
    with store.session() as s:
        return repo.load_config(s)


async def test_model_api_form_sets_and_checks_the_cache(store: Store) -> None:
    seed(store, upto="model_services")
    app = AigwApp(store, start_section="model-apis", poll_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "ModelApisScreen" and app.screen.config)
        screen = app.screen
        await pilot.press("n")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        await pilot.press(*"cached-api")
        form.query_one("#base-path", Input).value = "/cached"
        ttl = form.query_one("#cache-ttl-s", Input)
        ttl.value = "-5"
        field = form.query_one("#field-cache-ttl-s", FormField)
        await wait_until(pilot, lambda: field.error == "must be at least 0", what="the live check")
        ttl.value = "3600"
        form.query_one("#cache-key", Select).value = "last_user_message"
        form.query_one("#cache-scope", Select).value = "api"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "cached-api" in [str(k.value) for k in screen.query_one(DataTable).rows])
    api = _config(store).model_apis[0]
    assert (api.cache_ttl_s, api.cache_key, api.cache_scope) == (3600, "last_user_message", "api")


async def test_gateway_form_sets_the_cache_memory(store: Store) -> None:
    app = AigwApp(store, start_section="instance", poll_interval=None)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: type(app.screen).__name__ == "InstanceScreen" and app.screen.settings)
        await pilot.press("e")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        assert form.query_one("#cache-max-mb", Input).value == "64"
        form.query_one("#cache-max-mb", Input).value = "0"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: _config(store).gateway.cache_max_mb == 0, what="saved")
