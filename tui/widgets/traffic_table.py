"""The live request table: a Line-API widget that renders only the rows on screen.

Textual's DataTable measures every cell of every added row (≈1 s for 2,000 rows), far
too slow to rebuild several times a second under load. Here a batch of records costs
one list swap; each visible line is drawn on demand from its record and cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..data.traffic_feed import Record, fmt_cost, fmt_ms, fmt_time, fmt_tokens, status_kind
from ..printable import printable


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False
    #: Text columns share the spare width up to ``max_width``.
    max_width: int = 0


#: What a narrow terminal shows first: when it happened, how it went, what it cost; then
#: who and what (those columns shrink and scroll off to the right first).
COLUMNS: tuple[Column, ...] = (
    Column("time", "Time", 12),
    Column("status", "Status", 6, right=True),
    Column("latency", "Latency", 8, right=True),
    Column("in", "Tok in", 7, right=True),
    Column("out", "Tok out", 7, right=True),
    Column("cost", "Cost", 10, right=True),
    Column("model", "Model", 18, max_width=40),
    Column("consumer", "Consumer", 12, max_width=28),
    Column("api", "API", 12, max_width=28),
    Column("ttfb", "TTFB", 8, right=True),
)
GAP = 1
STATUS_COLUMN = [c.key for c in COLUMNS].index("status")


def cells(rec: Record) -> list[str]:
    """The text of each column for one record, in :data:`COLUMNS` order (``~``: estimated tokens, ``↻``: fallbacks)."""
    est = bool(rec.get("estimated"))
    by_key = {
        "time": fmt_time(float(rec.get("ts") or 0.0)),
        "consumer": printable(rec.get("consumer") or "–"),
        "api": printable(rec.get("api") or "–"),
        "model": printable(rec.get("model") or "–"),
        "status": str(rec.get("status") or "–") + attempts_mark(rec),
        "latency": fmt_ms(rec.get("latency_ms")),
        "ttfb": fmt_ms(rec.get("ttfb_ms")),
        "in": fmt_tokens(int(rec.get("prompt_tokens") or 0), est),
        "out": fmt_tokens(int(rec.get("completion_tokens") or 0), est),
        "cost": fmt_cost(float(rec.get("cost") or 0.0)),
    }
    return [by_key[c.key] for c in COLUMNS]


def attempts_mark(rec: Record) -> str:
    """``↻`` when the request took more than one vendor attempt (a fallback, a second key, an open circuit)."""
    attempts = rec.get("attempts")
    return "↻" if isinstance(attempts, list) and len(attempts) > 1 else ""


def _fit(text: str, width: int, right: bool) -> str:
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
    pad = " " * (width - cell_len(text))
    return pad + text if right else text + pad


class TrafficTable(ScrollView, can_focus=True):
    """Records newest first; the cursor stays on its request while newer ones arrive above."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Detail", id="traffic-detail", tooltip="Show every field of the request"),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "jump('top')", "Newest", show=False),
        Binding("end", "jump('bottom')", "Oldest", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "traffic-table--header",
        "traffic-table--cursor",
        "traffic-table--ok",
        "traffic-table--warn",
        "traffic-table--bad",
    }
    DEFAULT_CSS = """
    TrafficTable {
        background: $surface;
        height: 1fr;
        & > .traffic-table--header { text-style: bold; background: $panel; color: $foreground; }
        & > .traffic-table--cursor { background: $block-cursor-blurred-background; }
        &:focus > .traffic-table--cursor {
            background: $block-cursor-background; color: $block-cursor-foreground;
        }
        & > .traffic-table--ok { color: $success; }
        & > .traffic-table--warn { color: $warning; }
        & > .traffic-table--bad { color: $error; text-style: bold; }
    }
    """

    class Selected(Message):
        """``enter`` (or a click on the highlighted row) on a record."""

        def __init__(self, record: Record) -> None:
            super().__init__()
            self.record = record

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.rows: list[Record] = []
        self.cursor = 0
        self._widths = [c.width for c in COLUMNS]
        self._lines: dict[int, list[Segment]] = {}  # record _seq → row segments (no cursor style)
        self._header: list[Segment] | None = None
        self._base: Style | None = None

    @property
    def base_style(self) -> Style:
        """``rich_style`` walks the DOM each time; a full repaint would ask for it once per line."""
        if self._base is None:
            self._base = self.rich_style
        return self._base

    # ------------------------------------------------------------- data

    @property
    def current(self) -> Record | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def set_rows(self, rows: list[Record]) -> None:
        """Show ``rows`` (newest first) in one go. The highlighted request and the first
        visible one keep their place on screen unless the view is at the very top."""
        scroll_y = int(self.scroll_y)
        anchor = self.current if self.cursor > 0 else None
        top = self.rows[scroll_y] if 0 < scroll_y < len(self.rows) else None
        self.rows = rows
        index: dict[int, int] = {}
        if anchor is not None or top is not None:
            index = {r.get("_seq", 0): i for i, r in enumerate(rows)}
        if anchor is not None:
            self.cursor = index.get(anchor.get("_seq", 0), min(self.cursor, len(rows) - 1))
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        if len(self._lines) > 4 * len(rows) + 200:
            keep = {r.get("_seq", 0) for r in rows}
            self._lines = {k: v for k, v in self._lines.items() if k in keep}
        self.virtual_size = Size(self._total_width(), len(rows) + 1)
        if top is not None and (new_top := index.get(top.get("_seq", 0))) is not None:
            self.scroll_to(y=new_top, animate=False)
        self.refresh()

    # ------------------------------------------------------------- layout

    def _total_width(self) -> int:
        return sum(self._widths) + GAP * (len(self._widths) - 1)

    def on_resize(self, event: events.Resize) -> None:
        base = [c.width for c in COLUMNS]
        room = self.size.width - self.styles.scrollbar_size_vertical - 1
        spare = room - (sum(base) + GAP * (len(base) - 1))
        flex = [i for i, c in enumerate(COLUMNS) if c.max_width]
        while spare > 0 and flex:
            grew = False
            for i in flex:
                if spare > 0 and base[i] < COLUMNS[i].max_width:
                    base[i] += 1
                    spare -= 1
                    grew = True
            if not grew:
                break
        if base != self._widths:
            self._widths = base
            self._lines.clear()
            self._header = None
            self.virtual_size = Size(self._total_width(), len(self.rows) + 1)
            self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._lines.clear()
        self._header = None
        self._base = None

    # ------------------------------------------------------------- drawing

    def _row_segments(self, rec: Record) -> list[Segment]:
        seq = rec.get("_seq", 0)
        segs = self._lines.get(seq)
        if segs is not None:
            return segs
        base = self.base_style
        status_style = self.get_component_rich_style(
            f"traffic-table--{status_kind(int(rec.get('status') or 0))}", partial=True
        )
        segs = []
        for i, (col, text) in enumerate(zip(COLUMNS, cells(rec), strict=True)):
            if i:
                segs.append(Segment(" " * GAP, base))
            style = base + status_style if col.key == "status" else base
            segs.append(Segment(_fit(text, self._widths[i], col.right), style))
        self._lines[seq] = segs
        return segs

    def _header_segments(self) -> list[Segment]:
        if self._header is None:
            style = self.base_style + self.get_component_rich_style("traffic-table--header", partial=True)
            parts = [_fit(c.title, self._widths[i], c.right) for i, c in enumerate(COLUMNS)]
            self._header = [Segment((" " * GAP).join(parts), style)]
        return self._header

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.base_style
        if y == 0:
            segs = self._header_segments()
            header_style = base + self.get_component_rich_style("traffic-table--header", partial=True)
            return Strip(segs, self._total_width()).crop_extend(scroll_x, scroll_x + width, header_style)
        index = scroll_y + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, base)
        segs = self._row_segments(self.rows[index])
        strip = Strip(segs, self._total_width())
        if index == self.cursor:
            cursor: Style = self.get_component_rich_style("traffic-table--cursor", partial=True)
            status_at = 2 * STATUS_COLUMN  # segments alternate cell, gap
            lit = [
                Segment(t, (st or base) + cursor + (Style(color=st.color) if i == status_at and st else Style()))
                for i, (t, st, _) in enumerate(segs)
            ]
            strip = Strip(lit, self._total_width())
            return strip.crop_extend(scroll_x, scroll_x + width, base + cursor)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    # ------------------------------------------------------------- moving

    def _visible_rows(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_to(self, index: int) -> None:
        if not self.rows:
            self.cursor = 0
            return
        self.cursor = max(0, min(index, len(self.rows) - 1))
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + self._visible_rows():
            self.scroll_to(y=self.cursor - self._visible_rows() + 1, animate=False)
        self.refresh()

    def action_cursor(self, delta: int) -> None:
        self.move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self.cursor + direction * self._visible_rows())

    def action_jump(self, where: str) -> None:
        self.move_to(0 if where == "top" else len(self.rows) - 1)

    def action_select(self) -> None:
        if (rec := self.current) is not None:
            self.post_message(self.Selected(rec))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        index = int(self.scroll_y) + offset.y - 1
        if 0 <= index < len(self.rows):
            again = index == self.cursor
            self.move_to(index)
            if again or event.chain > 1:
                self.action_select()

    def row_text(self, index: int) -> Any:
        """The plain text of one shown row (tests and copy/paste)."""
        return " ".join(cells(self.rows[index]))
