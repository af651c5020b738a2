"""Pick several names from a list (Add Authorization, add members)."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, SelectionList, Static

from .base import Dialog


class PickModal(Dialog[list[str] | None]):
    """``space`` toggles, ``ctrl+s``/OK confirms with the chosen names, ``escape`` cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "ok", "OK", id="pick-ok"),
        Binding("escape", "cancel", "Cancel", id="pick-cancel"),
    ]

    def __init__(self, title: str, choices: list[tuple[str, str]], *, empty: str = "Nothing to add.") -> None:
        super().__init__(classes="dialog-screen")
        self.title_text = title
        self.choices = choices
        self.empty = empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="pick-dialog"):
            yield Label(escape(self.title_text), classes="dialog-title")
            if self.choices:
                yield Static("space selects · ctrl+s confirms", classes="field-hint")
                yield SelectionList[str](*[(label, value) for label, value in self.choices], id="pick-list")
            else:
                yield Static(escape(self.empty))
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (ctrl+s)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    @on(Button.Pressed, "#ok")
    def action_ok(self) -> None:
        lists = self.query(SelectionList)
        picked: list[str] = list(lists.first().selected) if lists else []
        if not picked and lists:
            # Enter on a highlighted row without space: take that row, as people expect.
            sl = lists.first()
            if sl.highlighted is not None:
                picked = [sl.get_option_at_index(sl.highlighted).value]
        self.dismiss(picked or None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
