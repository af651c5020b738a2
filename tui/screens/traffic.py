"""Traffic: the live request table, fed by the admin ``/events`` stream of every gateway on the store.

A thread worker per gateway reads its stream (so it works for a gateway this console
started and for ones started elsewhere with ``aigw serve``) and only appends records to
one inbox; a UI timer takes the whole inbox every :data:`BATCH_S` seconds and updates the
table in one operation, so a burst of hundreds of requests per second costs a few
redraws, not one per request. Each stream reconnects by itself when its gateway
restarts; the nodes are listed again every few seconds, so a gateway that starts or
stops elsewhere is followed or dropped.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Sparkline, Static

from store import usage

from ..data import nodes as node_data
from ..data.traffic_feed import MAX_RECORDS, Record, TrafficFeed, fmt_ms
from ..follow import CONNECTING, OWN, MergedFollow, SourceState
from ..gateway_process import GatewayStatus
from ..modals.request_detail import RequestDetailModal
from ..rate import rate_text
from ..widgets.traffic_table import TrafficTable
from .base import SectionScreen

#: How long records collect in the inbox before the table is updated.
BATCH_S = 0.15
#: Most records taken from the inbox per update (the rest wait for the next tick).
BATCH_MAX = 5000
RETRY_S = 1.0
REFUSED_RETRY_S = 5.0


class FilterInput(Input):
    """The filter box: ``escape`` clears it and goes back to the table (elsewhere escape is
    the shell's "go to the sidebar")."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "screen.clear_filter", "Clear filter", id="traffic-clear-filter"),
    ]


