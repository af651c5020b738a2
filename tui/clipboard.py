"""Copying to the clipboard, said honestly.

Textual copies by sending an OSC 52 sequence to the terminal; it cannot learn whether
the terminal (or tmux between) honoured it. So a copy never claims success: it says
what was sent, and the full text is shown where the user can select it by hand, so a
key shown once is never lost to a copy that silently did nothing.
"""

from __future__ import annotations

from textual.app import App

COPY_NOTE = "Sent to the terminal's clipboard (OSC 52); if your terminal does not support it, select the text below."


def copy_text(app: App[object], text: str, what: str) -> str:
    """Send ``text`` to the terminal's clipboard and tell the user; returns the note shown."""
    app.copy_to_clipboard(text)
    app.notify(COPY_NOTE, title=f"{what} sent to the clipboard")
    return COPY_NOTE
