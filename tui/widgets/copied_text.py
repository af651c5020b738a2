"""The full text of the last copy, shown selectable under the note that it was sent."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..clipboard import COPY_NOTE


class CopiedText(Static):
    """Hidden until something is copied; then the note and the whole copied text (never shortened)."""

    DEFAULT_CSS = """
    CopiedText { display: none; height: auto; background: $boost; padding: 0 1; margin: 0 0 1 0; }
    CopiedText.-shown { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.copied = ""

    def show_copied(self, text: str) -> None:
        self.copied = text
        self.update(Text.assemble((COPY_NOTE, "dim"), "\n", text))
        self.add_class("-shown")
        self.call_after_refresh(self.scroll_visible)

    def forget(self) -> None:
        self.copied = ""
        self.update("")
        self.remove_class("-shown")
