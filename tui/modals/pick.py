"""Pick several names from a list (Add Authorization, add members)."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, SelectionList, Static

from ..widgets.marked_list import MarkedSelectionList
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
                yield Static(
                    "space marks a row (✓) · ctrl+s adds the marked rows", classes="field-hint", id="pick-hint"
                )
                yield MarkedSelectionList[str](*[(label, value) for label, value in self.choices], id="pick-list")
            else:
                yield Static(escape(self.empty))
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (ctrl+s)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    @on(Button.Pressed, "#ok")
    def action_ok(self) -> None:
        lists = self.query(SelectionList)
        picked: list[str] = list(lists.first().selected) if lists else []
        if lists and not picked:
            # Never add a row the user did not mark: a highlighted row is not a choice.
            self.query_one("#pick-hint", Static).update("Nothing selected: mark rows with space (✓), then ctrl+s.")
            self.query_one("#pick-hint", Static).add_class("-error")
            return
        self.dismiss(picked or None)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
