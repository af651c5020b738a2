"""Model Services: the LLM vendors behind the gateway."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text

from ..modals.model_service_form import ModelServiceForm
from .entity import EntityScreen


class ModelServicesScreen(EntityScreen):
    SECTION = "model-services"
    TABLE = "model_services"
    NOUN = "model service"
    COLUMNS = ("Service Name", "Vendor", "Address", "Keys", "Default model", "Used by")
    PALETTE: ClassVar = (
        ("New model service", "Add an LLM vendor (address, keys, models)", "new"),
        ("Edit model service", "Edit the highlighted model service", "edit"),
        ("Delete model service", "Delete the highlighted model service", "delete"),
        ("Filter model services", "Narrow the model service list", "filter"),
    )

    def row(self, spec: Any) -> tuple[Any, ...]:
        users = [
            a.name
            for a in (self.config.model_apis if self.config else [])
            if spec.name in a.services or spec.name in a.fallback_services
        ]
        model = spec.default_model or "client's"
        return (
            Text(spec.name, style="bold"),
            Text(spec.vendor),
            Text(spec.address),
            Text(f"{', '.join(spec.keys)} ({spec.key_policy})"),
            Text(model),
            Text(", ".join(users) or "—"),
        )

    def form(self, original: Any | None) -> ModelServiceForm:
        assert self.config is not None
        return ModelServiceForm(self.store, self.config, original)
