"""The frame every sidebar section shares: header, sidebar, body, footer and section keys.

A section subclasses :class:`SectionScreen`, sets ``SECTION`` to its id in
:mod:`tui.sections` and yields its content from :meth:`compose_body`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Label, Static
from textual.worker import Worker

from ..sections import BY_ID, SECTIONS
from ..widgets.gateway_header import GatewayHeader
from ..widgets.sidebar import Sidebar

if TYPE_CHECKING:
    from store.db import Store

    from ..app import AigwApp
    from ..gateway_process import GatewayController


def _section_bindings() -> list[BindingType]:
    return [
        Binding(str(i), f"app.switch_section('{s.id}')", s.title, show=False, id=f"section-{s.id}")
        for i, s in enumerate(SECTIONS, start=1)
    ]


class SectionScreen(Screen[None]):
    """Base of a sidebar section. Reach the store as ``self.store``, the gateway as ``self.gateway``."""

    SECTION: ClassVar[str] = ""
    """The section id in :data:`tui.sections.SECTIONS`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *_section_bindings(),
        Binding(
            "escape",
            "focus_sidebar",
            "Sidebar",
            show=False,  # the sidebar says it (1–9); the footer keeps room for the section's keys
            id="focus-sidebar",
            tooltip="Move to the section list (then 1–9 or ↑↓ enter)",
        ),
        Binding(
            "ctrl+g",
            "app.gateway_toggle",
            "Gateway",
            id="gateway-toggle",
            tooltip="Start the gateway, or stop it when it runs",
        ),
        Binding("ctrl+r", "app.gateway_restart", "Restart gateway", show=False, id="gateway-restart"),
    ]

    @property
    def aigw(self) -> AigwApp:
        return self.app  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        return self.aigw.store

    @property
    def gateway(self) -> GatewayController:
        return self.aigw.gateway

    def compose(self) -> ComposeResult:
        section = BY_ID.get(self.SECTION)
        yield GatewayHeader(section.title if section else "")
        with Horizontal(id="shell"):
            yield Sidebar(self.SECTION)
            with Vertical(id="body"):
                yield from self.compose_body()
        # Compact: at 80 columns the section's own keys fit beside the shared ones.
        yield Footer(compact=True)

    def compose_body(self) -> Iterable[Widget]:
        """The section's content (override)."""
        section = BY_ID.get(self.SECTION)
        if section:
            yield Label(section.title, classes="section-title")
            yield Static(section.description, classes="section-description")

    def on_screen_resume(self) -> None:
        """Called each time the section is shown again; override to refresh data."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        self.aigw.worker_failed(event)

    def action_focus_sidebar(self) -> None:
        self.query_one(Sidebar).focus()

    def when_ready(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the screen's data is loaded (palette entries use this)."""
        self.call_later(callback)
