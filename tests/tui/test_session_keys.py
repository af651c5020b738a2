"""A key created in Quick Start is the one "Try it" in Route Management uses: one memory of keys."""

from __future__ import annotations

from pilot_helpers import wait_until
from test_quickstart import seed_to_invoke, wizard
from textual.widgets import Input, Static

from store.db import Store
from tui.app import AigwApp
from tui.modals.route_management import RouteManagementScreen
from tui.modals.secret import ShowSecretModal


async def test_quick_start_key_reaches_route_management(store: Store) -> None:
    seed_to_invoke(store, "")
    app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        qs = await wizard(pilot, app)
        await wait_until(pilot, lambda: qs.index == 5)
        await pilot.press("ctrl+k")
        modal = await wait_until(pilot, lambda: isinstance(app.screen, ShowSecretModal) and app.screen)
        key = str(modal.query_one("#secret-key", Static).visual)
        await pilot.press("enter")
        assert app.session_keys == {"my-app": key}
        await app.switch_mode("model-apis")
        await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
        await pilot.press("t")
        routes = await wait_until(pilot, lambda: isinstance(app.screen, RouteManagementScreen) and app.screen)
        assert routes.query_one("#tryit-key", Input).value == key
