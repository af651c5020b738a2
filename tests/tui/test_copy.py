"""Copies say what happened (sent over OSC 52, not known to have arrived) and show the whole text."""

from __future__ import annotations

from typing import Any

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import Button, Input

from store.db import Store
from store.keys import display_prefix
from tui.app import AigwApp
from tui.clipboard import COPY_NOTE
from tui.modals.secret import ShowSecretModal
from tui.widgets.copied_text import CopiedText


def notes(app: AigwApp) -> list[str]:
    return [n.message for n in app._notifications]


def assert_honest(app: AigwApp) -> None:
    assert notes(app), "a copy tells the user something"
    assert all("Copied" not in n and "copied to the clipboard" not in n for n in notes(app))
    assert COPY_NOTE in notes(app)


async def test_route_management_copy_shows_the_full_curl_with_the_key(store: Store) -> None:
    key = seed(store)
    assert key
    app = AigwApp(store, start_section="model-apis", poll_interval=None)
    app.session_keys["my-app"] = key
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
        await pilot.press("t")
        detail: Any = await wait_until(
            pilot, lambda: type(app.screen).__name__ == "RouteManagementScreen" and app.screen
        )
        await pilot.press("ctrl+y")
        copied = detail.query_one("#routes-copied", CopiedText)
        await wait_until(pilot, lambda: copied.copied)
        assert key in copied.copied and "<API_KEY>" not in copied.copied
        assert copied.display and key in str(copied.visual)
        assert_honest(app)


async def test_quick_start_copy_shows_the_key_the_curl_shortens(store: Store) -> None:
    from test_quickstart import seed_to_invoke, wizard

    key = seed_to_invoke(store, "")
    app = AigwApp(store, start_section="quickstart", poll_interval=None)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        qs = await wizard(pilot, app)
        await wait_until(pilot, lambda: qs.index == 5)
        qs.invoke.query_one("#api-key", Input).value = key
        qs.invoke.show_target(qs.invoke.url, qs.invoke.model, "my-app", key)
        assert key not in str(qs.invoke.query_one("#curl").visual)  # the shown curl shortens it
        assert display_prefix(key) in str(qs.invoke.query_one("#curl").visual)
        await pilot.press("ctrl+y")
        copied = qs.invoke.query_one("#curl-copied", CopiedText)
        await wait_until(pilot, lambda: copied.copied)
        assert key in str(copied.visual)
        assert_honest(app)


async def test_secret_copy_does_not_claim_success(store: Store) -> None:
    app = AigwApp(store, start_section="consumers", poll_interval=None)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        app.push_screen(ShowSecretModal("my-app", "sk-aigw-full-key-0123456789"))
        await pilot.pause()
        app.screen.query_one("#copy", Button).press()
        await pilot.pause()
        warning = str(app.screen.query_one("#secret-warning").visual)
        assert "Copied" not in warning and "OSC 52" in warning
        assert_honest(app)
