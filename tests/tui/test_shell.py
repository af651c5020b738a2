"""The shell: sections by number keys and sidebar, the command palette, quitting."""

from __future__ import annotations

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import OptionList

from store import repo
from store.db import Store
from tui.app import AigwApp
from tui.commands import console_commands
from tui.gateway_process import STOPPED
from tui.modals.form import EntityForm
from tui.sections import SECTIONS


def test_palette_lists_every_section_and_entity_action() -> None:
    titles = {title for title, _, _ in console_commands()}
    assert {f"Go to {s.title}" for s in SECTIONS} <= titles
    assert {
        "Gateway: start",
        "Gateway: stop",
        "Gateway: restart",
        "New model key",
        "New model service",
        "New model API",
        "New consumer",
        "New consumer group",
        "Add Authorization",
        "Create consumer API key",
        "Route Management / Try it",
        "Edit gateway settings",
    } <= titles


async def test_number_keys_and_sidebar_switch_sections(store: Store) -> None:
    app = AigwApp(store, start_section="model-keys", poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for i, section in enumerate(SECTIONS, start=1):
            if section.id not in ("instance", "model-services", "consumer-groups"):
                continue  # composing every section is slow on a loaded machine; these prove the keys
            await pilot.press(str(i))
            await wait_until(pilot, lambda s=section: app.current_mode == s.id, what=section.id)
            # Back to a table screen: a section may focus a text field that takes digits.
            await app.run_action("switch_section('model-keys')")
            await pilot.pause()
        await pilot.press("1")
        await wait_until(pilot, lambda: app.current_mode == "instance", what="instance")
        app.screen.query_one("#sidebar", OptionList).focus()
        await pilot.press("down", "down", "enter")
        await wait_until(pilot, lambda: app.current_mode == "model-keys", what="sidebar choice")


async def test_palette_runs_a_section_action(store: Store) -> None:
    app = AigwApp(store, start_section="instance", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="palette")
        await pilot.press(*"New consumer group")
        await pilot.pause(0.5)
        await pilot.press("enter")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen, what="form")
        assert app.current_mode == "consumer-groups"
        await pilot.press(*"from-palette", "ctrl+s")
        await wait_until(pilot, lambda: not isinstance(app.screen, EntityForm), what="saved")
        assert form.is_new
    with store.session() as s:
        assert [g.name for g in repo.load_config(s).consumer_groups] == ["from-palette"]


async def test_quit_without_a_gateway_does_not_ask(store: Store) -> None:
    seed(store, upto="model_keys")
    with store.session() as s:
        gw = repo.load_config(s).gateway
        gw.admin_listen = "127.0.0.1:1"
        repo.save_gateway(s, gw)
    app = AigwApp(store, poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.gateway_status.admin_listen == "127.0.0.1:1", what="polled")
        assert app.gateway_status.state == STOPPED
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: app._exit, what="exit")
    assert app.return_value == 0


async def test_a_failing_worker_is_reported_in_one_place(store: Store) -> None:
    app = AigwApp(store, start_section="model-keys", poll_interval=None)

    def broken() -> None:
        raise OSError(28, "No space left on device")

    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        app.screen.run_worker(broken, thread=True, exit_on_error=False)
        await wait_until(
            pilot,
            lambda: any("No space left on device" in str(n.message) for n in app._notifications),
            what="notification",
        )
        assert app.is_running  # the console keeps going
