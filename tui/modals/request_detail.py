"""One request record in full: every field of the record and the whole error text."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Label, Static

from store.times import iso_utc
from store.usage import RECORD_FIELDS

from ..clipboard import copy_text
from ..data.traffic_feed import status_kind
from ..printable import printable
from .base import Dialog

LABELS = {
    "ts": "Arrived (unix)",
    "request_id": "Request id",
    "method": "Method",
    "path": "Path",
    "consumer": "Consumer",
    "api": "Model API",
    "service": "Model service",
    "model": "Model",
    "key_name": "Model key",
    "status": "Status",
    "latency_ms": "Latency (ms)",
    "ttfb_ms": "Time to first byte (ms)",
    "prompt_tokens": "Prompt tokens",
    "completion_tokens": "Completion tokens",
    "total_tokens": "Total tokens",
    "cost": "Cost",
    "stream": "Streamed",
    "estimated": "Tokens estimated",
    "error": "Error",
    "protocol": "Client protocol",
    "vendor_protocol": "Vendor protocol",
}
KIND_STYLE = {"ok": "green", "warn": "yellow", "bad": "bold red"}


def _value(name: str, value: Any) -> Text:
    if value is None or value == "":
        return Text("–", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if name == "status":
        return Text(str(value), style=KIND_STYLE[status_kind(int(value))])
    if name == "cost":
        return Text(f"${float(value):.10f}".rstrip("0").rstrip(".") if value else "$0")
    if name == "ts":
        return Text(f"{float(value):.6f}")
    if isinstance(value, float):
        return Text(f"{value:.3f}")
    return Text(printable(value))


def detail_table(rec: dict[str, Any]) -> Table:
    """Field → value for every record field (plus the time in UTC and local)."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    ts = float(rec.get("ts") or 0.0)
    utc = rec.get("time") or iso_utc(ts)
    table.add_row("Time (UTC)", Text(str(utc)))
    table.add_row("Time (local)", Text(datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")))
    for name in RECORD_FIELDS:
        if name not in ("error", "attempts"):
            table.add_row(LABELS.get(name, name), _value(name, rec.get(name)))
    return table


def attempts_table(rec: dict[str, Any]) -> Table | Text:
    """One line per vendor attempt, in order: service, key, status, why it ended, how long."""
    attempts = [a for a in rec.get("attempts") or [] if isinstance(a, dict)]
    if not attempts:
        return Text("none (the gateway answered without a vendor)", style="dim")
    table = Table.grid(padding=(0, 2))
    for _ in range(5):
        table.add_column(no_wrap=True)
    for i, a in enumerate(attempts, 1):
        reason = str(a.get("reason") or "")
        table.add_row(
            Text(f"{i}. {a.get('service') or '–'}", style="bold"),
            Text(str(a.get("key") or "–")),
            _value("status", a.get("status") or 0),
            Text(reason, style="green" if reason == "ok" else "yellow"),
            Text(f"{float(a.get('ms') or 0.0):.0f} ms"),
        )
    return table


class RequestDetailModal(Dialog[None]):
    """Read-only; ``c`` copies the request id (to find it in the vendor's or client's logs)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "close", "Close", id="detail-close"),
        Binding("c", "copy", "Copy request id", id="detail-copy"),
    ]

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(classes="dialog-screen")
        self.record = record

    def compose(self) -> ComposeResult:
        rec = self.record
        with Vertical(classes="dialog", id="request-detail"):
            yield Label(Text(f"Request {printable(rec.get('request_id', ''))}"), classes="dialog-title")
            with VerticalScroll(id="request-detail-body"):
                # The error first: it is what one opens a failed request for.
                error = printable(rec.get("error") or "")
                yield Label("Error", classes="detail-title", id="request-detail-error-title")
                yield Static(Text(error) if error else Text("none", style="dim"), id="request-detail-error")
                yield Label("Attempts", classes="detail-title", id="request-detail-attempts-title")
                yield Static(attempts_table(rec), id="request-detail-attempts")
                yield Static(detail_table(rec), id="request-detail-fields")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy id (c)", id="copy")
                yield Button("Close (esc)", variant="primary", id="close")

    def on_mount(self) -> None:
        self.query_one("#close", Button).focus()

    @on(Button.Pressed, "#copy")
    def action_copy(self) -> None:
        copy_text(self.app, str(self.record.get("request_id", "")), "Request id")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
