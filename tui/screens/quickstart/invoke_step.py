"""Step 6 — Obtain the access address and invoke: the URL, a curl, and a real test request."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Static

from store.keys import display_prefix

from ...gateway_process import CRASHED, GatewayStatus
from ...invoke import InvokeResult, curl_command
from ...modals.route_management import describe_result
from ...widgets.copied_text import CopiedText
from ...widgets.form_field import FormField
from ...widgets.gateway_header import describe_status
from .progress import STEPS

INTRO = (
    "Clients call the access address with the consumer's key (the curl below). Send a test "
    "request: the gateway is started if needed and the vendor's answer is shown here."
)


class InvokeStep(VerticalScroll):
    """Shows what the screen tells it (attributes down); its buttons are the wizard's actions."""

    def __init__(self, step_id: str) -> None:
        super().__init__(id=step_id, classes="wizard-step", can_focus=False)
        self.url = ""
        self.model = ""
        #: Where the last diagnosis says to go back to (wizard step index), if anywhere.
        self.fix_step: int | None = None
        self._applied_key = ""

    def compose(self) -> Iterable[Widget]:
        yield Static(INTRO, classes="step-intro")
        yield Label("Access address", classes="detail-title")
        yield Static("", id="access-url")
        yield Static("", id="gateway-state")
        yield FormField(
            "Consumer API key",
            Input("", password=True, id="api-key", placeholder="paste the key created for the consumer (sk-aigw-…)"),
            field="api_key",
            hint="Paste the consumer's key, or press ctrl+k to create one.",
        )
        with Horizontal(classes="invoke-buttons"):
            yield Button("Send test request (ctrl+t)", variant="primary", id="send", compact=True)
            yield Button("Create Key (ctrl+k)", id="new-key", compact=True)
        yield Static("", id="result")
        yield Button("", id="fix", variant="warning", compact=True)
        with Horizontal(classes="invoke-buttons"):
            yield Label("curl of the test request (with real values)", classes="detail-title")
            yield Button("Copy curl (ctrl+y)", id="copy-curl", compact=True)
        yield Static("", id="curl")
        yield CopiedText(id="curl-copied")

    def on_mount(self) -> None:
        self.query_one("#fix", Button).display = False

    # ------------------------------------------------------------- attributes down

    def show_target(self, url: str, model: str, consumer: str, key: str | None) -> None:
        """``key`` is the plain key this session created (kept in memory only), if any."""
        self.url, self.model = url, model
        self.query_one("#access-url", Static).update(Text(url or "(no model API chosen)", style="bold"))
        shown = display_prefix(key) if key else "<API_KEY>"
        self.query_one("#curl", Static).update(Text(curl_command(url or "<access address>", model, shown)))
        box = self.query_one("#api-key", Input)
        if key and key != self._applied_key:  # a key pasted by hand stays until a new one is made
            box.value = self._applied_key = key
        hint = (
            f"The key created for {consumer!r} in this session (kept in memory only, never stored)."
            if key and box.value == key
            else f"Paste the key created for {consumer!r}, or press ctrl+k to create a new one (shown once)."
        )
        self.query_one("#field-api-key .field-hint", Static).update(Text(hint))

    def curl_with(self, key: str) -> str:
        return curl_command(self.url or "<access address>", self.model, key or "<API_KEY>")

    def show_gateway(self, st: GatewayStatus) -> None:
        text = Text("Gateway: ", style="bold")
        text.append_text(describe_status(st))
        if not st.is_up and st.state != CRASHED:
            text.append("  — started when you send the test request (or ctrl+g)", "dim")
        if st.state == CRASHED and st.log_tail:
            text.append("\n" + st.log_tail.splitlines()[-1], "red")
        self.query_one("#gateway-state", Static).update(text)

    def show_sending(self, what: str) -> None:
        self.fix_step = None
        self.query_one("#fix", Button).display = False
        result = self.query_one("#result", Static)
        result.remove_class("-ok", "-failed")
        result.update(Text(what, style="dim"))

    def show_result(self, r: InvokeResult, fix_step: int | None) -> None:
        result = self.query_one("#result", Static)
        result.set_class(r.ok, "-ok")
        result.set_class(not r.ok, "-failed")
        text = describe_result(r)
        if r.ok:
            text.append(
                "\n\n✔ Done: your application can call this address with its key. "
                "Watch requests in Traffic (8), tokens and cost in Usage (9).",
                "green",
            )
        result.update(text)
        self.call_after_refresh(result.scroll_visible)
        self.fix_step = fix_step
        fix = self.query_one("#fix", Button)
        fix.display = fix_step is not None
        if fix_step is not None:
            label = (
                "Start the gateway"
                if fix_step == len(STEPS) - 1
                else f"Go back to step {fix_step + 1}: {STEPS[fix_step][1]}"
            )
            fix.label = f"{label} (ctrl+f)"
