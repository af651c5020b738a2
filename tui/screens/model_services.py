"""Model Services: the LLM vendors behind the gateway."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text

from ..modals.model_service_form import ModelServiceForm
from .entity import EntityScreen

#: A circuit state as the table shows it (the gateway's ``/healthz`` words).
STATE_STYLES = {"healthy": "green", "open": "bold red", "half-open": "yellow", "unknown": "dim"}


def state_label(state: str | None) -> Text:
    """``—`` when no gateway is running (or it does not serve the service yet)."""
    return Text(state, style=STATE_STYLES.get(state, "")) if state else Text("—", style="dim")


class ModelServicesScreen(EntityScreen):
    SECTION = "model-services"
    TABLE = "model_services"
    NOUN = "model service"
    COLUMNS = ("Service Name", "State", "Vendor", "Address", "Keys", "Default model", "Used by")
    PALETTE: ClassVar = (
        ("New model service", "Add an LLM vendor (address, keys, models)", "new"),
        ("Edit model service", "Edit the highlighted model service", "edit"),
        ("Delete model service", "Delete the highlighted model service", "delete"),
        ("Filter model services", "Narrow the model service list", "filter"),
    )

    def __init__(self) -> None:
        super().__init__()
        #: The running gateway's circuit state per service (empty: no gateway answers).
        self._states: dict[str, str] = {}

    def on_mount(self) -> None:
        super().on_mount()
        self.watch(self.app, "gateway_status", self._gateway_changed, init=False)

    def _gateway_changed(self, status: Any) -> None:
        health = getattr(status, "health", None)
        states = {name: str(s.get("state", "")) for name, s in health.services.items()} if health else {}
        if states != self._states:
            self._states = states
            if self.config is not None:
                self.refill(self.current_name())

    def row(self, spec: Any) -> tuple[Any, ...]:
        users = [
            a.name
            for a in (self.config.model_apis if self.config else [])
            if spec.name in a.services or spec.name in a.fallback_services
        ]
        model = spec.default_model or "client's"
        return (
            Text(spec.name, style="bold"),
            state_label(self._states.get(spec.name)),
            Text(spec.vendor),
            Text(spec.address),
            Text(f"{', '.join(spec.keys)} ({spec.key_policy})"),
            Text(model),
            Text(", ".join(users) or "—"),
        )

    def form(self, original: Any | None) -> ModelServiceForm:
        assert self.config is not None
        return ModelServiceForm(self.store, self.config, original)
