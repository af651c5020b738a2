"""Key Management: the vendor API keys (model keys) — listed without ever showing a secret."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text

from ..modals.model_key_form import ModelKeyForm
from .entity import EntityScreen


def credential_label(credential: str | None) -> Text:
    """``env:VAR`` is not a secret and helps; a literal key is only said to exist."""
    if credential and credential.startswith("env:"):
        return Text(credential, style="cyan")
    return Text("•••••••• stored", style="dim")


def in_flight_label(load: tuple[int, int] | None, limit: int) -> Text:
    """``2/5`` (in flight / max_concurrency; ``∞`` unlimited), ``+3 queued`` when requests wait."""
    bound = str(limit) if limit else "∞"
    if load is None:
        return Text(f"—/{bound}", style="dim")
    in_flight, queued = load
    text = Text(f"{in_flight}/{bound}", style="bold yellow" if limit and in_flight >= limit else "")
    if queued:
        text.append(f" +{queued} queued", style="yellow")
    return text


class ModelKeysScreen(EntityScreen):
    SECTION = "model-keys"
    TABLE = "model_keys"
    NOUN = "model key"
    COLUMNS = ("Key Name", "Credential", "In flight", "Used by", "Description")
    PALETTE: ClassVar = (
        ("New model key", "Store a vendor API key (or env:VAR)", "new"),
        ("Edit model key", "Edit the highlighted model key", "edit"),
        ("Delete model key", "Delete the highlighted model key", "delete"),
        ("Filter model keys", "Narrow the model key list", "filter"),
    )

    def __init__(self) -> None:
        super().__init__()
        #: The running gateway's slots per key: (in flight, queued); empty when none answers.
        self._loads: dict[str, tuple[int, int]] = {}

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "gateway_status", self._gateway_changed, init=False)

    def _gateway_changed(self, status: Any) -> None:
        health = getattr(status, "health", None)
        # Against the bound, the count every gateway sharing Redis holds, when the gateway has it.
        loads = (
            {
                n: (int(k.get("shared_in_flight", k.get("in_flight", 0))), int(k.get("queued", 0)))
                for n, k in health.keys.items()
            }
            if health
            else {}
        )
        if loads != self._loads:
            self._loads = loads
            if self.config is not None:
                self.refill(self.current_name())

    def row(self, spec: Any) -> tuple[Any, ...]:
        users = [s.name for s in (self.config.model_services if self.config else []) if spec.name in s.keys]
        return (
            Text(spec.name, style="bold"),
            credential_label(spec.credential),
            in_flight_label(self._loads.get(spec.name), spec.max_concurrency),
            Text(", ".join(users) or "—"),
            Text(spec.description),
        )

    def form(self, original: Any | None) -> ModelKeyForm:
        assert self.config is not None
        return ModelKeyForm(self.store, self.config, original)
