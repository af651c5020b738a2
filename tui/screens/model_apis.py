"""Model APIs: the endpoints clients call, with Route Management and "Try it"."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from ..invoke import access_urls
from ..modals.model_api_form import ModelApiForm
from ..modals.route_management import RouteManagementScreen
from .entity import EntityScreen


class ModelApisScreen(EntityScreen):
    SECTION = "model-apis"
    TABLE = "model_apis"
    NOUN = "model API"
    COLUMNS = ("API Name", "Base Path", "Routes", "Services", "Access URL")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "t",
            "routes",
            "Routes & Try it",
            id="api-routes",
            tooltip="Request paths, access URLs, curl and a live test request",
        ),
    ]
    PALETTE: ClassVar = (
        ("New model API", "Expose a model service at a base path", "new"),
        ("Edit model API", "Edit the highlighted model API", "edit"),
        ("Delete model API", "Delete the highlighted model API", "delete"),
        ("Filter model APIs", "Narrow the model API list", "filter"),
        ("Route Management / Try it", "Access URLs, curl and a test request for the highlighted API", "routes"),
    )

    def row(self, spec: Any) -> tuple[Any, ...]:
        urls = access_urls(self.config.gateway, spec) if self.config else []
        services = ", ".join(spec.services) + (
            f" (+{len(spec.fallback_services)} fallback)" if spec.fallback_services else ""
        )
        return (
            Text(spec.name, style="bold"),
            Text(spec.base_path or "/"),
            Text(", ".join(spec.routes)),
            Text(services),
            Text(urls[0] if urls else ""),
        )

    def form(self, original: Any | None) -> ModelApiForm:
        assert self.config is not None
        return ModelApiForm(self.store, self.config, original)

    def action_routes(self) -> None:
        spec = self.current()
        if spec is None or self.config is None:
            self.notify("Highlight a model API first", severity="warning")
            return
        self.app.push_screen(RouteManagementScreen(self.store, self.config, spec, self.aigw.session_keys))
