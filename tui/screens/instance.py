"""Instance Info: where the gateway listens, where its data lives, its process, and every
gateway (node) running on the same store."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, DataTable, Label, Static

from store import __version__, repo
from store.nodes import STALE_S, NodeInfo
from store.spec import GatewaySpec

from ..data import nodes as node_data
from ..gateway_process import CRASHED, STARTING, STOPPING, GatewayStatus
from ..tables import fill_table
from ..widgets.gateway_header import describe_status
from .base import SectionScreen

#: How often the nodes table is read again while the screen is shown ("last seen" moves).
NODES_REFRESH_S = 2.0


class InstanceScreen(SectionScreen):
    """The cloud console's "Instance Information", plus the gateway process controls."""

    SECTION = "instance"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "e",
            "edit_settings",
            "Edit settings",
            id="instance-edit",
            tooltip="Change listen, public URL and admin addresses",
        ),
        Binding("s", "app.gateway_start", "Start", id="instance-start"),
        Binding("x", "app.gateway_stop", "Stop", id="instance-stop"),
        Binding("r", "app.gateway_restart", "Restart", id="instance-restart"),
    ]
    PALETTE: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("Edit gateway settings", "listen, public URL, admin address", "edit_settings"),
    )

    class SettingsLoaded(Message):
        def __init__(self, settings: GatewaySpec, location: str, data_dir: str) -> None:
            super().__init__()
            self.settings, self.location, self.data_dir = settings, location, data_dir

    class NodesLoaded(Message):
        def __init__(self, found: list[NodeInfo], now: float) -> None:
            super().__init__()
            self.found, self.now = found, now

    settings: GatewaySpec | None = None
    nodes: list[NodeInfo] | None = None
    """The store's nodes as last read (``None`` before the first read)."""

    def compose_body(self) -> Iterable[Widget]:
        yield Label("Instance Info", classes="section-title")
        with VerticalScroll(id="instance-scroll"):
            yield Static(id="instance-facts")
            yield Label("Gateway process", classes="subsection-title")
            yield Static(id="instance-process")
            with Horizontal(id="instance-buttons"):
                yield Button("Start (s)", id="start", variant="success")
                yield Button("Stop (x)", id="stop", variant="error")
                yield Button("Restart (r)", id="restart")
                yield Button("Edit settings (e)", id="edit", variant="primary")
            yield Static(id="instance-log")
            yield Label("Nodes on this store", classes="subsection-title")
            yield Static(id="instance-nodes-note")
            yield DataTable(id="instance-nodes", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.watch(self.app, "gateway_status", self._status_changed)
        self.query_one("#instance-nodes", DataTable).display = False
        self.set_interval(NODES_REFRESH_S, self._refresh_nodes)
        self.load()
        self.load_nodes()

    def on_screen_resume(self) -> None:
        self.load()
        self.load_nodes()

    def _refresh_nodes(self) -> None:
        if self.is_current:
            self.load_nodes(quiet=True)

    @work(thread=True, exclusive=True, group="instance-nodes", exit_on_error=False)
    def load_nodes(self, quiet: bool = False) -> None:
        """``quiet``: a periodic refresh, which says nothing when the store does not answer
        (the table keeps its last rows; opening the section again reports the error)."""
        now = node_data.clock()
        try:
            found = node_data.list_nodes(self.store, now)
        except Exception:
            if quiet:
                return
            raise
        self.post_message(self.NodesLoaded(found, now))

    def on_instance_screen_nodes_loaded(self, message: NodesLoaded) -> None:
        self.nodes = message.found
        table = self.query_one("#instance-nodes", DataTable)
        note = self.query_one("#instance-nodes-note", Static)
        fill_table(
            table,
            node_data.NODE_COLUMNS,
            [node_data.node_cells(n, message.now) for n in message.found],
            [n.id for n in message.found],
        )
        # Its height from its rows now (an auto height is only known after the table's next
        # idle pass); a line more below 120 columns, where it scrolls sideways.
        table.styles.height = min(12, len(message.found) + 1 + (1 if self.has_class("-narrow") else 0))
        table.display = bool(message.found)
        stale = sum(1 for n in message.found if n.stale)
        if not message.found:
            note.update("No gateway is running on this store.")
        else:
            live = len(message.found) - stale
            note.update(f"{live} live" + (f", {stale} stale (unseen for {STALE_S:.0f} s)" if stale else ""))

    @work(thread=True, exclusive=True, group="instance-load", exit_on_error=False)
    def load(self) -> None:
        with self.store.session() as s:
            settings = repo.load_config(s).gateway
        self.post_message(self.SettingsLoaded(settings, self.store.location.describe(), str(self.store.data_dir)))

    def on_instance_screen_settings_loaded(self, message: SettingsLoaded) -> None:
        self.settings = message.settings
        self.location, self.data_dir = message.location, message.data_dir
        self._render_facts()

    def _render_facts(self) -> None:
        if self.settings is None:
            return
        st = self.aigw.gateway_status
        g = self.settings
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold", no_wrap=True)
        t.add_column(overflow="fold")
        t.add_row("Listen", Text(g.listen))
        t.add_row("Public URL", Text(g.effective_public_url() + ("" if g.public_url else "  (from listen)")))
        t.add_row("Admin address", Text(g.admin_listen))
        t.add_row("Database", Text(self.location))
        t.add_row("Data folder", Text(self.data_dir))
        t.add_row("Version", Text(f"aigw {__version__}" + (f" · gateway {st.version}" if st.version else "")))
        t.add_row("Gateway", describe_status(st))
        self.query_one("#instance-facts", Static).update(t)

    def _status_changed(self, st: GatewayStatus) -> None:
        self._render_facts()
        lines = []
        if st.is_up:
            lines.append(f"pid {st.pid} · {st.requests_total or 0} requests served")
            lines.append(f"Traffic address: {st.public_url}   Admin: {st.admin_listen}")
        elif st.state == CRASHED:
            lines.append(f"[b red]{escape(st.message or 'the gateway stopped unexpectedly')}[/]")
        elif st.state in (STARTING, STOPPING):
            lines.append(f"[b yellow]{st.state.capitalize()}…[/] {escape(st.message)}")
        else:
            lines.append("Not running. Press [b]s[/] (or ctrl+g anywhere) to start it.")
        self.query_one("#instance-process", Static).update("\n".join(lines))
        log = self.query_one("#instance-log", Static)
        if st.log_tail and not st.is_up:
            log.update(Text.assemble(("Last lines of gateway.log\n", "bold"), st.log_tail))
            log.display = True
        else:
            log.display = False

    @on(Button.Pressed)
    async def _button(self, event: Button.Pressed) -> None:
        actions = {
            "start": "app.gateway_start",
            "stop": "app.gateway_stop",
            "restart": "app.gateway_restart",
            "edit": "edit_settings",
        }
        if event.button.id in actions:
            await self.run_action(actions[event.button.id])

    def action_edit_settings(self) -> None:
        from ..modals.gateway_form import GatewayForm

        if self.settings is None:
            return

        def saved(result: GatewaySpec | None) -> None:
            if result is not None:
                self.notify("Gateway settings saved. Restart the gateway to listen on new addresses.")
                self.aigw.config_changed()
                self.load()

        self.app.push_screen(GatewayForm(self.settings, self.store), saved)
