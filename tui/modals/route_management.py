"""A model API's Route Management: request paths, access URLs, a ready curl, and "Try it"."""

from __future__ import annotations

from typing import ClassVar

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, DataTable, Input, Label, Static

from store.db import Store
from store.presets import PRESETS
from store.spec import Config, ModelApiSpec

from ..clipboard import copy_text
from ..invoke import DEFAULT_MESSAGE, InvokeResult, access_urls, curl_command, send_chat
from ..widgets.copied_text import CopiedText
from .base import Dialog

STEP_LABELS = {
    "gateway": "Instance Info (start the gateway)",
    "model_keys": "Key Management",
    "model_services": "Model Services",
    "model_apis": "Model APIs",
    "consumers": "Consumers",
    "consumer_groups": "Consumer Groups",
}


def api_model(config: Config, api: ModelApiSpec) -> str:
    """The model a test request names: the first service's default model (or its vendor's first)."""
    for name in api.services:
        svc = next((s for s in config.model_services if s.name == name), None)
        if svc is None:
            continue
        if svc.default_model:
            return svc.default_model
        preset = PRESETS.get(svc.vendor)
        if svc.models and "*" not in svc.models[0]:
            return svc.models[0]
        if preset and preset.models:
            return preset.models[0]
    return "<MODEL_NAME>"


def describe_result(r: InvokeResult) -> Text:
    head = f"HTTP {r.status}" if r.status is not None else "no answer"
    text = Text.assemble(
        (f"{'✔' if r.ok else '✖'} {head}", "bold green" if r.ok else "bold red"), f"  ·  {r.latency_ms:.0f} ms"
    )
    if r.request_id:
        text.append(f"  ·  request {r.request_id}", "dim")
    text.append("\n")
    if r.ok:
        text.append(r.answer.strip() or "(empty answer)")
    else:
        text.append(r.diagnosis)
        if r.step in STEP_LABELS:
            text.append(f"\n→ Fix it in: {STEP_LABELS[r.step]}", "bold")
    return text


class RouteManagementScreen(Dialog[None]):
    """Opened from Model APIs with ``t``; ``escape`` goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_screen", "Back", id="routes-back"),
        Binding(
            "ctrl+t", "try_it", "Send test request", id="routes-try", tooltip="Send a real request through the gateway"
        ),
        Binding("ctrl+y", "copy_curl", "Copy curl", id="routes-copy-curl"),
        Binding("ctrl+o", "copy_url", "Copy URL", id="routes-copy-url"),
    ]

    class Answered(Message):
        def __init__(self, result: InvokeResult) -> None:
            super().__init__()
            self.result = result

    def __init__(
        self, store: Store, config: Config, api: ModelApiSpec, session_keys: dict[str, str] | None = None
    ) -> None:
        super().__init__(classes="dialog-screen")
        self.store = store
        self.config = config
        self.api = api
        self.urls = access_urls(config.gateway, api)
        self.model = api_model(config, api)
        self.sending = False
        self.key_owner, self.session_key = self._granted_session_key(session_keys or {})

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="routes-dialog"):
            yield Label(escape(f"Model API {self.api.name!r} — Route Management"), classes="dialog-title")
            with VerticalScroll(id="routes-scroll", can_focus=False):
                table: DataTable[Text] = DataTable(id="routes-table", cursor_type="row")
                yield table
                yield Label("curl", classes="detail-title")
                yield Static(Text(self._curl()), id="routes-curl")
                yield CopiedText(id="routes-copied")
                yield Label("Try it", classes="detail-title")
                yield Input(
                    self.session_key,
                    placeholder="Consumer API key (sk-aigw-…): paste the key shown when it was created",
                    password=True,
                    id="tryit-key",
                )
                if self.key_owner:
                    yield Static(
                        Text(
                            f"Using the key created for {self.key_owner!r} in this session "
                            "(replace it to try another).",
                            style="dim",
                        ),
                        id="tryit-key-note",
                    )
                with Horizontal(id="tryit-row"):
                    yield Input(self.model, placeholder="model", id="tryit-model")
                    yield Input(DEFAULT_MESSAGE, id="tryit-message")
                    yield Button("Send ^t", variant="primary", id="tryit-send")
                yield Static("", id="tryit-result")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Copy curl (ctrl+y)", id="copy-curl")
                yield Button("Copy URL (ctrl+o)", id="copy-url")
                yield Button("Back (esc)", id="back")

    def on_mount(self) -> None:
        table = self.query_one("#routes-table", DataTable)
        table.add_columns("Request Path", "Access URL")
        for route, url in zip(self.api.routes, self.urls, strict=True):
            table.add_row(Text(self.api.base_path + route), Text(url, style="bold"))
        self.query_one("#tryit-send" if self.session_key else "#tryit-key").focus()

    def _granted_session_key(self, keys: dict[str, str]) -> tuple[str, str]:
        """A key created in this console run for a consumer granted this API, if any."""
        granted = {c for g in self.config.consumer_groups if self.api.name in g.model_apis for c in g.consumers}
        for consumer, key in keys.items():
            if consumer in granted:
                return consumer, key
        return "", ""

    def _curl(self, key: str = "") -> str:
        url = self.urls[0] if self.urls else "<access address>"
        return curl_command(url, self.model, key or "<API_KEY>", protocol=self.api.protocol)

    def action_dismiss_screen(self) -> None:
        self.dismiss(None)

    def action_copy_curl(self) -> None:
        """The curl with the key typed under "Try it" (if any): ready to run as copied."""
        curl = self._curl(self.query_one("#tryit-key", Input).value.strip())
        copy_text(self.app, curl, "curl command")
        self.query_one("#routes-copied", CopiedText).show_copied(curl)

    def action_copy_url(self) -> None:
        if self.urls:
            copy_text(self.app, self.urls[0], "Access URL")
            self.query_one("#routes-copied", CopiedText).show_copied(self.urls[0])

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        actions = {
            "tryit-send": self.action_try_it,
            "copy-curl": self.action_copy_curl,
            "copy-url": self.action_copy_url,
            "back": self.action_dismiss_screen,
        }
        if event.button.id in actions:
            actions[event.button.id]()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_try_it()

    def action_try_it(self) -> None:
        if self.sending or not self.urls:
            return
        self.sending = True
        self.query_one("#tryit-result", Static).update(Text("Sending…", style="dim"))
        self._send(
            self.urls[0],
            self.query_one("#tryit-key", Input).value.strip(),
            self.query_one("#tryit-model", Input).value.strip() or self.model,
            self.query_one("#tryit-message", Input).value or DEFAULT_MESSAGE,
        )

    @work(thread=True, exclusive=True, group="try-it", exit_on_error=False)
    def _send(self, url: str, key: str, model: str, message: str) -> None:
        try:
            result = send_chat(url, key, model, message=message, store=self.store)
        finally:
            self.sending = False
        self.post_message(self.Answered(result))

    def on_route_management_screen_answered(self, message: Answered) -> None:
        result = self.query_one("#tryit-result", Static)
        result.set_class(message.result.ok, "-ok")
        result.set_class(not message.result.ok, "-failed")
        result.update(describe_result(message.result))
