"""The base of every entity form: a modal that saves through ``repo.save`` in a thread worker.

Rules live only in :mod:`store.validation`: as the user types, a field's ``check_*``
function gives its message; on ``ctrl+s`` the store validates the whole configuration
and each :class:`StoreError` entry is shown under the field it names
(``StoreError.for_field``). The form dismisses with the saved spec, or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, SelectionList, Static, Switch

from store import repo
from store.db import Store
from store.errors import StoreError
from store.spec import Config

from ..errors import entry_problem
from ..widgets.form_field import FormField
from .base import Dialog


class FormProblem(Exception):
    """A value the form itself cannot turn into a spec (``"abc"`` typed as a number)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def select_value(widget: Select[Any]) -> str:
    v = widget.value
    return "" if v is Select.NULL or v is None else str(v)


def as_number(value: str, field: str, *, integer: bool = False) -> float | int:
    text = value.strip() or "0"
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise FormProblem(field, f"{text!r} is not a {'whole ' if integer else ''}number") from None


def as_list(value: str) -> list[str]:
    return [x.strip() for x in value.replace("\n", ",").split(",") if x.strip()]


class EntityForm(Dialog[Any]):
    """Subclass: set ``TABLE`` and ``NOUN``, yield fields from :meth:`compose_fields`,
    build the spec in :meth:`build_spec`; ``LIVE_CHECKS`` maps an ``Input`` id to a
    ``store.validation.check_*`` function run as the user types."""

    AUTO_FOCUS = "FormField > *"
    TABLE: ClassVar[str] = ""
    NOUN: ClassVar[str] = ""
    LIVE_CHECKS: ClassVar[dict[str, Callable[[str], str | None]]] = {}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", id="form-save", tooltip="Validate and save"),
        Binding("escape", "cancel", "Cancel", id="form-cancel", tooltip="Close without saving"),
    ]

    class Saved(Message):
        def __init__(self, spec: Any) -> None:
            super().__init__()
            self.spec = spec

    class Refused(Message):
        def __init__(self, error: StoreError) -> None:
            super().__init__()
            self.error = error

    def __init__(self, store: Store, config: Config, original: Any | None = None) -> None:
        super().__init__(classes="dialog-screen form-screen")
        self.store = store
        self.config = config
        self.original = original
        self.saving = False

    @property
    def is_new(self) -> bool:
        return self.original is None

    # ------------------------------------------------------------- layout

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form-dialog", id="form-dialog"):
            yield Label(escape(self.form_title()), classes="dialog-title")
            with VerticalScroll(id="form-fields", can_focus=False):
                yield from self.compose_fields()
            yield Static("", id="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="form-save")
                yield Button("Cancel (esc)", id="form-cancel")

    def form_title(self) -> str:
        if self.is_new:
            return f"Create {self.NOUN}"
        return f"Edit {self.NOUN} {self.original.name!r}"

    def compose_fields(self) -> Iterable[Widget]:
        raise NotImplementedError

    def field(self, name: str) -> FormField:
        return self.query_one(f"#field-{name.replace('_', '-')}", FormField)

    def value(self, name: str) -> Any:
        """The current value of the control with id ``name``."""
        w = self.query_one(f"#{name.replace('_', '-')}")
        if isinstance(w, Input):
            return w.value
        if isinstance(w, Select):
            return select_value(w)
        if isinstance(w, SelectionList):
            return list(w.selected)
        if isinstance(w, Switch):
            return w.value
        raise TypeError(f"no value for {name}")

    # ------------------------------------------------------------- live checks

    @on(Input.Changed)
    def _live_check(self, event: Input.Changed) -> None:
        FormField.live_check(self, self.LIVE_CHECKS, event)

    @on(Input.Submitted)
    def _next_or_save(self, event: Input.Submitted) -> None:
        """``enter`` moves to the next field, and saves from the last one."""
        event.stop()
        controls = [f.control for f in self.query(FormField) if f.display and f.control.focusable]
        if controls and event.input is controls[-1]:
            self.action_save()
        else:
            self.focus_next()

    # ------------------------------------------------------------- saving

    def build_spec(self) -> Any:
        raise NotImplementedError

    @on(Button.Pressed, "#form-save")
    def _save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#form-cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if self.saving:
            return
        for f in self.query(FormField):
            f.set_error(None)
        self.query_one("#form-error", Static).update("")
        try:
            spec = self.build_spec()
        except FormProblem as problem:
            self._show_problem(problem.field, problem.message)
            return
        self.saving = True
        self._save(spec)

    @work(thread=True, exclusive=True, group="form-save", exit_on_error=False)
    def _save(self, spec: Any) -> None:
        try:
            with self.store.session() as s:
                saved = self.write(s, spec)
        except StoreError as exc:
            self.post_message(self.Refused(exc))
            return
        self.post_message(self.Saved(saved))

    def write(self, session: Any, spec: Any) -> Any:
        """The store call (override to do more in the same worker, e.g. create a key)."""
        return repo.save(session, self.TABLE, spec, original=None if self.original is None else self.original.name)

    def on_entity_form_refused(self, message: Refused) -> None:
        """Each message under the field it names (``for_field``); the rest above the buttons."""
        self.saving = False
        fields = list(self.query(FormField))
        names = {f.field for f in fields}
        # Only problems of this entry go under this form's fields; one about another entry
        # (a rule that spans entries) is shown above the buttons, naming that entry.
        own = [e for e in message.error.errors if e.table in ("", self.TABLE) and e.entry in ("", self._entry_name())]
        first: FormField | None = None
        for target in fields:
            text = StoreError(own).for_field(target.field) if own else None
            if text:
                target.set_error(text)
                first = first or target
        if first is not None:
            self._focus_field(first)
        unmatched = [
            e.message if e in own else entry_problem(e)
            for e in message.error.errors
            if e not in own or e.field.split(".")[0] not in names
        ]
        if unmatched:
            self.query_one("#form-error", Static).update(escape("\n".join(unmatched)))

    def _entry_name(self) -> str:
        """The name the entry is saved under (what the store's errors call it)."""
        try:
            return str(self.value("name")).strip()
        except Exception:
            return "" if self.original is None else str(self.original.name)

    def _show_problem(self, field: str, message: str) -> None:
        try:
            target = self.field(field)
        except Exception:
            self.query_one("#form-error", Static).update(escape(message))
            return
        target.set_error(message)
        self._focus_field(target)

    def _focus_field(self, target: FormField) -> None:
        target.control.focus()
        target.scroll_visible()

    def on_entity_form_saved(self, message: Saved) -> None:
        self.saving = False
        self.dismiss(message.spec)
