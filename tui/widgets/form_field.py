"""A labelled form control with its inline validation message underneath."""

from __future__ import annotations

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Label, Static


class FormField(Vertical):
    """Wraps one control; ``set_error`` shows (or clears) the message from the store's validator."""

    DEFAULT_CSS = """
    FormField { height: auto; margin: 0 0 1 0; }
    FormField > .field-label { color: $text-muted; }
    FormField > .field-hint { color: $text-muted; text-style: italic; }
    FormField > .field-error { color: $error; display: none; }
    FormField.-invalid > .field-error { display: block; }
    FormField.-invalid > Input { border: tall $error; }
    """

    def __init__(self, label: str, control: Widget, *, field: str, hint: str = "") -> None:
        super().__init__(id=f"field-{field.replace('_', '-')}", classes="form-field")
        self.label = label
        self.control = control
        self.field = field
        self.hint = hint

    def compose(self) -> ComposeResult:
        yield Label(escape(self.label), classes="field-label")
        yield self.control
        if self.hint:
            yield Static(escape(self.hint), classes="field-hint")
        yield Static("", classes="field-error")

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".field-error", Static).update(escape(message or ""))

    @property
    def error(self) -> str:
        return str(self.query_one(".field-error", Static).visual) if self.has_class("-invalid") else ""
