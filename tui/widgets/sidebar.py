"""The left-hand section list, like the cloud console's sidebar."""

from __future__ import annotations

import contextlib

from rich.text import Text
from textual import on
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ..sections import SECTIONS


class Sidebar(OptionList):
    """Sections with their number keys; choosing one switches the app's mode."""

    DEFAULT_CSS = """
    Sidebar {
        width: 24;
        height: 1fr;
        dock: left;
        border: none;
        border-right: tall $panel;
        padding: 1 0 0 0;
        background: $boost;
    }
    Sidebar:focus { border: none; border-right: tall $accent; }
    """

    def __init__(self, current: str = "", *, id: str | None = "sidebar") -> None:
        options = []
        for i, s in enumerate(SECTIONS, start=1):
            label = Text.assemble((f" {i} ", "dim"), s.title)
            options.append(Option(label, id=s.id))
        super().__init__(*options, id=id)
        self.current = current

    def on_mount(self) -> None:
        if self.current:
            with contextlib.suppress(Exception):  # an unknown section highlights nothing
                self.highlighted = self.get_option_index(self.current)

    @on(OptionList.OptionSelected)
    async def _chosen(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id and event.option.id != self.current:
            await self.app.run_action(f"switch_section('{event.option.id}')")
