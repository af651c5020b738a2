"""On quit with a gateway up: leave it running, stop it, or stay."""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Label, Static

from .base import Dialog

QuitChoice = Literal["leave", "stop"]


class QuitModal(Dialog[QuitChoice | None]):
    """``"leave"`` the gateway running, ``"stop"`` it, or ``None`` to stay in the console."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "choose('leave')", "Leave running", id="quit-leave"),
        Binding("s", "choose('stop')", "Stop gateway", id="quit-stop"),
        Binding("escape,c", "choose(None)", "Cancel", id="quit-cancel"),
    ]

    def __init__(self, address: str, *, owned: bool) -> None:
        super().__init__(classes="dialog-screen")
        self.address = address
        self.owned = owned

    def compose(self) -> ComposeResult:
        whose = "started by this console" if self.owned else "this console is attached to"
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Label("Quit aigw", classes="dialog-title")
            yield Static(
                escape(f"The gateway {whose} is running at {self.address}. Leave it running after the console closes?")
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Leave running (l)", variant="primary", id="leave")
                yield Button("Stop gateway (s)", variant="warning", id="stop")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#leave", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)  # type: ignore[arg-type]

    def action_choose(self, choice: QuitChoice | None) -> None:
        self.dismiss(choice)
