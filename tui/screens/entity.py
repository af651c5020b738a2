"""The shared shape of the five entity screens: a filterable table, a form, delete with confirm.

A subclass names its table and form and says how a row looks; loading, filtering,
saving, deleting (and showing who blocks a delete) happen here, in thread workers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static

from store import repo
from store.errors import StoreError
from store.spec import Config
from store.validation import referrers

from ..errors import user_message
from ..modals.confirm import ConfirmModal
from ..sections import BY_ID
from ..tables import fill_table
from .base import SectionScreen


class EntityTable(DataTable[Any]):
    """The entity list; ``enter`` is labelled "Edit" in the footer (it opens the form)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Edit", id="entity-table-edit", tooltip="Edit the highlighted entry"),
    ]


class EntityScreen(SectionScreen):
    """Subclass: ``SECTION``, ``TABLE``, ``NOUN``, ``COLUMNS``, :meth:`row` and :meth:`form`."""

    TABLE: ClassVar[str] = ""
    NOUN: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[str, ...]] = ("Name", "Description")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new", "New", id="entity-new", tooltip="Create a new entry"),
        Binding("e", "edit", "Edit", show=False, id="entity-edit", tooltip="Edit the highlighted entry"),
        Binding("d", "delete", "Delete", id="entity-delete", tooltip="Delete (asks first)"),
        Binding(
            "slash",
            "filter",
            "Filter",
            key_display="/",
            id="entity-filter",
            tooltip="Show only rows containing some text",
        ),
    ]

    class Loaded(Message):
        """The configuration was (re)read from the store."""

        def __init__(self, config: Config, select: str | None) -> None:
            super().__init__()
            self.config = config
            self.select = select

    class Deleted(Message):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    class DeleteRefused(Message):
        def __init__(self, name: str, error: StoreError) -> None:
            super().__init__()
            self.name = name
            self.error = error

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self.filter_text = ""
        self._when_loaded: list[Callable[[], object]] = []

    # ------------------------------------------------------------- layout

    def compose_body(self) -> Iterable[Widget]:
        section = BY_ID[self.SECTION]
        yield Label(section.title, classes="section-title")
        yield Static(escape(section.description), classes="section-description")
        yield Input(placeholder="Filter: type to narrow the list, esc to clear", id="entity-filter")
        yield EntityTable(id="entity-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="entity-message")
        yield from self.compose_detail()

    def compose_detail(self) -> Iterable[Widget]:
        """Widgets under the table showing the highlighted entry (override)."""
        return ()

    def on_mount(self) -> None:
        table = self.query_one("#entity-table", DataTable)
        self.query_one("#entity-filter", Input).display = False
        table.focus()
        self.load()

    def on_screen_resume(self) -> None:
        if self.config is not None:
            self.load(self.current_name())

    # ------------------------------------------------------------- data

    def row(self, spec: Any) -> tuple[Any, ...]:
        """The table cells for one entity (``Text`` for user data)."""
        return (Text(spec.name), Text(spec.description))

    @work(thread=True, exclusive=True, group="entity-load", exit_on_error=False)
    def load(self, select: str | None = None) -> None:
        with self.store.session() as s:
            cfg = repo.load_config(s)
        self.post_message(self.Loaded(cfg, select))

    def on_entity_screen_loaded(self, message: Loaded) -> None:
        self.config = message.config
        self.refill(message.select or self.current_name())
        waiting, self._when_loaded = self._when_loaded, []
        for callback in waiting:
            self.call_later(callback)

    def when_ready(self, callback: Callable[[], object]) -> None:
        if self.config is None:
            self._when_loaded.append(callback)
        else:
            self.call_later(callback)

    def items(self) -> list[Any]:
        return [] if self.config is None else list(getattr(self.config, self.TABLE))

    def matches(self, spec: Any) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.lower()
        return any(needle in (c.plain if isinstance(c, Text) else str(c)).lower() for c in self.row(spec))

    def refill(self, select: str | None = None) -> None:
        table = self.query_one("#entity-table", DataTable)
        shown = [x for x in self.items() if self.matches(x)]
        fill_table(table, self.COLUMNS, [self.row(spec) for spec in shown], [spec.name for spec in shown])
        if select is not None:
            with contextlib.suppress(Exception):  # filtered out or deleted
                table.move_cursor(row=table.get_row_index(select))
        self._empty_hint(shown)
        self.show_detail(self.current())

    def _empty_hint(self, shown: list[Any]) -> None:
        msg = self.query_one("#entity-message", Static)
        if self.config is not None and not self.items():
            msg.update(f"No {self.NOUN}s yet. Press [b]n[/] to create one.")
        elif not shown:
            msg.update(f"No {self.NOUN} matches {escape(repr(self.filter_text))}.")
        elif not msg.has_class("-error"):
            msg.update("")

    def current_name(self) -> str | None:
        table = self.query_one("#entity-table", DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return str(key.value) if key.value is not None else None

    def current(self) -> Any | None:
        name = self.current_name()
        if name is None or self.config is None:
            return None
        return repo.find(self.config, self.TABLE, name)

    @on(DataTable.RowHighlighted, "#entity-table")
    def _highlighted(self) -> None:
        self.show_detail(self.current())

    def show_detail(self, spec: Any | None) -> None:
        """Update the detail widgets for ``spec`` (override)."""

    def chosen_row(self, table: DataTable[Any], what: str) -> str | None:
        """The key of the row an action on ``table`` applies to, only once the user can see it.

        A table without focus shows no live cursor, so acting on its highlighted row would
        act on a row the user did not choose: the first press focuses the table and says
        how to choose; the next press (on the now visible row) acts.
        """
        if table.row_count == 0:
            return None
        if not table.has_focus:
            table.focus()
            self.notify(f"Choose the {what} with ↑↓, then press the key again.", title=f"Which {what}?")
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def set_message(self, text: str | Text, *, error: bool = False) -> None:
        msg = self.query_one("#entity-message", Static)
        msg.set_class(error, "-error")
        msg.update(text)

    # ------------------------------------------------------------- filter

    def action_filter(self) -> None:
        box = self.query_one("#entity-filter", Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#entity-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self.refill(self.current_name())

    @on(Input.Submitted, "#entity-filter")
    def _filter_done(self) -> None:
        self.query_one("#entity-table", DataTable).focus()

    def on_key(self, event: Any) -> None:
        box = self.query_one("#entity-filter", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            box.value = ""
            box.display = False
            self.query_one("#entity-table", DataTable).focus()

    # ------------------------------------------------------------- create / edit

    def form(self, original: Any | None) -> Any:
        """The form modal for a new (``None``) or existing entity (override)."""
        raise NotImplementedError

    def action_new(self) -> None:
        if self.config is None:
            return
        self.app.push_screen(self.form(None), self._form_closed)

    @on(DataTable.RowSelected, "#entity-table")
    def _row_selected(self) -> None:
        self.action_edit()

    def action_edit(self) -> None:
        spec = self.current()
        if spec is None:
            if self.config is not None and not self.items():
                self.action_new()
            return
        self.app.push_screen(self.form(spec), self._form_closed)

    def _form_closed(self, saved: Any | None) -> None:
        if saved is None:
            return
        self.set_message(Text(f"Saved {self.NOUN} {saved.name!r}."))
        self.aigw.config_changed()
        self.load(saved.name)
        self.after_save(saved)

    def after_save(self, saved: Any) -> None:
        """Hook after a form saved (e.g. show a new consumer's key)."""

    # ------------------------------------------------------------- delete

    def action_delete(self) -> None:
        spec = self.current()
        if spec is None or self.config is None:
            return
        users = referrers(self.config, self.TABLE, spec.name)
        if users:  # say so now, rather than ask "cannot be undone?" and then refuse
            text = f"{self.NOUN.capitalize()} {spec.name!r} is in use by {', '.join(users)}: remove it there first."
            self.set_message(Text(text, style="bold red"), error=True)
            self.notify(text, title="Cannot delete", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(spec.name)

        self.app.push_screen(
            ConfirmModal(
                f"Delete {self.NOUN}",
                f"Delete {self.NOUN} {spec.name!r}? This cannot be undone.",
                yes="Delete",
                danger=True,
            ),
            confirmed,
        )

    @work(thread=True, group="entity-delete", exit_on_error=False)
    def _delete(self, name: str) -> None:
        try:
            with self.store.session() as s:
                repo.delete_entity(s, self.TABLE, name)
        except StoreError as exc:
            self.post_message(self.DeleteRefused(name, exc))
            return
        self.post_message(self.Deleted(name))

    def on_entity_screen_deleted(self, message: Deleted) -> None:
        self.set_message(Text(f"Deleted {self.NOUN} {message.name!r}."))
        self.aigw.config_changed()
        self.load()

    def on_entity_screen_delete_refused(self, message: DeleteRefused) -> None:
        text = user_message(message.error)
        self.set_message(Text(text, style="bold red"), error=True)
        self.notify(text, title="Not deleted", severity="error")
