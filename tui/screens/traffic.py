"""Traffic: the live request table, fed by the gateway's admin ``/events`` stream.

A thread worker reads the stream (so it works for a gateway this console started and
for one started elsewhere with ``aigw serve``) and only appends records to an inbox;
a UI timer takes the whole inbox every :data:`BATCH_S` seconds and updates the table
in one operation, so a burst of hundreds of requests per second costs a few redraws,
not one per request. The stream reconnects by itself when the gateway restarts.
"""

from __future__ import annotations

import contextlib
import threading
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
from textual.worker import get_current_worker

from store import usage

from ..data.traffic_feed import MAX_RECORDS, Record, TrafficFeed, fmt_ms
from ..follow import EventSource, follow_loop
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

    class StreamChanged(Message):
        """The ``/events`` connection opened, or is away (``reason`` says why)."""

        def __init__(self, connected: bool, base: str, reason: str = "") -> None:
            super().__init__()
            self.connected = connected
            self.base = base
            self.reason = reason

    class Prefilled(Message):
        """Recent records read from the store, so the table is not empty on open."""

        def __init__(self, records: list[Record]) -> None:
            super().__init__()
            self.records = records

    def __init__(self) -> None:
        super().__init__()
        self.feed = TrafficFeed()
        self._inbox: deque[Record] = deque()
        self._wake = threading.Event()
        self._source: EventSource | None = None
        self._lock = threading.Lock()
        #: Table updates so far (one per batch, however many records it held).
        self.updates = 0
        self.connected = False
        self.stream_base = ""
        self.stream_reason = "connecting…"

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
        self.watch(self.app, "gateway_status", self._gateway_changed, init=False)
        self._stream()
        self._prefill()
        self._show_status()
        self._refresh_stats()

    def on_unmount(self) -> None:
        self._close_stream()

    def _close_stream(self) -> None:
        self.workers.cancel_group(self, "traffic-stream")
        self._wake.set()
        with self._lock:
            src = self._source
        if src is not None:
            src.close()

    # ------------------------------------------------------------- reading (threads)

    @work(thread=True, exclusive=True, group="traffic-stream", exit_on_error=False)
    def _stream(self) -> None:
        worker = get_current_worker()
        said: tuple[bool, str] | None = None

        def target() -> tuple[str, str | None]:
            admin = self.gateway.admin()
            return admin.base_url, admin.token()

        def opened(base: str) -> None:
            nonlocal said
            said = (True, base)  # so the next loss is reported again
            self.post_message(self.StreamChanged(True, base))

        def away(base: str, reason: str) -> None:
            nonlocal said
            if said != (False, reason):
                said = (False, reason)
                self.post_message(self.StreamChanged(False, base or self.stream_base, reason))

        def wait(delay: float) -> None:
            self._wake.wait(delay)
            self._wake.clear()

        def source(src: EventSource | None) -> None:
            with self._lock:
                self._source = src

        follow_loop(
            target,
            self._inbox.append,
            on_open=opened,
            on_away=away,
            stopped=lambda: worker.is_cancelled,
            wait=wait,
            on_source=source,
            refused_retry_s=REFUSED_RETRY_S,
        )

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

    def on_traffic_screen_stream_changed(self, message: StreamChanged) -> None:
        self.connected = message.connected
        self.stream_base = message.base
        self.stream_reason = message.reason
        self._show_status()

    def _gateway_changed(self, status: GatewayStatus) -> None:
        if status.is_up and not self.connected:
            self._wake.set()  # retry now rather than at the next tick
        self._show_status()

    def _show_status(self) -> None:
        feed = self.feed
        table = self.query_one(TrafficTable)
        parts: list[tuple[str, str]] = []
        if feed.paused:
            parts.append((f"⏸ paused — {feed.unseen} new (space to resume)", "bold yellow"))
        if self.connected:
            parts.append((f"● live from {self.stream_base}", "green"))
        else:
            hint = ""
            status = getattr(self.app, "gateway_status", None)
            if status is not None and not status.is_up:
                hint = " (ctrl+g starts it)"
            parts.append((f"○ {self.stream_reason} — reconnecting{hint}", "bold red"))
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
        self.query_one("#traffic-status", Static).update(text)
        self.set_class(not self.connected, "-away")

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
