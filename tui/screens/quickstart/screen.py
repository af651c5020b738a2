"""Quick Start: six steps as one guided wizard that ends in a real answer.

Each Next saves that step's entity through ``repo.save`` in a thread worker (create, or
update the one this run created or picked), records the progress (step index and names,
never a secret) in the store, and tells a running gateway to reload. The consumer key
made in step 4 lives only in this screen's memory, for step 6's test request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, ContentSwitcher, Input, Static

from store import repo
from store.errors import StoreError
from store.spec import Config

from ...clipboard import copy_text
from ...fields import REVEAL_KEY
from ...gateway_process import START_TIMEOUT_S, STARTING, STOPPING, GatewayStatus
from ...invoke import InvokeResult, send_chat
from ...modals.form import FormProblem
from ...modals.route_management import api_model
from ...modals.secret import ShowSecretModal
from ...widgets.copied_text import CopiedText
from ..base import SectionScreen
from .api_step import ApiStep
from .consumer_step import ConsumerStep
from .group_step import GroupStep
from .invoke_step import InvokeStep
from .key_step import KeyStep
from .progress import FIX_STEP, LAST, META_KEY, STEPS, Progress, load_progress, save_progress
from .service_step import ServiceStep
from .step import WizardContext, WizardStep

#: The step headings.
STEP_TITLES = (
    "Create Model Key",
    "Create Model Service",
    "Create Model API",
    "Create Consumer",
    "Create Consumer Group and Grant Permissions",
    "Obtain the Access Address and Invoke",
)
STEP_IDS = ("step-key", "step-service", "step-api", "step-consumer", "step-group", "step-invoke")


def step_indicator(current: int, names: dict[str, str]) -> Text:
    """``1 Model Key · 2 Model Service · …``: the current step highlighted, saved ones green."""
    text = Text()
    for i, (table, label) in enumerate(STEPS):
        if i:
            text.append(" · ", "dim")
        done = bool(table and table in names)
        style = "bold reverse" if i == current else ("green" if done else "dim")
        text.append(f"{i + 1} {label}", style)
    return text


class QuickStartScreen(SectionScreen):
    """Back/Next (buttons, ``ctrl+b``/``ctrl+n``, ``enter`` in a text field) through six steps."""

    SECTION = "quickstart"
    AUTO_FOCUS = "#step-key #credential"
    """Typing can start before the stored progress is read (it may move the cursor after)."""
    # Not priority bindings: a priority key would run before keystrokes still queued for
    # the focused field, losing a fast typist's last characters. Only ctrl+k must be
    # priority, as Input binds it (delete to end of line) and step 6's field has focus.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+n", "next", "Next", id="quickstart-next", tooltip="Save this step and go to the next one"),
        Binding(
            "ctrl+b", "back", "Back", id="quickstart-back", tooltip="Go to the previous step (what you typed is kept)"
        ),
        Binding(
            REVEAL_KEY,
            "reveal",
            "Reveal credential",
            id="quickstart-reveal",
            tooltip="Show or hide the credential you typed",
        ),
        Binding(
            "ctrl+t",
            "send",
            "Send test request",
            id="quickstart-send",
            tooltip="Send a test chat request through the gateway (started if needed)",
        ),
        Binding(
            "ctrl+k",
            "create_key",
            "Create Key",
            priority=True,
            id="quickstart-create-key",
            tooltip="Create a new API key for the consumer (shown once)",
        ),
        Binding("ctrl+y", "copy_curl", "Copy curl", id="quickstart-copy-curl"),
        Binding("ctrl+f", "fix", "Fix it", id="quickstart-fix", tooltip="Go back to the step the diagnosis names"),
        Binding(
            "ctrl+o",
            "start_over",
            "Start over",
            show=False,
            id="quickstart-start-over",
            tooltip="Begin a new run at step 1 (nothing is deleted)",
        ),
    ]
    PALETTE: ClassVar = (
        ("Quick Start: next step", "Save this step and go on", "next"),
        ("Quick Start: previous step", "Go back one step", "back"),
        ("Quick Start: send test request", "Step 6: a real request through the gateway", "send"),
        ("Quick Start: create consumer key", "Step 6: a new key for the consumer, shown once", "create_key"),
        ("Quick Start: copy curl", "Step 6: the curl of the test request, with real values", "copy_curl"),
        ("Quick Start: start over", "Begin a new run at step 1 (nothing is deleted)", "start_over"),
    )

    # ------------------------------------------------------------- messages (past-tense facts)

    class Loaded(Message):
        def __init__(self, config: Config, progress: Progress) -> None:
            super().__init__()
            self.config = config
            self.progress = progress

    class StepSaved(Message):
        def __init__(self, index: int, name: str, config: Config, progress: Progress, key: str | None) -> None:
            super().__init__()
            self.index = index
            self.name = name
            self.config = config
            self.progress = progress
            self.key = key

    class StepRefused(Message):
        def __init__(self, index: int, error: StoreError) -> None:
            super().__init__()
            self.index = index
            self.error = error

    class KeyCreated(Message):
        def __init__(self, consumer: str, key: str) -> None:
            super().__init__()
            self.consumer = consumer
            self.key = key

    class Answered(Message):
        def __init__(self, result: InvokeResult) -> None:
            super().__init__()
            self.result = result

    class Progressed(Message):
        """A worker's intermediate state for the result line ("Starting the gateway…")."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self) -> None:
        super().__init__()
        self.index = 0
        self.progress = Progress()
        self.ctx = WizardContext()
        self.started = False
        #: Next pressed before the stored progress was read: run it once loaded.
        self._next_pending = False
        self.busy = False
        #: The consumer key this session created — memory only, for step 6 (never stored).

    # ------------------------------------------------------------- layout

    def compose_body(self) -> Iterable[Widget]:
        yield Static(step_indicator(0, {}), id="quickstart-steps")
        yield Static("", id="quickstart-title")
        with ContentSwitcher(initial=STEP_IDS[0], id="quickstart-switcher"):
            yield KeyStep(STEP_IDS[0])
            yield ServiceStep(STEP_IDS[1])
            yield ApiStep(STEP_IDS[2])
            yield ConsumerStep(STEP_IDS[3])
            yield GroupStep(STEP_IDS[4])
            yield InvokeStep(STEP_IDS[5])
        yield Static("", id="quickstart-message")
        with Horizontal(id="quickstart-buttons"):
            yield Button("◀ Back (ctrl+b)", id="quickstart-back", compact=True)
            yield Button("Next ▶ (enter)", variant="primary", id="quickstart-next", compact=True)

    @property
    def steps(self) -> list[WizardStep]:
        return [self.query_one(f"#{sid}", WizardStep) for sid in STEP_IDS[:LAST]]

    @property
    def invoke(self) -> InvokeStep:
        return self.query_one(f"#{STEP_IDS[LAST]}", InvokeStep)

    def on_mount(self) -> None:
        self.watch(self.app, "gateway_status", self._gateway_changed)
        self._load()

    def on_screen_resume(self) -> None:
        if self.started:
            self._load()  # entities may have changed in other sections: refresh the pickers

    # ------------------------------------------------------------- loading and resuming

    @work(thread=True, exclusive=True, group="quickstart-load", exit_on_error=False)
    def _load(self) -> None:
        with self.store.session() as s:
            config = repo.load_config(s)
        self.post_message(self.Loaded(config, load_progress(self.store)))

    def on_quick_start_screen_loaded(self, message: Loaded) -> None:
        if self.busy:
            return
        if not self.started:
            self.started = True
            self.progress = message.progress
            self.ctx = WizardContext(message.config, dict(self.progress.names))
            for step in self.steps:
                step.start(self.ctx)
            self.go(self.progress.step, persist=False)
            if self._next_pending and self.index == 0:
                self.action_next()
        else:
            self.ctx = WizardContext(message.config, dict(self.progress.names))
            for step in self.steps:
                step.set_context(self.ctx)
            if self.index == LAST:
                self._show_target()

    # ------------------------------------------------------------- moving between steps

    def go(self, index: int, *, persist: bool = True) -> None:
        index = min(max(index, 0), LAST)
        if index == LAST and self.index != LAST:
            self.invoke.show_sending("")  # an answer from before the last changes would mislead
        self.index = index
        self.query_one("#quickstart-switcher", ContentSwitcher).current = STEP_IDS[index]
        self.query_one("#quickstart-steps", Static).update(step_indicator(index, self.progress.names))
        self.query_one("#quickstart-title", Static).update(
            Text(f"Step {index + 1} of {len(STEPS)} · {STEP_TITLES[index]}", style="bold")
        )
        self.query_one("#quickstart-message", Static).update("")
        self.query_one("#quickstart-back", Button).disabled = index == 0
        self.query_one("#quickstart-next", Button).display = index < LAST
        if index == 3:
            consumer = self.steps[3]
            assert isinstance(consumer, ConsumerStep)
            consumer.want_key(self.aigw.session_keys.get(consumer.original or "") is None)
        if index == LAST:
            self._show_target()
            self._gateway_changed(self.aigw.gateway_status)
        self.refresh_bindings()
        target = self._focus_target()
        if target is not None:
            target.focus()
        if persist and self.progress.step != index:
            self.progress.step = index
            self._persist(Progress(index, dict(self.progress.names), self.progress.done))

    def _focus_target(self) -> Widget | None:
        if self.index < LAST:
            return self.steps[self.index].first_focus()
        key = self.invoke.query_one("#api-key", Input)
        return self.invoke.query_one("#send", Button) if key.value else key

    @work(thread=True, group="quickstart-progress", exit_on_error=False)
    def _persist(self, progress: Progress) -> None:
        save_progress(self.store, progress)

    def action_back(self) -> None:
        if self.busy or self.index == 0:
            return
        self.go(self.index - 1)

    def action_next(self) -> None:
        if self.index == LAST:
            raise SkipAction()
        if not self.started:
            self._next_pending = True
            return
        if self.busy:
            return
        step = self.steps[self.index]
        step.clear_errors()
        self.query_one("#quickstart-message", Static).update("")
        try:
            spec = step.build_spec()
        except FormProblem as problem:
            step.show_problem(problem)
            return
        self.busy = True
        self.query_one("#quickstart-message", Static).update(Text("Saving…", style="dim"))
        self._save(self.index, step, spec, step.original, dict(self.progress.names))

    @work(thread=True, exclusive=True, group="quickstart-save", exit_on_error=False)
    def _save(self, index: int, step: WizardStep, spec: Any, original: str | None, names: dict[str, str]) -> None:
        try:
            with self.store.session() as s:
                saved, key = step.write(s, spec, original)
                names[step.TABLE] = saved.name
                progress = Progress(index + 1, names, False)
                repo.set_meta(s, META_KEY, progress.to_json())
                config = repo.load_config(s)
        except StoreError as exc:
            self.post_message(self.StepRefused(index, exc))
            return
        except BaseException:
            self.busy = False
            raise
        self.post_message(self.StepSaved(index, saved.name, config, progress, key))

    def on_quick_start_screen_step_refused(self, message: StepRefused) -> None:
        self.busy = False
        unmatched = self.steps[message.index].show_store_error(message.error)
        self.query_one("#quickstart-message", Static).update(
            Text("\n".join(unmatched), style="red")
            if unmatched
            else Text("Fix the field marked in red, then Next.", style="red")
        )

    def on_quick_start_screen_step_saved(self, message: StepSaved) -> None:
        self.busy = False
        step = self.steps[message.index]
        if step.TABLE == "consumers":
            if message.key:
                self.aigw.remember_key(message.name, message.key)
            elif step.original and step.original != message.name:
                self.aigw.consumer_renamed(step.original, message.name)  # its keys follow it
        step.original = message.name
        self.progress = message.progress
        self.ctx = WizardContext(message.config, dict(self.progress.names))
        for s in self.steps:
            s.set_context(self.ctx)
        self.aigw.config_changed()
        if message.key:
            self.app.push_screen(
                ShowSecretModal(message.name, message.key), lambda _: self.go(message.index + 1, persist=False)
            )
        else:
            self.go(message.index + 1, persist=False)

    @on(WizardStep.Submitted)
    def _step_submitted(self) -> None:
        self.action_next()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        actions = {
            "quickstart-back": self.action_back,
            "quickstart-next": self.action_next,
            "send": self.action_send,
            "new-key": self.action_create_key,
            "copy-curl": self.action_copy_curl,
            "fix": self.action_fix,
        }
        if event.button.id in actions:
            event.stop()
            with contextlib.suppress(SkipAction):
                actions[event.button.id]()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        last_only = {"send", "create_key", "copy_curl"}
        if action == "next":
            return self.index < LAST
        if action == "back":
            return self.index > 0
        if action == "reveal":
            return self.index == 0
        if action in last_only:
            return self.index == LAST
        if action == "fix":
            return self.index == LAST and self.invoke.fix_step is not None
        return True

    def action_reveal(self) -> None:
        step = self.steps[0]
        assert isinstance(step, KeyStep)
        step.toggle_reveal()

    def action_start_over(self) -> None:
        if self.busy:
            return
        self.progress = Progress()
        self.ctx = WizardContext(self.ctx.config, {})
        for step in self.steps:
            step.forget_refs()
            step.start(self.ctx)
        self.invoke.show_sending("")
        self._persist(Progress())
        self.go(0, persist=False)

    # ------------------------------------------------------------- step 6: invoke

    def _target(self) -> tuple[str, str]:
        """The access address (``public_url`` + base path + route) and the model to ask for."""
        api = repo.find(self.ctx.config, "model_apis", self.ctx.name("model_apis"))
        if api is None or not api.routes:
            return "", "<MODEL_NAME>"
        url = self.ctx.config.gateway.effective_public_url() + api.base_path + api.routes[0]
        return url, api_model(self.ctx.config, api)

    def _show_target(self) -> None:
        url, model = self._target()
        consumer = self.ctx.name("consumers") or "your consumer"
        key = self.aigw.session_keys.get(self.ctx.name("consumers") or "")
        self.invoke.show_target(url, model, consumer, key)

    def _gateway_changed(self, status: GatewayStatus) -> None:
        if self.started:
            self.invoke.show_gateway(status)

    def action_send(self) -> None:
        if self.index != LAST:
            raise SkipAction()
        if self.busy:
            return
        url, model = self._target()
        if not url:
            self.invoke.show_result(
                InvokeResult(False, None, 0.0, diagnosis="No model API chosen yet.", step="model_apis"),
                FIX_STEP["model_apis"],
            )
            return
        self.busy = True
        self.invoke.show_sending("Sending…")
        self._send(url, self.invoke.query_one("#api-key", Input).value.strip(), model)

    @work(thread=True, exclusive=True, group="quickstart-send", exit_on_error=False)
    def _send(self, url: str, key: str, model: str) -> None:
        try:
            result = self._ensure_gateway()
            if result is None:
                result = send_chat(url, key, model, store=self.store)
            self.post_message(self.Answered(result))
        finally:
            self.busy = False

    def _ensure_gateway(self) -> InvokeResult | None:
        """In the send worker: start the gateway if it is down, or have it reload what was saved."""
        status = self.gateway.status()
        deadline = time.monotonic() + START_TIMEOUT_S
        while status.state in (STARTING, STOPPING) and time.monotonic() < deadline:
            time.sleep(0.2)  # ctrl+g (or Instance Info) is already starting or stopping it
            status = self.gateway.status()
        if status.is_up:
            self.gateway.reload()  # serve what was just saved, not the last poll's snapshot
            return None
        self.post_message(self.Progressed("Starting the gateway…"))
        status = self.aigw.run_gateway("start")
        if status.is_up:
            self.post_message(self.Progressed("Sending…"))
            return None
        last = status.log_tail.splitlines()[-1] if status.log_tail else ""
        return InvokeResult(
            False,
            None,
            0.0,
            step="gateway",
            diagnosis=(
                f"The gateway did not start: {status.message or status.state}"
                + (f" — its log says: {last}" if last else "")
                + ". See Instance Info."
            ),
        )

    def on_quick_start_screen_progressed(self, message: Progressed) -> None:
        self.invoke.show_sending(message.text)

    def on_quick_start_screen_answered(self, message: Answered) -> None:
        result = message.result
        fix = FIX_STEP.get(result.step or "") if not result.ok else None
        self.invoke.show_result(result, fix)
        self.refresh_bindings()
        if fix is not None:
            self.invoke.query_one("#fix", Button).focus()
        if result.ok and not self.progress.done:
            self.progress.done = True
            self._persist(Progress(self.progress.step, dict(self.progress.names), True))

    def action_fix(self) -> None:
        fix = self.invoke.fix_step
        if self.index != LAST or fix is None:
            raise SkipAction()
        if fix == LAST:
            self.action_send()
        else:
            self.go(fix)

    def action_create_key(self) -> None:
        if self.index != LAST:
            raise SkipAction()
        consumer = self.ctx.name("consumers")
        if not consumer:
            self.notify("No consumer yet: go back to step 4", severity="warning")
            return
        self._create_key(consumer)

    @work(thread=True, group="quickstart-key", exit_on_error=False)
    def _create_key(self, consumer: str) -> None:
        with self.store.session() as s:
            key = repo.create_consumer_key(s, consumer)
        self.post_message(self.KeyCreated(consumer, key))

    def on_quick_start_screen_key_created(self, message: KeyCreated) -> None:
        self.aigw.remember_key(message.consumer, message.key)
        self.aigw.config_changed()
        self._show_target()

        def closed(_: None) -> None:
            self.invoke.query_one("#send", Button).focus()

        self.app.push_screen(ShowSecretModal(message.consumer, message.key), closed)

    @on(Input.Submitted, "#api-key")
    def _key_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_send()

    def action_copy_curl(self) -> None:
        if self.index != LAST:
            raise SkipAction()
        key = self.invoke.query_one("#api-key", Input).value.strip()
        curl = self.invoke.curl_with(key)
        copy_text(self.app, curl, "curl" + (" (with your key)" if key else ""))
        self.invoke.query_one("#curl-copied", CopiedText).show_copied(curl)
