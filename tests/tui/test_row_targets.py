"""Actions on a row act only on a row the user chose and can see; pickers add only marked rows."""

from __future__ import annotations

from typing import Any

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import DataTable

from store import repo
from store.db import Store
from store.spec import ConsumerSpec
from tui.app import AigwApp
from tui.modals.confirm import ConfirmModal
from tui.modals.pick import PickModal


def config(store: Store) -> Any:
    with store.session() as s:
        return repo.load_config(s)


async def loaded(pilot: Any, app: AigwApp) -> Any:
    return await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None and app.screen)


async def test_picker_without_a_mark_adds_nothing(store: Store) -> None:
    seed(store)
    with store.session() as s:
        repo.save(s, "consumers", ConsumerSpec("other-app"))
    app = AigwApp(store, start_section="consumer-groups", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        await loaded(pilot, app)
        await pilot.press("m")  # Add members; "other-app" is highlighted, not marked
        picker = await wait_until(pilot, lambda: isinstance(app.screen, PickModal) and app.screen)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is picker  # still open, saying what to do
        assert "Nothing selected" in str(picker.query_one("#pick-hint").visual)
        await pilot.press("escape")
    assert config(store).consumer_groups[0].consumers == ["my-app"]


async def test_revoke_first_focuses_the_keys_then_names_the_key(store: Store) -> None:
    seed(store)
    with store.session() as s:
        repo.create_consumer_key(s, "my-app")
    app = AigwApp(store, start_section="consumers", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(pilot, app)
        keys = screen.query_one("#consumer-keys", DataTable)
        await wait_until(pilot, lambda: keys.row_count == 2)
        await pilot.press("x")  # the entity list has focus: the keys table does not look chosen
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert keys.has_focus
        await pilot.press("down", "x")
        confirm = await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal) and app.screen)
        prefix = keys.get_row_at(1)[0].plain
        assert prefix in confirm.message
        await pilot.press("escape")
    with store.session() as s:
        assert len(repo.list_consumer_keys(s, "my-app")) == 2


async def test_group_remove_needs_the_open_tab_table_in_focus(store: Store) -> None:
    seed(store)
    app = AigwApp(store, start_section="consumer-groups", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await loaded(pilot, app)
        await pilot.press("x")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal)
        assert screen.query_one("#group-members", DataTable).has_focus
        await pilot.press("x")
        confirm = await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal) and app.screen)
        assert "'my-app'" in confirm.message
        await pilot.press("n")
    assert config(store).consumer_groups[0].consumers == ["my-app"]


async def test_marked_rows_carry_a_check_mark_not_only_a_colour(store: Store) -> None:
    app = AigwApp(store, start_section="consumers", poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.push_screen(PickModal("Pick", [("alpha", "alpha"), ("beta", "beta")]))
        await pilot.pause()
        await pilot.press("space")  # marks the highlighted first row
        await pilot.pause()
        lst = app.screen.query_one("#pick-list")
        lines = [lst.render_line(y).text for y in range(2)]
        assert "✓" in lines[0] and "alpha" in lines[0]
        assert "✓" not in lines[1] and "X" not in lines[1]
