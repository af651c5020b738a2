"""Consumers' limits and current use, as the Consumers and Consumer Groups screens show them.

Current use lives in the running gateway (per-minute windows are in its memory only), so
it comes from ``GET /limits``; without a gateway the quota use is counted from the request
records and the per-minute windows say "gateway not running". :func:`read_limits`
blocks: call it from a thread worker (:class:`LimitsPoller` does, for a shown screen).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.message import Message

from store import repo, usage
from store.limits_rule import most_generous as _generous

if TYPE_CHECKING:
    from textual.timer import Timer

    from store.db import Store

    from ..gateway_process import GatewayController
    from ..screens.base import SectionScreen

#: How often a shown screen asks again (the gateway's windows move every second).
REFRESH_S = 3.0
NOT_RUNNING = "gateway not running"
LIMIT_COLUMNS = ("Limit", "Allowed", "Used", "Left", "Resets")


@dataclass(frozen=True)
class LimitsView:
    """One observation of every consumer's limits and use."""

    #: True when the numbers come from a running gateway (per-minute use is known).
    live: bool
    #: ``GET /limits``'s ``consumers`` shape (``used`` of per-minute windows is None offline).
    consumers: dict[str, Any] = field(default_factory=dict)
    observed_at: float = field(default_factory=time.time)


def read_limits(store: Store, gateway: GatewayController | None) -> LimitsView:
    """From the running gateway if one answers for this store, else from the store."""
    if gateway is not None:
        live = gateway.admin().limits()
        if live is not None:
            return LimitsView(True, live["consumers"])
    return LimitsView(False, from_store(store))


class LimitsLoaded(Message):
    """A fresh :class:`LimitsView`, posted to the screen whose :class:`LimitsPoller` read it."""

    def __init__(self, view: LimitsView) -> None:
        super().__init__()
        self.view = view


class LimitsPoller:
    """Reads the limits every :data:`REFRESH_S` while its screen is shown, in a thread worker,
    and posts each view to the screen as :class:`LimitsLoaded` (handle ``on_limits_loaded``).

    An object the screen owns, not a mixin: Textual runs ``on_mount`` and the screen events
    of every class in the MRO, so a mixin's handlers would run beside the screen's own. The
    screen calls :meth:`start`, :meth:`resume` and :meth:`pause` from its handlers instead.
    """

    def __init__(self, screen: SectionScreen, group: str) -> None:
        self.screen = screen
        #: The worker group: a new read replaces one still running for this screen.
        self.group = group
        self._timer: Timer | None = None

    def start(self) -> None:
        """From ``on_mount``: read now, then every :data:`REFRESH_S`."""
        self._timer = self.screen.set_interval(REFRESH_S, self.refresh)
        self.refresh()

    def resume(self) -> None:
        """From ``on_screen_resume``: read at once and keep reading."""
        if self._timer is not None:  # else start() starts it
            self._timer.resume()
            self.refresh()

    def pause(self) -> None:
        """From ``on_screen_suspend``: a hidden screen does not ask the gateway."""
        if self._timer is not None:
            self._timer.pause()

    def refresh(self) -> None:
        self.screen.run_worker(
            self._load,
            name="_load_limits",
            group=self.group,
            description="_load_limits()",
            exclusive=True,
            exit_on_error=False,
            thread=True,
        )

    def _load(self) -> None:
        self.screen.post_message(LimitsLoaded(read_limits(self.screen.store, self.screen.gateway)))


