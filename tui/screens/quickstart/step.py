"""The frame of one wizard step: its explanation, "create new / use existing", labelled fields.

A step is a form without buttons (the wizard's Back/Next drive it). It never decides a
rule: ``LIVE_CHECKS`` are :mod:`store.validation` functions run as the user types, and
the whole-config check happens in ``repo.save``, whose :class:`StoreError` entries are
shown under the fields they name — exactly as the console's entity forms do.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.markup import escape
from textual import on
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Select, SelectionList, Static, Switch
from textual.widgets.select import InvalidSelectValueError

from store import repo
from store.errors import StoreError
from store.spec import Config

from ...modals.form import FormProblem, select_value
from ...widgets.form_field import FormField

NEW = "__new__"
"""The "create a new one" choice of a step's entity picker."""


@dataclass
class WizardContext:
    """What every step may read: the stored configuration and the names this run chose."""

    config: Config = field(default_factory=Config)
    names: dict[str, str] = field(default_factory=dict)

    def name(self, table: str) -> str:
        return self.names.get(table, "")


class WizardStep(VerticalScroll):
    """Subclass: set ``TABLE``, ``NOUN``, ``DEFAULT_NAME``, ``INTRO``; implement
    :meth:`compose_fields`, :meth:`fill` and :meth:`build_spec`."""

    TABLE: ClassVar[str] = ""
    NOUN: ClassVar[str] = ""
    DEFAULT_NAME: ClassVar[str] = ""
    INTRO: ClassVar[str] = ""
    LIVE_CHECKS: ClassVar[dict[str, Callable[[str], str | None]]] = {}

    class Submitted(Message):
        """``enter`` in a text field: the wizard treats it as Next."""

    def __init__(self, step_id: str) -> None:
        super().__init__(id=step_id, classes="wizard-step", can_focus=False)
        self.ctx = WizardContext()
        #: The entity this step edits (created earlier in this run, or picked); ``None`` = create.
        self.original: str | None = None
        self._applied_use = NEW
        self._auto_refs: dict[str, str] = {}

    # ------------------------------------------------------------- layout

    def compose(self) -> Iterable[Widget]:
        yield Static(escape(self.INTRO), classes="step-intro")
        yield from self.compose_fields()
        if self.TABLE:
            # Last, so the step's own fields come first; picking one fills the fields above.
            yield FormField(
                f"Or use an existing {self.NOUN}",
                Select([(f"Create a new {self.NOUN}", NEW)], value=NEW, allow_blank=False, id="use"),
                field="use",
                hint="Picking one fills the fields above; Next saves your edits to it",
            )

    def compose_fields(self) -> Iterable[Widget]:
        raise NotImplementedError

    # ------------------------------------------------------------- values

    def control(self, name: str) -> Any:
        return self.query_one(f"#{name.replace('_', '-')}")

    def field(self, name: str) -> FormField:
        return self.query_one(f"#field-{name.replace('_', '-')}", FormField)

    def value(self, name: str) -> Any:
        w = self.control(name)
        if isinstance(w, Input):
            return w.value
        if isinstance(w, Select):
            return select_value(w)
        if isinstance(w, SelectionList):
            return list(w.selected)
        if isinstance(w, Switch):
            return w.value
        return getattr(w, "value", None)

    def set_value(self, name: str, value: Any) -> None:
        w = self.control(name)
        if isinstance(w, Select):
            # Not offered (e.g. a vendor's model list changed): keep the current choice.
            with contextlib.suppress(InvalidSelectValueError):
                w.value = value if value not in ("", None) else Select.NULL
        else:
            w.value = value

    def existing(self, name: str | None) -> Any | None:
        if not name or not self.TABLE:
            return None
        return repo.find(self.ctx.config, self.TABLE, name)

    def base_spec(self) -> Any | None:
        """A copy of the entity being edited: fields the wizard does not show are kept as stored."""
        spec = self.existing(self.original)
        return copy.deepcopy(spec) if spec is not None else None

    def unique_name(self, wanted: str) -> str:
        """``wanted``, or ``wanted-2``… when the store already has one (a second run)."""
        taken = {e.name for e in repo.entities(self.ctx.config, self.TABLE)} if self.TABLE else set()
        name, n = wanted, 2
        while name in taken:
            name, n = f"{wanted}-{n}", n + 1
        return name

    # ------------------------------------------------------------- the entity picker

    def start(self, ctx: WizardContext) -> None:
        """First fill of a run: the entity the progress names, the default-named one, or new."""
        self.set_context(ctx)
        name = ctx.name(self.TABLE)
        if not self.existing(name) and self.existing(self.DEFAULT_NAME):
            name = self.DEFAULT_NAME
        self.use(name if self.existing(name) else None)

    def set_context(self, ctx: WizardContext) -> None:
        """New stored configuration: refresh pickers, keep what the user typed."""
        self.ctx = ctx
        if self.TABLE:
            names = [e.name for e in repo.entities(ctx.config, self.TABLE)]
            if self.original not in names:
                self.original = None
            self._applied_use = self.original or NEW
            use = self.query_one("#use", Select)
            use.set_options([(f"Create a new {self.NOUN}", NEW)] + [(f"Use existing: {n}", n) for n in names])
            use.value = self._applied_use
        self.refresh_refs()

    def use(self, name: str | None) -> None:
        """Edit the entity ``name`` (fields filled from the store), or start a new one."""
        self.original = name
        self._applied_use = name or NEW
        if self.TABLE:
            self.query_one("#use", Select).value = self._applied_use
        self.clear_errors()
        self.fill(self.existing(name))

    @on(Select.Changed, "#use")
    def _use_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.value != event.value or event.value == self._applied_use:
            return  # a stale event from refreshing the options, or no change
        self.use(None if event.value == NEW else str(event.value))

    def sync_ref(self, select_id: str, options: list[str], wanted: str) -> None:
        """Refresh a reference picker; move it to ``wanted`` when an earlier step changed it."""
        w = self.query_one(f"#{select_id}", Select)
        current = select_value(w)
        w.set_options([(o, o) for o in options])
        target = current if current in options else ""
        if wanted and wanted in options and self._auto_refs.get(select_id) != wanted:
            target = wanted
            self._auto_refs[select_id] = wanted
        if not target and options:
            target = options[0]
        if target:
            w.value = target
        else:
            w.clear()

    def forget_refs(self) -> None:
        """A new run: earlier steps' choices are preselected again."""
        self._auto_refs.clear()

    def refresh_refs(self) -> None:
        """Subclasses: refresh pickers of entities from earlier steps."""

    # ------------------------------------------------------------- fill and build

    def fill(self, spec: Any | None) -> None:
        raise NotImplementedError

    def build_spec(self) -> Any:
        """The spec to save; raise :class:`FormProblem` for input that cannot be parsed."""
        raise NotImplementedError

    def write(self, session: Any, spec: Any, original: str | None) -> tuple[Any, str | None]:
        """Runs in the save worker (no widget access): store the spec; returns it and the plain
        key created with it (consumers only)."""
        return repo.save(session, self.TABLE, spec, original=original), None

    # ------------------------------------------------------------- messages at the fields

    @on(Input.Changed)
    def _live_check(self, event: Input.Changed) -> None:
        FormField.live_check(self, self.LIVE_CHECKS, event)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted())

    def clear_errors(self) -> None:
        for f in self.query(FormField):
            f.set_error(None)

    def show_problem(self, problem: FormProblem) -> bool:
        return self._show(problem.field, problem.message, focus=True)

    def show_store_error(self, error: StoreError) -> list[str]:
        """Each entry under the field it names; returns the messages no field here shows."""
        unmatched: list[str] = []
        focused = False
        for err in error.errors:
            name = err.field.split(".")[0]
            mine = err.table in ("", self.TABLE)
            if not (mine and self._show(name, err.message, focus=not focused)):
                unmatched.append(str(err).lstrip(": "))
            else:
                focused = True
        return unmatched

    def _show(self, name: str, message: str, *, focus: bool) -> bool:
        try:
            target = self.field(name)
        except Exception:
            return False
        if not target.has_class("-invalid"):
            target.set_error(message)
        if focus:
            target.control.focus()
            target.scroll_visible()
        return True

    def first_focus(self) -> Widget | None:
        """Where the cursor goes on arrival: the first empty text field, else the first field."""
        controls = [f.control for f in self.query(FormField) if f.display and f.control.focusable and f.field != "use"]
        for c in controls:
            if isinstance(c, Input) and not c.value and c.id not in ("description", "prices"):  # optional
                return c
        return controls[0] if controls else None
