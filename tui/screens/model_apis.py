"""Model APIs: the endpoints clients call, with Route Management and "Try it"."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
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
            "Routes",
            id="api-routes",
            tooltip="Request paths, access URLs, curl and a live test request",
        ),
        Binding(
            "x",
            "clear_cache",
            "Clear cache",
            id="api-clear-cache",
            tooltip="Drop the highlighted API's cached answers in the running gateway",
        ),
    ]
    PALETTE: ClassVar = (
        ("New model API", "Expose a model service at a base path", "new"),
        ("Edit model API", "Edit the highlighted model API", "edit"),
        ("Delete model API", "Delete the highlighted model API", "delete"),
        ("Filter model APIs", "Narrow the model API list", "filter"),
        ("Route Management / Try it", "Access URLs, curl and a test request for the highlighted API", "routes"),
        ("Clear response cache", "Drop the highlighted API's cached answers in the running gateway", "clear_cache"),
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

    def action_clear_cache(self) -> None:
        spec = self.current()
        if spec is None:
            self.notify("Highlight a model API first", severity="warning")
            return
        self._clear_cache(spec.name)

    @work(thread=True, exclusive=True, group="clear-cache", exit_on_error=False)
    def _clear_cache(self, api: str) -> None:
        cleared = self.aigw.gateway.admin().clear_cache(api)
        if cleared is None:
            self.app.call_from_thread(
                self.notify, "No running gateway answered with this store's admin token", severity="warning"
            )
        else:
            self.app.call_from_thread(
                self.notify, f"{api}: {cleared} cached answer{'' if cleared == 1 else 's'} dropped"
            )
