"""A labelled form control with its inline validation message underneath."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Input, Label, Static


class FormField(Vertical):
    """Wraps one control; ``set_error`` shows (or clears) the message from the store's validator."""

    DEFAULT_CSS = """
    FormField { height: auto; margin: 0 0 1 0; }
    FormField > .field-label { color: $text-muted; width: 100%; }
    FormField > .field-hint { color: $text-muted; text-style: italic; width: 100%; }
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

    @classmethod
    def live_check(cls, host: Widget, checks: Mapping[str, Callable[[str], str | None]], event: Input.Changed) -> None:
        """As the user types: show under the changed input's field what its
        ``store.validation`` check says (nothing while the input is empty).

        ``checks`` maps an input id (``_`` for ``-``) to its check; inputs without one are
        left alone. The one place for it, so entity forms and Quick Start steps (``host``,
        which holds the fields) say the same thing at the same keystroke.
        """
        name = (event.input.id or "").replace("-", "_")
        check = checks.get(name)
        if check is not None:
            target = host.query_one(f"#field-{name.replace('_', '-')}", cls)
            target.set_error(check(event.value) if event.value else None)

    @property
    def error(self) -> str:
        return str(self.query_one(".field-error", Static).visual) if self.has_class("-invalid") else ""
