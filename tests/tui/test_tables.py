"""Tables are as wide as their cells the moment they are refilled, not after an idle pass."""

from __future__ import annotations

from pilot_helpers import wait_until
from seed import seed
from textual.widgets import DataTable

from store.db import Store
from tui.app import AigwApp


def widths(table: DataTable) -> list[int]:  # type: ignore[type-arg]
    return [c.get_render_width(table) - 2 * table.cell_padding for c in table.ordered_columns]


async def test_refilled_columns_fit_their_cells_at_once(store: Store) -> None:
    """A refill under a modal, or one the table never idles after, must not leave label-wide columns."""
    seed(store, upto="consumer_groups")
    app = AigwApp(store, start_section="model-apis", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None and app.screen)
        table = screen.query_one("#entity-table", DataTable)
        screen.refill()  # no pause: the table has had no idle pass since
        # "Routes" (6) must hold "/v1/chat/completions" (20); "Access URL" the whole address.
        assert widths(table)[2] >= len("/v1/chat/completions")
        assert widths(table)[4] >= len("http://127.0.0.1:8080/hunyuan/v1/chat/completions")


async def test_consumer_limits_table_fits_after_refresh(store: Store) -> None:
    seed(store, upto="consumer_groups")
    app = AigwApp(store, start_section="consumers", poll_interval=None)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await wait_until(pilot, lambda: getattr(app.screen, "limits_view", None) is not None and app.screen)
        table = screen.query_one("#consumer-limits", DataTable)
        screen._show_limits("my-app")
        first_cells = [table.get_row_at(0)[i].plain for i in range(len(table.ordered_columns))]
        assert all(w >= len(c) for w, c in zip(widths(table), first_cells, strict=True))
