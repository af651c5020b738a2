"""Usage: tokens and cost by consumer, API or model over today / 7 days / 30 days, and quota use.

Everything is counted from the stored request records (``store.usage``) in a thread
worker — the same sums ``aigw usage`` prints — and refreshed while the section is shown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Label, Static

from store import repo, usage

from ..bars import bar, quota_style
from ..printable import printable
from ..tables import fill_table
from .base import SectionScreen

PERIODS: dict[str, tuple[str, str]] = {
    "today": ("Today", "since 00:00 UTC"),
    "7d": ("7 days", "the last 7 days"),
    "30d": ("30 days", "the last 30 days"),
}
GROUPS: dict[str, str] = {"consumer": "Consumer", "api": "Model API", "model": "Model"}
BAR_WIDTH = 16
REFRESH_S = 5.0
QUOTA_COLUMNS = ("Consumer", "Quota", "Used", "Left", "Use", "Resets")
TOTAL_KEYS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "estimated_requests",
    "cache_hits",
    "saved_tokens",
    "cost_saved",
)


def period_since(period: str, now: float | None = None) -> float:
    """Start of ``today`` (UTC midnight, like a daily quota) or of a rolling 7/30-day window."""
    now = time.time() if now is None else now
    if period == "today":
        return usage.period_start("day", now)
    return now - {"7d": 7, "30d": 30}[period] * 86_400.0


@dataclass(frozen=True)
class QuotaUse:
    consumer: str
    quota: float
    unit: str
    period: str
    used: float
    resets: float | None

    @property
    def fraction(self) -> float:
        return self.used / self.quota if self.quota else 0.0


def _amount(value: float, unit: str) -> str:
    if unit == "cost":
        return f"${value:,.4f}"
    return f"{value:,.0f} {unit}"


def _cost(value: float) -> str:
    return f"${value:,.6f}" if value < 1 else f"${value:,.2f}"


class UsageScreen(SectionScreen):
    """``d``/``w``/``m`` pick the period, ``g`` the grouping; numbers are those of ``aigw usage``."""

    SECTION = "usage"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "period('today')", "Today", id="usage-today", tooltip="Usage since 00:00 UTC"),
        Binding("w", "period('7d')", "7 days", id="usage-7d", tooltip="Usage over the last 7 days"),
        Binding("m", "period('30d')", "30 days", id="usage-30d", tooltip="Usage over the last 30 days"),
        Binding("g", "group", "Group by", id="usage-group", tooltip="Group by consumer, model API or model"),
        Binding("r", "refresh", "Refresh", show=False, id="usage-refresh"),
    ]
    PALETTE: ClassVar = (
        ("Usage: today", "Tokens and cost since 00:00 UTC", "period('today')"),
        ("Usage: last 7 days", "Tokens and cost over 7 days", "period('7d')"),
        ("Usage: last 30 days", "Tokens and cost over 30 days", "period('30d')"),
        ("Usage: change grouping", "By consumer, model API or model", "group"),
    )

    class Loaded(Message):
        def __init__(
            self, period: str, by: str, since: float, rows: list[dict[str, Any]], quotas: list[QuotaUse]
        ) -> None:
            super().__init__()
            self.period, self.by, self.since = period, by, since
            self.rows, self.quotas = rows, quotas

    def __init__(self) -> None:
        super().__init__()
        self.period = "today"
        self.by = "consumer"
        self.rows: list[dict[str, Any]] = []
        self.total: dict[str, Any] = {}
        self.quotas: list[QuotaUse] = []
        #: What the tables show now (period start, rows, quotas), so an unchanged refresh is skipped.
        self._shown: tuple[float, list[dict[str, Any]], list[QuotaUse]] | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Label("Usage", classes="section-title")
        yield Static("", id="usage-controls")
        yield Static("", id="usage-summary")
        yield DataTable(id="usage-table", cursor_type="row", zebra_stripes=True)
        yield Label("Quotas", classes="detail-title", id="usage-quotas-title")
        yield DataTable(id="usage-quotas", cursor_type="row")

    def on_mount(self) -> None:
        self._show_controls()
        self.load()
        self.set_interval(REFRESH_S, self._tick)

    def on_screen_resume(self) -> None:
        self.load()

    def _tick(self) -> None:
        if self.is_current:
            self.load()

    # ------------------------------------------------------------- data (thread)

    @work(thread=True, exclusive=True, group="usage-load", exit_on_error=False)
    def load(self) -> None:
        period, by = self.period, self.by
        now = time.time()
        since = period_since(period, now)
        with self.store.session() as s:
            rows = usage.totals(s, by=by, since=since)
            quotas = []
            for c in repo.load_config(s).consumers:
                if c.quota:
                    start = usage.period_start(c.quota_period, now)
                    quotas.append(
                        QuotaUse(
                            c.name,
                            c.quota,
                            c.quota_unit,
                            c.quota_period,
                            usage.quota_used(s, c.name, c.quota_unit, start),
                            usage.period_end(c.quota_period, now),
                        )
                    )
        self.post_message(self.Loaded(period, by, since, rows, quotas))

    # ------------------------------------------------------------- showing (UI thread)

    def on_usage_screen_loaded(self, message: Loaded) -> None:
        if (message.period, message.by) != (self.period, self.by):
            return  # an older load finished after the user switched
        shown = (message.since, message.rows, message.quotas)
        if shown == self._shown:
            return  # the periodic refresh found nothing new: leave the tables (and their layout) alone
        self._shown = shown
        self.rows, self.quotas = message.rows, message.quotas
        self.total = {k: sum(r[k] for r in message.rows) for k in TOTAL_KEYS}
        self._show_summary(message.since)
        self._show_table()
        self._show_quotas()

    def _show_controls(self) -> None:
        text = Text("Period ", style="dim")
        for key, (label, _) in PERIODS.items():
            text.append(f" {label} ", style="reverse bold" if key == self.period else "")
        text.append("   Group by ", style="dim")
        for key, label in GROUPS.items():
            text.append(f" {label} ", style="reverse bold" if key == self.by else "")
        text.append("   d/w/m period · g group", style="dim")
        self.query_one("#usage-controls", Static).update(text)

    def _show_summary(self, since: float) -> None:
        t = self.total
        label = PERIODS[self.period][1]
        start = datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M")
        text = Text()
        text.append(f"{label[0].upper()}{label[1:]} (from {start}): ", style="dim")
        text.append(f"{t['requests']:,} requests", style="bold")
        text.append(f" · {t['total_tokens']:,} tokens ({t['prompt_tokens']:,} in / {t['completion_tokens']:,} out)")
        text.append(f" · {_cost(t['cost'])}", style="bold")
        if t["errors"]:
            text.append(f" · {t['errors']:,} error{'s' if t['errors'] != 1 else ''}", style="red")
        if t["estimated_requests"]:
            text.append(f" · ~ {t['estimated_requests']:,} with estimated tokens", style="yellow")
        if t["cache_hits"]:
            text.append(
                f" · {t['cache_hits']:,} from the cache saved {t['saved_tokens']:,} tokens, {_cost(t['cost_saved'])}",
                style="green",
            )
        self.query_one("#usage-summary", Static).update(text)

    def _show_table(self) -> None:
        # Bars compare cost; with no prices set anywhere, they compare tokens instead.
        measure = "cost" if any(r["cost"] for r in self.rows) else "total_tokens"
        columns = (
            GROUPS[self.by],
            "Requests",
            "Total tokens",
            "Cost",
            "Share of " + ("cost" if measure == "cost" else "tokens"),
            "Tokens in",
            "Tokens out",
            "Errors",
        )
        top = max((r[measure] for r in self.rows), default=0)
        rows: list[tuple[Text, ...]] = []
        keys: list[str | None] = []
        for r in self.rows:
            name = r[self.by]
            est = "~" if r["estimated_requests"] else ""
            rows.append(
                (
                    Text(printable(name)) if name else Text("(none)", style="dim"),
                    Text(f"{r['requests']:,}", justify="right"),
                    Text(f"{est}{r['total_tokens']:,}", justify="right"),
                    Text(_cost(r["cost"]), justify="right"),
                    bar(r[measure], top, BAR_WIDTH, style="cyan"),
                    Text(f"{est}{r['prompt_tokens']:,}", justify="right"),
                    Text(f"{est}{r['completion_tokens']:,}", justify="right"),
                    Text(f"{r['errors']:,}", justify="right", style="red" if r["errors"] else ""),
                )
            )
            keys.append(name or "(none)")
        if not self.rows:
            rows, keys = [(Text("no requests in this period", style="dim"), *(Text("") for _ in columns[1:]))], [None]
        fill_table(self.query_one("#usage-table", DataTable), columns, rows, keys)

    def _show_quotas(self) -> None:
        table = self.query_one("#usage-quotas", DataTable)
        title = self.query_one("#usage-quotas-title", Label)
        title.update("Quotas" if self.quotas else "Quotas — no consumer has one (set it on the consumer)")
        table.display = bool(self.quotas)
        rows: list[tuple[Text, ...]] = []
        for q in self.quotas:
            left = max(q.quota - q.used, 0.0)
            period = "in total" if q.period == "total" else f"per {q.period}"
            resets = datetime.fromtimestamp(q.resets).strftime("%Y-%m-%d %H:%M") if q.resets else "never"
            style = quota_style(q.fraction)
            use = bar(q.used, q.quota, 16, style=style)
            use.append(f" {100 * q.fraction:.1f}%", style=style)
            rows.append(
                (
                    Text(q.consumer),
                    Text(f"{_amount(q.quota, q.unit)} {period}"),
                    Text(_amount(q.used, q.unit), justify="right"),
                    Text(_amount(left, q.unit), justify="right"),
                    use,
                    Text(resets),
                )
            )
        fill_table(table, QUOTA_COLUMNS, rows, [q.consumer for q in self.quotas])
        # Its height now, from its rows (header + rows, at most 10 lines): an auto height is
        # only known after the table's next idle pass, so the layout would settle late.
        table.styles.height = min(10, len(rows) + 1)

    # ------------------------------------------------------------- actions

    def action_period(self, period: str) -> None:
        if period in PERIODS:
            self.period = period
            self._show_controls()
            self.load()

    def action_group(self) -> None:
        keys = list(GROUPS)
        self.by = keys[(keys.index(self.by) + 1) % len(keys)]
        self._show_controls()
        self.load()

    def action_refresh(self) -> None:
        self.load()