class TrafficScreen(SectionScreen):
    """Newest request first; ``space`` pauses, ``/`` filters, ``enter`` shows a request."""

    SECTION = "traffic"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "space",
            "pause",
            "Pause/resume",
            id="traffic-pause",
            tooltip="Freeze the table (new requests are kept and counted) or resume",
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            key_display="/",
            id="traffic-filter",
            tooltip="Show only requests matching consumer, API, model or status (e.g. 4xx)",
        ),
    ]
    PALETTE: ClassVar = (
        ("Traffic: pause/resume", "Stop or resume the live table", "pause"),
        ("Traffic: filter", "Show only some requests (consumer, API, model, 4xx…)", "filter"),
        ("Traffic: request detail", "Every field of the highlighted request", "detail"),
    )

    class StreamsChanged(Message):
        """An ``/events`` stream opened or is away, or a gateway appeared or went. The
        handler reads the states afresh: messages posted from several threads may arrive
        in another order than their changes happened."""

    class NodesListed(Message):
        """The store's nodes were listed: which to follow, which cannot be reached from here."""

        def __init__(self, targets: node_data.Targets) -> None:
            super().__init__()
            self.targets = targets

    class Prefilled(Message):
        """Recent records read from the store, so the table is not empty on open."""

        def __init__(self, records: list[Record]) -> None:
            super().__init__()
            self.records = records

    def __init__(self) -> None:
        super().__init__()
        self.feed = TrafficFeed()
        self._inbox: deque[Record] = deque()
        self._follow: MergedFollow | None = None
        #: Table updates so far (one per batch, however many records it held).
        self.updates = 0
        #: Each followed gateway's stream, the console's own first.
        self.streams: list[SourceState] = [SourceState(OWN, "", False, CONNECTING)]

    # ------------------------------------------------------------- layout

    def compose_body(self) -> Iterable[Widget]:
        yield Label("Traffic", classes="section-title")
        yield Static("", id="traffic-status")
        with Horizontal(id="traffic-sparks"):
            for key, title in (("rps", "req/s"), ("p50", "p50"), ("err", "errors")):
                with Vertical(classes="traffic-spark"):
                    yield Label(title, id=f"spark-{key}-label", classes="traffic-spark-label")
                    yield Sparkline([], id=f"spark-{key}", summary_function=max if key != "p50" else _mean)
        yield FilterInput(
            placeholder="Filter: consumer, API, model, 4xx, 5xx, 429, consumer:name … (enter: keep, esc: clear)",
            id="traffic-filter-input",
        )
        yield TrafficTable(id="traffic-table")

    def on_mount(self) -> None:
        self.query_one("#traffic-filter-input", Input).display = False
        self.query_one(TrafficTable).focus()
        self.set_interval(BATCH_S, self._drain)
        self.set_interval(1.0, self._refresh_stats)
        self.set_interval(node_data.RELIST_S, self._list_nodes)
        self.watch(self.app, "gateway_status", self._gateway_changed, init=False)
        self._start_streams()
        self._list_nodes()
        self._prefill()
        self._show_status()
        self._refresh_stats()

    def on_unmount(self) -> None:
        self._close_stream()

    def _close_stream(self) -> None:
        if self._follow is not None:
            self._follow.close()
        self.workers.cancel_group(self, "traffic-stream")

    # ------------------------------------------------------------- reading (threads)

    @property
    def connected(self) -> bool:
        """Some gateway's stream is open."""
        return any(st.connected for st in self.streams)

    @property
    def stream_base(self) -> str:
        """Where the console's own gateway is followed."""
        return self.streams[0].base if self.streams and self.streams[0].key == OWN else ""

    def _start_streams(self) -> None:
        def spawn(run: Any, name: str) -> None:
            self.run_worker(run, name=name, group="traffic-stream", thread=True, exit_on_error=False)

        def own() -> tuple[str, str | None]:
            return self.gateway.admin().base_url, node_data.admin_token(self.store)

        self._follow = MergedFollow(
            self._inbox.append,
            lambda states: self.post_message(self.StreamsChanged()),
            spawn=spawn,
            token=lambda: node_data.admin_token(self.store),
            refused_retry_s=REFUSED_RETRY_S,
        )
        self._follow.follow_own(own)

    @work(thread=True, exclusive=True, group="traffic-nodes", exit_on_error=False)
    def _list_nodes(self) -> None:
        try:
            found = node_data.list_nodes(self.store)
            own_base = self.gateway.admin().base_url
        except Exception:  # the store is busy or gone: keep following what we follow, try again
            return
        self.post_message(self.NodesListed(node_data.follow_targets(found, own_base, node_data.this_host())))

    def on_traffic_screen_nodes_listed(self, message: NodesListed) -> None:
        if self._follow is not None:
            self._follow.set_nodes(message.targets.follow, message.targets.unreachable)

    @work(thread=True, exclusive=True, group="traffic-prefill", exit_on_error=False)
    def _prefill(self) -> None:
        with self.store.session() as s:
            rows = [usage.record_dict(r) for r in usage.recent(s, MAX_RECORDS)]
        self.post_message(self.Prefilled(rows))

    # ------------------------------------------------------------- updating (UI thread)

    def _drain(self) -> None:
        if not self._inbox:
            return
        inbox = self._inbox
        n = min(len(inbox), BATCH_MAX)
        batch = [inbox.popleft() for _ in range(n)]
        self.feed.add(batch)
        if not self.feed.paused:
            self.query_one(TrafficTable).set_rows(self.feed.view())
            self.updates += 1
        self._show_status()

    def on_traffic_screen_prefilled(self, message: Prefilled) -> None:
        if self.feed.add_older(message.records) and not self.feed.paused:
            self.query_one(TrafficTable).set_rows(self.feed.view())
        self._show_status()
        self._refresh_stats()

    def on_traffic_screen_streams_changed(self, message: StreamsChanged) -> None:
        if self._follow is not None:
            self.streams = self._follow.states() or self.streams
        self._show_status()

    def _gateway_changed(self, status: GatewayStatus) -> None:
        if status.is_up and self._follow is not None and not self.streams[0].connected:
            self._follow.wake(OWN)  # retry now rather than at the next tick
        self._show_status()

    def _show_status(self) -> None:
        feed = self.feed
        table = self.query_one(TrafficTable)
        parts: list[tuple[str, str]] = []
        if feed.paused:
            parts.append((f"⏸ paused — {feed.unseen} new (space to resume)", "bold yellow"))
        parts.extend(self._stream_parts())
        shown = len(table.rows)
        total = len(feed.records)
        parts.append((f"{shown} shown" + (f" of {total}" if shown != total else ""), ""))
        if feed.filter:
            parts.append((f"filter: {feed.filter.text}", "bold cyan"))
        text = Text()
        for i, (chunk, style) in enumerate(parts):
            if i:
                text.append(" · ", style="dim")
            text.append(chunk, style=style)
        status = self.query_one("#traffic-status", Static)
        away = [st for st in self.streams if not st.connected and st.key != OWN]
        status.tooltip = "\n".join(f"{st.key}: {st.reason}" for st in away) or None
        status.update(text)
        # Once more after this refresh: an update landing while a layout is pending can
        # leave the line at its old height (the text would be cut where it now wraps).
        self.call_after_refresh(status.refresh, layout=True)
        self.set_class(not self.connected, "-away")

    def _stream_parts(self) -> list[tuple[str, str]]:
        """Live from where; then, briefly, each gateway that is away (the tooltip says why)."""
        live = [st for st in self.streams if st.connected]
        parts: list[tuple[str, str]] = []
        if len(live) == 1:
            parts.append((f"● live from {live[0].base}", "green"))
        elif live:
            parts.append((f"● live from {len(live)} nodes", "green"))
        for st in self.streams:
            if st.connected:
                continue
            if st.key == OWN:
                if live:
                    continue  # the others are live: this console's own gateway is simply not running
                hint = ""
                status = getattr(self.app, "gateway_status", None)
                if status is not None and not status.is_up:
                    hint = " (ctrl+g starts it)"
                parts.append((f"○ {st.reason} — reconnecting{hint}", "bold red"))
            elif st.reason == CONNECTING:
                parts.append((f"◌ {node_data.short_id(st.key)} connecting…", "dim"))
            else:
                parts.append((f"○ {node_data.short_id(st.key)} unreachable", "bold red" if not live else "yellow"))
        return parts

    def _refresh_stats(self) -> None:
        stats = self.feed.stats
        rps, p50, err = stats.series()
        self.query_one("#spark-rps", Sparkline).data = rps
        self.query_one("#spark-p50", Sparkline).data = p50
        self.query_one("#spark-err", Sparkline).data = err
        _, median, errors = stats.recent(10)
        # The header's number (the gateway's counter), not a second count from the records.
        self.query_one("#spark-rps-label", Label).update(rate_text(self.aigw.gateway_status.rate))
        self.query_one("#spark-p50-label", Label).update(f"p50 latency {fmt_ms(median)}")
        self.query_one("#spark-err-label", Label).update(f"errors {errors:.1f}%")

    # ------------------------------------------------------------- actions

    def action_pause(self) -> None:
        feed = self.feed
        if feed.paused:
            feed.resume()
        else:
            feed.pause()
        self.query_one(TrafficTable).set_rows(feed.view())
        self._show_status()

    def action_filter(self) -> None:
        box = self.query_one("#traffic-filter-input", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#traffic-filter-input", Input)
        box.value = ""
        box.display = False
        self._apply_filter("")
        self.query_one(TrafficTable).focus()

    @on(Input.Changed, "#traffic-filter-input")
    def _filter_changed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#traffic-filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            event.input.display = False
        self.query_one(TrafficTable).focus()

    def _apply_filter(self, text: str) -> None:
        self.feed.set_filter(text)
        table = self.query_one(TrafficTable)
        table.set_rows(self.feed.view())
        self._show_status()

    def action_detail(self) -> None:
        self.query_one(TrafficTable).action_select()

    @on(TrafficTable.Selected)
    def _open_detail(self, event: TrafficTable.Selected) -> None:
        record = {k: v for k, v in event.record.items() if not k.startswith("_")}
        self.app.push_screen(RequestDetailModal(record))

    def on_screen_resume(self) -> None:
        with contextlib.suppress(Exception):
            self.query_one(TrafficTable).focus()


def _mean(values: Any) -> float:
    values = list(values)
    nonzero = [v for v in values if v]
    return sum(nonzero) / len(nonzero) if nonzero else 0.0
