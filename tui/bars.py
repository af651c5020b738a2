"""Horizontal bars drawn with block characters (eighths), for tables that compare amounts."""

from __future__ import annotations

from rich.text import Text

EIGHTHS = " ▏▎▍▌▋▊▉"
FULL = "█"


def bar(value: float, maximum: float, width: int = 20, *, style: str = "") -> Text:
    """``value`` as a bar ``width`` cells long at ``maximum`` (never empty for a non-zero value)."""
    if maximum <= 0 or value <= 0 or width <= 0:
        return Text(" " * max(width, 0))
    eighths = round(min(value / maximum, 1.0) * width * 8)
    eighths = max(eighths, 1)
    full, part = divmod(eighths, 8)
    body = FULL * full + (EIGHTHS[part] if part else "")
    return Text(body.ljust(width), style=style)


def quota_style(fraction: float) -> str:
    """Green while there is room, yellow from 80 %, red when used up."""
    if fraction >= 1.0:
        return "bold red"
    if fraction >= 0.8:
        return "yellow"
    return "green"
