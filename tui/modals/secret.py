"""Shows a new consumer API key exactly once, with a copy action and a warning."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from ..clipboard import copy_text
from .base import Dialog


class ShowSecretModal(Dialog[None]):
    """The key lives only in this modal; once dismissed the console cannot show it again."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy", "Copy key", id="secret-copy", tooltip="Send the key to the terminal's clipboard (OSC 52)"),
        Binding("escape,enter", "close", "Done", id="secret-done"),
    ]

    def __init__(self, consumer: str, key: str) -> None:
        super().__init__(classes="dialog-screen")
        self.consumer = consumer
        self._key = key

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="secret-dialog"):
            yield Label(escape(f"New API key for consumer {self.consumer!r}"), classes="dialog-title")
            yield Static(Text(self._key, style="bold"), id="secret-key")
            yield Static(
                "⚠ This key is shown only once. Copy it now and keep it safe: aigw stores only "
                "its hash and cannot show it again. Lost it? Create a new key and revoke this one.",
                id="secret-warning",
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy (c)", variant="primary", id="copy")
                yield Button("Done (enter)", id="done")

    def on_mount(self) -> None:
        self.query_one("#done", Button).focus()

    @on(Button.Pressed, "#copy")
    def action_copy(self) -> None:
        note = copy_text(self.app, self._key, "API key")
        self.query_one("#secret-warning", Static).update(
            f"{note.replace('below', 'above')} It will not be shown again once you close this window."
        )

    @on(Button.Pressed, "#done")
    def action_close(self) -> None:
        self._key = ""
        self.dismiss(None)
