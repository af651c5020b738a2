"""Consumer Groups: a Members tab (with each member's current use) and an Authorized Model APIs tab."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, TabbedContent, TabPane

from store import repo
from store.errors import StoreError
from store.spec import ConsumerGroupSpec

from ..data.limits import (
    LimitsLoaded,
    LimitsPoller,
    LimitsView,
    quota_summary,
    window_summary,
)
from ..errors import user_message
from ..modals.confirm import ConfirmModal
from ..modals.consumer_group_form import ConsumerGroupForm
from ..modals.pick import PickModal
from ..tables import fill_table
from .entity import EntityScreen

#: Members tab columns: (key, label); the table is refilled on each limits refresh.
MEMBER_COLUMNS = (
    ("consumer", "Consumer"),
    ("status", "Status"),
    ("rpm", "Requests/min used"),
    ("tpm", "Tokens/min used"),
    ("quota", "Quota used"),
)
API_COLUMNS = ("Model API", "Base Path", "Routes")


def limit_text(n: int) -> str:
    return f"{n:,}" if n else "∞"


class ConsumerGroupsScreen(EntityScreen):
    SECTION = "consumer-groups"
    TABLE = "consumer_groups"
    NOUN = "consumer group"
    COLUMNS = ("Group Name", "Members", "Authorized Model APIs", "Req/min", "Tokens/min", "Description")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "a",
            "add_authorization",
            "APIs",
            id="group-add-authorization",
            tooltip="Grant the highlighted group access to model APIs",
        ),
        Binding(
            "m", "add_members", "Members", id="group-add-members", tooltip="Add consumers to the highlighted group"
        ),
        Binding(
            "x", "remove", "Remove", id="group-remove", tooltip="Remove the member or API highlighted in the open tab"
        ),
        Binding(
            "left_square_bracket,right_square_bracket",
            "switch_tab",
            "Tab",
            key_display="[ ]",
            show=False,  # the tab bar says it; at 80 columns the footer has no room left
            id="group-switch-tab",
            tooltip="Switch between Members and Authorized Model APIs",
        ),
    ]
    PALETTE: ClassVar = (
        ("New consumer group", "Group consumers and grant model APIs", "new"),
        ("Edit consumer group", "Edit the highlighted consumer group", "edit"),
        ("Delete consumer group", "Delete the highlighted consumer group", "delete"),
        ("Filter consumer groups", "Narrow the consumer group list", "filter"),
        ("Add Authorization", "Grant the highlighted group access to model APIs", "add_authorization"),
        ("Add group members", "Add consumers to the highlighted group", "add_members"),
        ("Remove member / authorization", "Remove the row highlighted in the open tab", "remove"),
    )

    class GroupChanged(Message):
        def __init__(self, spec: ConsumerGroupSpec, what: str) -> None:
            super().__init__()
            self.spec = spec
            self.what = what

    def __init__(self) -> None:
        super().__init__()
        self.limits_view: LimitsView | None = None
        self._limits = LimitsPoller(self, "group-limits")
        self._members_of: ConsumerGroupSpec | None = None

    def compose_detail(self) -> Iterable[Widget]:
        with TabbedContent(id="group-tabs", classes="entity-detail"):
            with TabPane("Members", id="tab-members"):
                yield DataTable(id="group-members", cursor_type="row")
            with TabPane("Authorized Model APIs  (\\[ ] switches)", id="tab-apis"):
                yield DataTable(id="group-apis", cursor_type="row")

    def row(self, spec: Any) -> tuple[Any, ...]:
        return (
            Text(spec.name, style="bold"),
            Text(", ".join(spec.consumers) or "—"),
            Text(", ".join(spec.model_apis) or "—"),
            Text(limit_text(spec.requests_per_minute)),
            Text(limit_text(spec.tokens_per_minute)),
            Text(spec.description),
        )

    def form(self, original: Any | None) -> ConsumerGroupForm:
        assert self.config is not None
        return ConsumerGroupForm(self.store, self.config, original)

    # ------------------------------------------------------------- members' current use

    def on_mount(self) -> None:
        self._limits.start()

    def on_screen_resume(self) -> None:
        self._limits.resume()

    def on_screen_suspend(self) -> None:
        self._limits.pause()

    def on_limits_loaded(self, message: LimitsLoaded) -> None:
        self.limits_view = message.view
        spec = self._members_of
        if spec is None:
            return
        self._fill_members(spec)

    def member_use(self, spec: ConsumerGroupSpec, consumer: str) -> tuple[Text, Text, Text]:
        """The member's per-minute use on each API of the group, and its quota use."""
        view = self.limits_view
        if view is None:
            return Text("…", style="dim"), Text("…", style="dim"), Text("…", style="dim")
        entry = view.consumers.get(consumer) or {}
        apis = entry.get("apis") or {}
        cells: list[Text] = []
        for key in ("requests_per_minute", "tokens_per_minute"):
            parts = [
                (api, window_summary((apis.get(api) or {}).get(key), view.live))
                for api in spec.model_apis
                if api in apis
            ]
            if not parts:
                cells.append(Text("—", style="dim"))
            elif not view.live or len(parts) == 1:
                cells.append(parts[0][1])
            else:
                cells.append(Text(", ").join(Text(f"{api} ") + t for api, t in parts))
        return cells[0], cells[1], quota_summary(entry.get("quota"))

    def show_detail(self, spec: Any | None) -> None:
        self._members_of = spec
        self._fill_members(spec)
        rows: list[tuple[Text, ...]] = []
        keys: list[str | None] = []
        for name in spec.model_apis if spec is not None and self.config is not None else []:
            a = repo.find(self.config, "model_apis", name)
            rows.append((Text(name), Text(a.base_path if a else ""), Text(", ".join(a.routes) if a else "")))
            keys.append(name)
        if spec is not None and not spec.model_apis:
            rows, keys = (
                [(Text("no authorized APIs — press a to Add Authorization", style="dim"), Text(""), Text(""))],
                [None],
            )
        fill_table(self.query_one("#group-apis", DataTable), API_COLUMNS, rows, keys)

    def _fill_members(self, spec: ConsumerGroupSpec | None) -> None:
        rows: list[tuple[Text, ...]] = []
        keys: list[str | None] = []
        for name in spec.consumers if spec is not None and self.config is not None else []:
            c = repo.find(self.config, "consumers", name)
            status = Text("enabled", "green") if c is None or c.enabled else Text("disabled", "red")
            rows.append((Text(name), status, *self.member_use(spec, name)))
            keys.append(name)
        if spec is not None and not spec.consumers:
            rows = [
                (Text("no members — press m to add consumers", style="dim"), *(Text("") for _ in MEMBER_COLUMNS[1:]))
            ]
            keys = [None]
        fill_table(self.query_one("#group-members", DataTable), MEMBER_COLUMNS, rows, keys)

    def action_switch_tab(self) -> None:
        tabs = self.query_one("#group-tabs", TabbedContent)
        tabs.active = "tab-apis" if tabs.active == "tab-members" else "tab-members"

    def _group(self) -> ConsumerGroupSpec | None:
        spec = self.current()
        if spec is None:
            self.notify("Highlight a consumer group first (or press n to create one)", severity="warning")
        return spec

    def action_add_authorization(self) -> None:
        spec = self._group()
        if spec is None or self.config is None:
            return
        self.query_one("#group-tabs", TabbedContent).active = "tab-apis"
        choices = [
            (f"{a.name}  {a.base_path}", a.name) for a in self.config.model_apis if a.name not in spec.model_apis
        ]

        def picked(names: list[str] | None) -> None:
            if names:
                new = copy.deepcopy(spec)
                new.model_apis = [*spec.model_apis, *names]
                self._save_group(new, spec.name, f"authorized {', '.join(names)}")

        self.app.push_screen(
            PickModal(
                f"Add Authorization — group {spec.name!r}",
                choices,
                empty="Every model API is already authorized (or none exist).",
            ),
            picked,
        )

    def action_add_members(self) -> None:
        spec = self._group()
        if spec is None or self.config is None:
            return
        self.query_one("#group-tabs", TabbedContent).active = "tab-members"
        choices = [(c.name, c.name) for c in self.config.consumers if c.name not in spec.consumers]

        def picked(names: list[str] | None) -> None:
            if names:
                new = copy.deepcopy(spec)
                new.consumers = [*spec.consumers, *names]
                self._save_group(new, spec.name, f"added {', '.join(names)}")

        self.app.push_screen(
            PickModal(
                f"Add members — group {spec.name!r}",
                choices,
                empty="Every consumer is already a member (or none exist).",
            ),
            picked,
        )

    def action_remove(self) -> None:
        spec = self._group()
        if spec is None:
            return
        tabs = self.query_one("#group-tabs", TabbedContent)
        on_apis = tabs.active == "tab-apis"
        table = self.query_one("#group-apis" if on_apis else "#group-members", DataTable)
        name = self.chosen_row(table, "model API to remove" if on_apis else "member to remove")
        if name is None:
            return
        what = "authorization for model API" if on_apis else "member"

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            new = copy.deepcopy(spec)
            if on_apis:
                new.model_apis = [a for a in spec.model_apis if a != name]
            else:
                new.consumers = [c for c in spec.consumers if c != name]
            self._save_group(new, spec.name, f"removed {what} {name}")

        self.app.push_screen(
            ConfirmModal("Remove", f"Remove {what} {name!r} from group {spec.name!r}?", yes="Remove", danger=True),
            confirmed,
        )

    @work(thread=True, group="group-change", exit_on_error=False)
    def _save_group(self, spec: ConsumerGroupSpec, original: str, what: str) -> None:
        try:
            with self.store.session() as s:
                saved = repo.save(s, "consumer_groups", spec, original=original)
        except StoreError as exc:
            self.call_from_thread(self.set_message, Text(user_message(exc), style="bold red"), error=True)
            raise
        self.post_message(self.GroupChanged(saved, what))  # type: ignore[arg-type]

    def on_consumer_groups_screen_group_changed(self, message: GroupChanged) -> None:
        self.set_message(Text(f"Group {message.spec.name!r}: {message.what}."))
        self.aigw.config_changed()
        self.load(message.spec.name)
