"""The console app — wiring only: sections as modes, app-wide bindings, palette, gateway state.

Each sidebar section is a mode (its own screen stack), so a section keeps its state
while another is shown and a modal opened in one never covers another.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.worker import Worker, WorkerState

from store.db import Store, open_store

from .commands import ConsoleCommands
from .data.nodes import NodesWatch
from .errors import user_message
from .gateway_process import CRASHED, STARTING, GatewayController, GatewayStatus
from .modals.quit import QuitChoice, QuitModal
from .sections import BY_ID, SECTIONS, load_screen_class

STYLES = sorted(Path(__file__).parent.glob("*.tcss"))


class AigwApp(App[int]):
    """The aigw console. ``store`` and ``gateway`` are shared by every section screen."""

    TITLE = "aigw"
    CSS_PATH: ClassVar = STYLES  # type: ignore[misc]
    COMMANDS: ClassVar = App.COMMANDS | {ConsoleCommands}  # type: ignore[misc]
    HORIZONTAL_BREAKPOINTS: ClassVar = [(0, "-narrow"), (120, "-wide")]
    """Screens get ``-narrow`` below 120 columns (80×24 keeps every section usable)."""
    VERTICAL_BREAKPOINTS: ClassVar = [(0, "-short"), (36, "-tall")]
    """``-short`` below 36 rows: dialogs scroll their fields and keep their buttons visible."""
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            priority=True,
            id="quit",
            tooltip="Quit the console (asks whether to leave a running gateway up)",
        ),
    ]

    gateway_status: reactive[GatewayStatus] = reactive(GatewayStatus, always_update=True)
    """The latest observation of the gateway process (the header and Instance Info follow it)."""

    class GatewayObserved(Message):
        """A poll or a start/stop produced a new gateway status."""

        def __init__(self, status: GatewayStatus) -> None:
            super().__init__()
            self.status = status

    def __init__(
        self,
        store: Store,
        *,
        start_section: str = "instance",
        gateway: GatewayController | None = None,
        poll_interval: float | None = 1.0,
    ) -> None:
        super().__init__()
        self.store = store
        self.gateway = gateway or GatewayController(store)
        self.nodes_watch = NodesWatch(store)
        """The other gateways on the store: the header's rate counts theirs too."""
        self.start_section = start_section if start_section in BY_ID else "instance"
        self.poll_interval = poll_interval
        self.session_keys: dict[str, str] = {}
        """Consumer keys created in this console run, by consumer — memory only, never stored —
        so "Try it" can use one without the user pasting it back."""
        for section in SECTIONS:
            self.add_mode(section.id, lambda s=section: load_screen_class(s)())

    def on_mount(self) -> None:
        self.switch_mode(self.start_section)
        self.refresh_gateway()
        if self.poll_interval:
            self.set_interval(self.poll_interval, self.refresh_gateway)

    # ------------------------------------------------------------- sections

    def action_switch_section(self, section: str) -> None:
        if section in BY_ID:
            self.switch_mode(section)

    async def action_run_in_section(self, section: str, action: str) -> None:
        """Palette entries: open ``section`` and run one of its screen's actions there."""
        await self.switch_mode(section)
        screen = self.screen
        when_ready = getattr(screen, "when_ready", None)
        if when_ready is not None:
            when_ready(lambda: screen.run_action(action))
        else:
            await screen.run_action(action)

    # ------------------------------------------------------------- gateway

    def refresh_gateway(self) -> None:
        self._poll_gateway()

    @work(thread=True, exclusive=True, group="gateway-poll", exit_on_error=False)
    def _poll_gateway(self) -> None:
        self.post_message(self.GatewayObserved(self.with_nodes(self.gateway.status())))

    def with_nodes(self, status: GatewayStatus) -> GatewayStatus:
        """``status`` with the rate over every gateway on the store that answers, and how
        many do (blocking: the poll worker's thread)."""
        health = status.health
        own = ((health.pid, health.started_at), health.requests_total) if health is not None else None
        view = self.nodes_watch.observe(own, self.gateway.admin().base_url)
        return replace(status, rate=view.rate, nodes=view.answered)

    def on_aigw_app_gateway_observed(self, message: GatewayObserved) -> None:
        previous, status = self.gateway_status, message.status
        if status.nodes is None:  # a start/stop step: the other nodes did not change
            status = replace(status, nodes=previous.nodes)
        self.gateway_status = status
        if status.state == CRASHED and previous.state != CRASHED:
            self.notify(status.message or "the gateway stopped unexpectedly", title="Gateway crashed", severity="error")

    def action_gateway_start(self) -> None:
        self._gateway_do("start")

    def action_gateway_stop(self) -> None:
        self._gateway_do("stop")

    def action_gateway_restart(self) -> None:
        self._gateway_do("restart")

    def action_gateway_toggle(self) -> None:
        self._gateway_do("stop" if self.gateway_status.is_up else "start")

    @work(thread=True, exclusive=True, group="gateway-control", exit_on_error=False)
    def _gateway_do(self, what: str) -> GatewayStatus:
        return self.run_gateway(what)

    def run_gateway(self, what: str) -> GatewayStatus:
        """Start, stop or restart the gateway, blocking (call from a thread worker): the one
        path every screen uses, so the header and every screen see each state it passes."""
        self.post_message(
            self.GatewayObserved(
                GatewayStatus(
                    state=STARTING if what != "stop" else "stopping",
                    listen=self.gateway_status.listen,
                    admin_listen=self.gateway_status.admin_listen,
                )
            )
        )
        status: GatewayStatus = self.with_nodes(getattr(self.gateway, what)())
        self.post_message(self.GatewayObserved(status))
        return status

    def remember_key(self, consumer: str, key: str) -> None:
        self.session_keys[consumer] = key

    def consumer_renamed(self, old: str, new: str) -> None:
        """A renamed consumer keeps its keys, and so does this run's memory of them."""
        if old in self.session_keys:
            self.session_keys[new] = self.session_keys.pop(old)

    def config_changed(self) -> None:
        """Every saved change: tell a running gateway now (it would also notice within 2 s)."""
        if self.gateway_status.is_up:
            self._reload_gateway()

    @work(thread=True, group="gateway-reload", exit_on_error=False)
    def _reload_gateway(self) -> int | None:
        return self.gateway.reload()

    # ------------------------------------------------------------- failures, in one place

    def on_unmount(self) -> None:
        self.nodes_watch.close()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.worker_failed(event)

    def worker_failed(self, event: Worker.StateChanged) -> None:
        """Every failed worker ends here (``StateChanged`` does not bubble: screens and
        dialogs forward theirs), shown as one error notification in the user's words."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(user_message(event.worker.error), title="Something went wrong", severity="error", timeout=8)

    # ------------------------------------------------------------- quitting

    async def action_quit(self) -> None:
        st = self.gateway_status
        if not st.is_up:
            self.exit(0)
            return

        def chosen(choice: QuitChoice | None) -> None:
            if choice == "leave":
                self.exit(0)
            elif choice == "stop":
                self.notify("Stopping the gateway…")
                self._stop_then_exit()

        self.push_screen(QuitModal(st.public_url or st.listen, owned=self.gateway.owned), chosen)

    @work(thread=True, group="gateway-control", exit_on_error=False)
    def _stop_then_exit(self) -> None:
        try:
            self.gateway.stop()
        finally:
            self.call_from_thread(self.exit, 0)


def _first_section(store: Store) -> str:
    """An empty store opens on Quick Start, as the cloud console offers on a new instance."""
    from store import repo

    with store.session() as s:
        cfg = repo.load_config(s)
    empty = not (cfg.model_keys or cfg.model_services or cfg.model_apis or cfg.consumers)
    if empty:
        return "quickstart"
    # A Quick Start run left unfinished: reopen it where it stopped.
    from .screens.quickstart.progress import load_progress

    progress = load_progress(store)
    return "quickstart" if progress.names and not progress.done else "instance"


def run_console(db: str | None) -> int:
    store = open_store(db)
    try:
        app = AigwApp(store, start_section=_first_section(store))
        result = app.run()
        return int(result or 0)
    finally:
        store.dispose()
