"""The base of every console dialog: a modal that gets the app's breakpoint classes at once."""

from __future__ import annotations

from typing import TypeVar

from textual import events
from textual.screen import ModalScreen
from textual.widgets import Footer
from textual.worker import Worker

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """Textual sets ``-narrow``/``-short`` on a screen only when it receives a resize; a
    dialog pushed later would miss them in a real terminal, so it asks for one when mounted.

    Each dialog has a footer of its own: the section's footer underneath would list the
    section's keys, which do nothing while the dialog is open.
    """

    def on_mount(self) -> None:
        size = self.app.size
        self.post_message(events.Resize(size, size))
        self.mount(Footer())

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Failures go to the app's one handler (``StateChanged`` does not bubble)."""
        report = getattr(self.app, "worker_failed", None)
        if report is not None:
            report(event)
