"""Consumers: the callers, and their API keys (created shown once, listed by prefix, revoked)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Label

from store import repo

from ..data.limits import (
    LIMIT_COLUMNS,
    LimitsLoaded,
    LimitsPoller,
    LimitsView,
    consumer_rows,
    source_text,
)
from ..modals.confirm import ConfirmModal
from ..modals.consumer_form import ConsumerForm
from ..modals.secret import ShowSecretModal
from ..tables import fill_table
from .entity import EntityScreen

KEY_COLUMNS = ("Key (prefix)", "Created")


def quota_text(spec: Any) -> str:
    if not spec.quota:
        return "unlimited"
    period = "total" if spec.quota_period == "total" else f"/{spec.quota_period}"
    amount = f"{int(spec.quota):,}" if float(spec.quota).is_integer() else f"{spec.quota:,.2f}"
    return f"{amount} {spec.quota_unit} {period}"


class ConsumersScreen(EntityScreen):
    SECTION = "consumers"
    TABLE = "consumers"
    NOUN = "consumer"
    COLUMNS = ("Consumer Name", "Status", "Keys", "Quota", "Groups", "Description")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "k",
            "create_key",
            "Create Key",
            id="consumer-create-key",
            tooltip="Generate a new API key for the highlighted consumer (shown once)",
        ),
        Binding(
            "x",
            "revoke_key",
            "Revoke key",
            id="consumer-revoke-key",
            tooltip="Revoke the key highlighted in the keys table",
        ),
    ]
    PALETTE: ClassVar = (
        ("New consumer", "Create a caller identity", "new"),
        ("Edit consumer", "Edit the highlighted consumer", "edit"),
        ("Delete consumer", "Delete the highlighted consumer", "delete"),
        ("Filter consumers", "Narrow the consumer list", "filter"),
        ("Create consumer API key", "New key for the highlighted consumer, shown once", "create_key"),
        ("Revoke consumer API key", "Revoke the key highlighted in the keys table", "revoke_key"),
    )

    class KeysLoaded(Message):
        def __init__(self, consumer: str, keys: list[tuple[int, str, str]]) -> None:
            super().__init__()
            self.consumer = consumer
            self.keys = keys

    class KeyCreated(Message):
        def __init__(self, consumer: str, key: str) -> None:
            super().__init__()
            self.consumer = consumer
            self.key = key

    class KeyRevoked(Message):
        def __init__(self, consumer: str) -> None:
            super().__init__()
            self.consumer = consumer

    def __init__(self) -> None:
        super().__init__()
        self._form: ConsumerForm | None = None
        self._keys_of: str | None = None
        self.limits_view: LimitsView | None = None
        self._limits = LimitsPoller(self, "consumer-limits")

    def compose_detail(self) -> Iterable[Widget]:
        with Horizontal(classes="entity-detail", id="consumer-detail"):
            with Vertical(id="consumer-keys-pane"):
                yield Label("API keys", id="consumer-keys-title", classes="detail-title")
                table: DataTable[Text] = DataTable(id="consumer-keys", cursor_type="row")
                yield table
            with Vertical(id="consumer-limits-pane"):
                yield Label("Limits and current use", id="consumer-limits-title", classes="detail-title")
                limits: DataTable[Text] = DataTable(id="consumer-limits", cursor_type="none")
                yield limits

    # ------------------------------------------------------------- limits and current use

    def on_mount(self) -> None:
        self._limits.start()

    def on_screen_resume(self) -> None:
        self._limits.resume()

    def on_screen_suspend(self) -> None:
        self._limits.pause()

    def on_limits_loaded(self, message: LimitsLoaded) -> None:
        self.limits_view = message.view
        self._show_limits(self._keys_of)

    def _show_limits(self, consumer: str | None) -> None:
        title = self.query_one("#consumer-limits-title", Label)
        table = self.query_one("#consumer-limits", DataTable)
        view = self.limits_view
        if consumer is None:
            title.update("Limits and current use")
            fill_table(table, LIMIT_COLUMNS, [])
            return
        title.update(escape(f"Limits of {consumer!r}") + f"   [dim]({source_text(view)})[/]")
        rows: list[Any] = list(consumer_rows(view, consumer)) if view is not None else []
        if view is not None and not rows:
            rows = [(Text("no quota and no authorized model API", style="dim"), *(Text("") for _ in LIMIT_COLUMNS[1:]))]
        fill_table(table, LIMIT_COLUMNS, rows)

    def row(self, spec: Any) -> tuple[Any, ...]:
        groups = [g.name for g in (self.config.consumer_groups if self.config else []) if spec.name in g.consumers]
        n = len(spec.api_key_hashes or [])
        return (
            Text(spec.name, style="bold"),
            Text("enabled", style="green") if spec.enabled else Text("disabled", style="red"),
            Text(str(n)),
            Text(quota_text(spec)),
            Text(", ".join(groups) or "—"),
            Text(spec.description),
        )

    def form(self, original: Any | None) -> ConsumerForm:
        assert self.config is not None
        self._form = ConsumerForm(self.store, self.config, original)
        return self._form

    def after_save(self, saved: Any) -> None:
        form, self._form = self._form, None
        if form is not None and form.original is not None and form.original.name != saved.name:
            self.aigw.consumer_renamed(form.original.name, saved.name)
        if form is not None and form.created_key:
            key, form.created_key = form.created_key, None
            self.aigw.remember_key(saved.name, key)
            self.app.push_screen(ShowSecretModal(saved.name, key))

    # ------------------------------------------------------------- keys of the highlighted consumer

    def show_detail(self, spec: Any | None) -> None:
        title = self.query_one("#consumer-keys-title", Label)
        if spec is None:
            title.update("API keys")
            fill_table(self.query_one("#consumer-keys", DataTable), KEY_COLUMNS, [])
            self._keys_of = None
            self._show_limits(None)
            return
        title.update(escape(f"API keys of {spec.name!r}") + "   [dim](k create · x revoke)[/]")
        self._keys_of = spec.name
        self.load_keys(spec.name)
        self._show_limits(spec.name)

    @work(thread=True, exclusive=True, group="consumer-keys", exit_on_error=False)
    def load_keys(self, consumer: str) -> None:
        with self.store.session() as s:
            keys = [
                (k.id or 0, k.prefix, k.created_at.strftime("%Y-%m-%d %H:%M"))
                for k in repo.list_consumer_keys(s, consumer)
            ]
        self.post_message(self.KeysLoaded(consumer, keys))

    def on_consumers_screen_keys_loaded(self, message: KeysLoaded) -> None:
        if message.consumer != self._keys_of:
            return
        table = self.query_one("#consumer-keys", DataTable)
        rows: list[tuple[Text, Text]] = [(Text(prefix), Text(created)) for _, prefix, created in message.keys]
        keys: list[str | None] = [str(key_id) for key_id, _, _ in message.keys]
        if not message.keys:
            rows, keys = [(Text("no keys — press k to create one", style="dim"), Text(""))], [None]
        fill_table(table, KEY_COLUMNS, rows, keys)

    def action_create_key(self) -> None:
        spec = self.current()
        if spec is None:
            self.notify("Highlight a consumer first", severity="warning")
            return
        self._create_key(spec.name)

    @work(thread=True, group="consumer-create-key", exit_on_error=False)
    def _create_key(self, consumer: str) -> None:
        with self.store.session() as s:
            key = repo.create_consumer_key(s, consumer)
        self.post_message(self.KeyCreated(consumer, key))

    def on_consumers_screen_key_created(self, message: KeyCreated) -> None:
        self.aigw.config_changed()
        self.aigw.remember_key(message.consumer, message.key)
        self.load(message.consumer)
        self.app.push_screen(ShowSecretModal(message.consumer, message.key))

    def action_revoke_key(self) -> None:
        spec = self.current()
        table = self.query_one("#consumer-keys", DataTable)
        if spec is None:
            return
        key = self.chosen_row(table, "key to revoke")
        if key is None:
            return
        prefix, created = table.get_row(key)[:2]

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._revoke(spec.name, int(key))

        self.app.push_screen(
            ConfirmModal(
                "Revoke API key",
                f"Revoke key {prefix} (created {created}) of consumer {spec.name!r}? Clients using it get 401 at once.",
                yes="Revoke",
                danger=True,
            ),
            confirmed,
        )

    @work(thread=True, group="consumer-revoke", exit_on_error=False)
    def _revoke(self, consumer: str, key_id: int) -> None:
        with self.store.session() as s:
            repo.revoke_consumer_key(s, consumer, key_id)
        self.post_message(self.KeyRevoked(consumer))

    def on_consumers_screen_key_revoked(self, message: KeyRevoked) -> None:
        self.set_message(Text(f"Revoked a key of consumer {message.consumer!r}."))
        self.aigw.config_changed()
        self.load(message.consumer)
