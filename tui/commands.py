"""The command palette provider: every console action, searchable from anywhere (``ctrl+p``)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from .sections import SECTIONS, load_screen_class

#: App-wide entries: (title, help, app action).
APP_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("Gateway: start", "Start aigw serve (or attach to one already running)", "gateway_start"),
    ("Gateway: stop", "Stop the gateway process (it drains in-flight requests)", "gateway_stop"),
    ("Gateway: restart", "Stop and start the gateway process", "gateway_restart"),
    ("Quit", "Leave the console (asks about a running gateway)", "quit"),
)


def console_commands() -> list[tuple[str, str, str]]:
    """(title, help, app action) for every section and every section action."""
    out = [(f"Go to {s.title}", s.description, f"switch_section('{s.id}')") for s in SECTIONS]
    out.extend(APP_COMMANDS)
    for s in SECTIONS:
        try:
            cls = load_screen_class(s)
        except Exception:
            continue
        for title, help_text, action in getattr(cls, "PALETTE", ()):
            out.append((title, help_text, f"run_in_section('{s.id}', '{action}')"))
    return out


class ConsoleCommands(Provider):
    """Sections, gateway control and each section's actions (its ``PALETTE``)."""

    async def discover(self) -> Hits:
        for title, help_text, action in console_commands():
            yield DiscoveryHit(title, partial(self.app.run_action, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in console_commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), partial(self.app.run_action, action), help=help_text)
