"""A refused save names the entry it clashes with, on the form of the entry being edited."""

from __future__ import annotations

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import Input

from store import repo
from store.db import Store
from store.spec import ModelApiSpec
from tui.app import AigwApp
from tui.modals.form import EntityForm
from tui.widgets.form_field import FormField


async def test_base_path_clash_names_the_api_that_owns_the_path(store: Store) -> None:
    seed(store, upto="model_apis")  # hunyuan-api at /hunyuan
    with store.session() as s:  # "alpha-api" sorts before "hunyuan-api", so it is checked first
        repo.save(s, "model_apis", ModelApiSpec("alpha-api", base_path="/alpha", services=["hunyuan-service"]))
    app = AigwApp(store, start_section="model-apis", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None and app.screen)
        assert screen.current_name() == "alpha-api"
        await pilot.press("e")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        form.query_one("#base-path", Input).value = "/hunyuan"
        await pilot.press("ctrl+s")
        field = form.query_one("#field-base-path", FormField)
        await wait_until(pilot, lambda: field.error, what="error under Base Path")
        assert "'hunyuan-api'" in field.error
        assert "'alpha-api'" not in field.error
    with store.session() as s:
        assert repo.find(repo.load_config(s), "model_apis", "alpha-api").base_path == "/alpha"
