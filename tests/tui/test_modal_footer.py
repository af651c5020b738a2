"""Under a dialog the footer lists the dialog's keys, not the section's."""

from __future__ import annotations

from pilot_helpers import wait_until
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from store.db import Store
from tui.app import AigwApp
from tui.modals.form import EntityForm


async def test_form_footer_shows_save_and_cancel(store: Store) -> None:
    app = AigwApp(store, start_section="model-keys", poll_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: getattr(app.screen, "config", None) is not None)
        await pilot.press("n")
        form = await wait_until(pilot, lambda: isinstance(app.screen, EntityForm) and app.screen)
        footer = await wait_until(pilot, lambda: form.query(Footer).first() if form.query(Footer) else None)
        await pilot.pause()
        keys = {k.description for k in footer.query(FooterKey)}
        assert {"Save", "Cancel"} <= keys
        assert "New" not in keys and "Sidebar" not in keys
        region = footer.region
        assert region.y == 23 and region.width == 80  # on top of the section's footer
