"""A ``SelectionList`` whose marked rows carry a ✓, so marked and unmarked differ by more than colour."""

from __future__ import annotations

from typing import Generic, TypeVar

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import SelectionList
from textual.widgets._toggle_button import ToggleButton
from textual.widgets.option_list import OptionDoesNotExist

V = TypeVar("V")


class MarkedSelectionList(SelectionList[V], Generic[V]):
    """Textual draws the same ``X`` in every row's box and tells marked rows by colour only
    (lost on a monochrome terminal, in a screen reader, or to a colour-blind operator)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        if len(segments) < 2 or segments[1].text != ToggleButton.BUTTON_INNER:
            return strip
        segments[1] = Segment("✓" if option.value in self._selected else " ", segments[1].style)
        return Strip(segments, strip.cell_length)