def from_store(store: Store, now: float | None = None) -> dict[str, Any]:
    """What the records say: quota use this period; per-minute limits without use."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {}
    with store.session() as s:
        cfg = repo.load_config(s)
        for c in cfg.consumers:
            apis: dict[str, Any] = {}
            for g in cfg.consumer_groups:
                if c.name not in g.consumers:
                    continue
                for api in g.model_apis:
                    old = apis.get(api)
                    rpm, tpm = g.requests_per_minute, g.tokens_per_minute
                    if old is not None:
                        rpm = _generous(old["requests_per_minute"]["limit"], rpm)
                        tpm = _generous(old["tokens_per_minute"]["limit"], tpm)
                    apis[api] = {
                        "requests_per_minute": {"limit": rpm, "used": None},
                        "tokens_per_minute": {"limit": tpm, "used": None},
                    }
            quota = None
            if c.quota:
                since = usage.period_start(c.quota_period, now)
                quota = {
                    "limit": c.quota,
                    "unit": c.quota_unit,
                    "period": c.quota_period,
                    "used": usage.quota_used(s, c.name, c.quota_unit, since),
                    "resets_at": usage.period_end(c.quota_period, now),
                }
            out[c.name] = {"apis": dict(sorted(apis.items())), "quota": quota}
    return out


# ------------------------------------------------------------------ formatting


def amount(x: float, unit: str) -> str:
    return f"{x:,.4f}" if unit == "cost" else f"{round(x):,}"


def reset_text(at: float | None) -> str:
    if at is None:
        return "never (total)"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def quota_summary(quota: dict[str, Any] | None) -> Text:
    """``54 / 1,000 tokens per day`` (or ``—`` without a quota)."""
    if not quota:
        return Text("—", style="dim")
    unit = quota["unit"]
    used = quota.get("used")
    per = "in total" if quota["period"] == "total" else f"per {quota['period']}"
    shown = "?" if used is None else amount(used, unit)
    style = "bold red" if used is not None and used >= quota["limit"] else ""
    return Text(f"{shown} / {amount(quota['limit'], unit)} {unit} {per}", style=style)


def window_summary(window: dict[str, Any] | None, live: bool) -> Text:
    """``3 / 600`` for one per-minute window (``∞`` = unlimited)."""
    if window is None:
        return Text("—", style="dim")
    if not live or window.get("used") is None:
        return Text(NOT_RUNNING, style="dim")
    limit = int(window["limit"])
    used = int(window["used"])
    text = f"{used:,} / {limit:,}" if limit else f"{used:,} / ∞"
    return Text(text, style="bold red" if limit and used >= limit else "")


def consumer_rows(view: LimitsView, consumer: str) -> list[tuple[Text, ...]]:
    """The detail rows of one consumer: its quota, then each granted API's windows."""
    entry = view.consumers.get(consumer)
    if entry is None:
        return []
    rows: list[tuple[Text, ...]] = []
    quota = entry.get("quota")
    if quota:
        unit = quota["unit"]
        per = "total" if quota["period"] == "total" else f"per {quota['period']}"
        used = quota.get("used")
        held = float(quota.get("reserved") or 0)
        used_text = "?" if used is None else amount(used, unit)
        if held:
            used_text += f" (+{amount(held, unit)} held)"
        quota_left = "?" if used is None else amount(max(0.0, quota["limit"] - used), unit)
        rows.append(
            (
                Text(f"Quota ({unit} {per})"),
                Text(amount(quota["limit"], unit)),
                Text(used_text, style="bold red" if used is not None and used >= quota["limit"] else ""),
                Text(quota_left),
                Text(reset_text(quota.get("resets_at"))),
            )
        )
    for api, windows in entry.get("apis", {}).items():
        for key, label in (("requests_per_minute", "requests/min"), ("tokens_per_minute", "tokens/min")):
            w = windows.get(key) or {}
            limit = int(w.get("limit") or 0)
            used = w.get("used")
            if not view.live or used is None:
                used_cell, left = Text(NOT_RUNNING, style="dim"), Text("")
            else:
                held = int(w.get("reserved") or 0)
                used_cell = Text(
                    f"{int(used):,}" + (f" (+{held:,} held)" if held else ""),
                    style="bold red" if limit and used >= limit else "",
                )
                left = Text(f"{max(0, limit - int(used)):,}" if limit else "∞")
            rows.append(
                (
                    Text(f"{api} · {label}"),
                    Text(f"{limit:,}" if limit else "∞"),
                    used_cell,
                    left,
                    Text("sliding 60 s" if limit else ""),
                )
            )
    return rows


def source_text(view: LimitsView | None) -> str:
    if view is None:
        return "loading…"
    if view.live:
        return "live from the running gateway"
    return "quota use from the request records; " + NOT_RUNNING
