"""Filling a ``DataTable`` with column widths fixed from its rows at the moment it is filled.

A ``DataTable`` left to size its own columns measures new rows later, on its next idle
pass; until then every column is as wide as its label (about eight cells). A table
refilled while its screen is covered (a form closing, a confirm over a live pane) can
miss that pass and stay squeezed until the section is shown again. Widths computed
here, from the cells themselves, do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

Cell = Text | str
#: A column: its label, or ``(key, label)`` when cells are updated by column key later.
ColumnSpec = str | tuple[str, str]


def cell_width(cell: Cell) -> int:
    text = cell if isinstance(cell, Text) else Text.from_markup(cell)
    return max((line.cell_len for line in text.split("\n")), default=0)


def fill_table(
    table: DataTable[Any],
    columns: Sequence[ColumnSpec],
    rows: Sequence[Sequence[Cell]],
    keys: Sequence[str | None] | None = None,
) -> None:
    """Replace ``table``'s columns and rows; each column as wide as its widest cell or label.

    The cursor stays on the same row number (clamped), so a live refresh does not move it.
    """
    cursor = table.cursor_row
    table.clear(columns=True)
    for i, col in enumerate(columns):
        key, label = (None, col) if isinstance(col, str) else col
        width = max([cell_width(label), *(cell_width(r[i]) for r in rows if i < len(r))])
        table.add_column(label, width=width, key=key)
    for n, cells in enumerate(rows):
        table.add_row(*cells, key=None if keys is None else keys[n])
    if rows and cursor > 0:
        table.move_cursor(row=min(cursor, len(rows) - 1))
