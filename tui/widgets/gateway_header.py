"""The one-line header: the gateway's state, address and live request rate."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..gateway_process import ATTACHED, CRASHED, RUNNING, STARTING, STOPPING, GatewayStatus
from ..rate import rate_text

_BADGE = {
    RUNNING: ("● running", "bold green"),
    ATTACHED: ("● attached", "bold cyan"),
    STARTING: ("◌ starting…", "bold yellow"),
    STOPPING: ("◌ stopping…", "bold yellow"),
    CRASHED: ("✖ crashed", "bold red"),
}


def describe_status(st: GatewayStatus, *, nodes: bool = True) -> Text:
    """The header text; also used by Instance Info so both say the same thing. ``nodes``:
    say how many gateways the rate covers, when it is more than this one."""
    label, style = _BADGE.get(st.state, ("○ stopped", "bold"))
    text = Text.assemble((label, style))
    others = (st.nodes or 0) - (1 if st.is_up else 0) if nodes else 0
    if st.is_up:
        text.append(f"  {st.public_url or st.listen}")
        text.append(f"  {rate_text(st.rate)}", "dim" if st.rate in (None, 0) else "bold")
        if others > 0:
            text.append(f" · {st.nodes} nodes", "dim")
        return text
    if st.state == CRASHED and st.exit_code is not None:
        text.append(f"  exit {st.exit_code} — see Instance Info", "red")
    else:
        text.append(f"  {st.listen}", "dim")
    if others > 0:  # the rate covers the store's other gateways, which do run
        text.append(f"  {others} other node{'s' if others > 1 else ''}  ", "dim")
        text.append(rate_text(st.rate), "dim" if st.rate in (None, 0) else "bold")
    return text


class GatewayHeader(Static):
    """Follows ``app.gateway_status`` (set by the app's poller) — attributes down."""

    DEFAULT_CSS = """
    GatewayHeader {
        dock: top;
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    GatewayHeader.-crashed { background: $error 30%; }
    """

    def __init__(self, title: str = "") -> None:
        super().__init__(id="gateway-header")
        self.title = title

    def on_mount(self) -> None:
        self.watch(self.app, "gateway_status", self._show)

    def on_resize(self) -> None:
        st = getattr(self.app, "gateway_status", None)
        if st is not None:
            self._show(st)

    def _show(self, st: GatewayStatus) -> None:
        text = self._text(st, nodes=True)
        if self.content_size.width and text.cell_len > self.content_size.width:
            text = self._text(st, nodes=False)  # the rate matters more than how many nodes it covers
        self.set_class(st.state == CRASHED, "-crashed")
        self.update(text)

    def _text(self, st: GatewayStatus, *, nodes: bool) -> Text:
        text = Text.assemble(("aigw", "bold"), ("  │  ", "dim"))
        if self.title:
            text.append(self.title, "bold")
            text.append("  │  ", "dim")
        text.append_text(describe_status(st, nodes=nodes))
        return text
