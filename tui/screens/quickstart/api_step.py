"""Step 3 — Create Model API: the address clients call (base path + route) and the service behind it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Select, Switch

from store.spec import ModelApiSpec

from ...fields import entity_field, live_checks
from ...modals.model_api_form import PROTOCOL_LABELS, SCENARIO_LABELS, SERVICE_TYPE_LABELS, offered_routes
from .step import WizardStep

DEFAULT_BASE_PATH = "/hunyuan"


class ApiStep(WizardStep):
    """API Name, usage scenario, request protocol, route, base path, path simplification,
    service type (single) and the service from step 2."""

    TABLE = "model_apis"
    NOUN = "model API"
    DEFAULT_NAME = "hunyuan-api"
    INTRO = (
        "A model API is the endpoint the gateway exposes. Clients call "
        "{gateway address}{base path}{route}; the base path identifies this API."
    )
    LIVE_CHECKS: ClassVar = live_checks("model_apis")

    def compose_fields(self) -> Iterable[Widget]:
        routes = offered_routes("openai", "text-generation")
        yield entity_field(self.TABLE, "name", Input(self.DEFAULT_NAME, id="name"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "scenario",
                Select(SCENARIO_LABELS, value="text-generation", allow_blank=False, id="scenario"),
            )
            yield entity_field(
                self.TABLE, "protocol", Select(PROTOCOL_LABELS, value="openai", allow_blank=False, id="protocol")
            )
        yield entity_field(
            self.TABLE, "routes", Select([(r, r) for r in routes], value=routes[0], allow_blank=False, id="routes")
        )
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "base_path", Input(DEFAULT_BASE_PATH, id="base-path"))
            yield entity_field(self.TABLE, "path_simplification", Switch(True, id="path-simplification"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "service_type",
                Select(SERVICE_TYPE_LABELS, value="single", allow_blank=False, id="service-type"),
            )
            yield entity_field(self.TABLE, "services", Select([], prompt="no model services yet", id="services"))

    def refresh_refs(self) -> None:
        self.sync_ref("services", [s.name for s in self.ctx.config.model_services], self.ctx.name("model_services"))

    def _offer_routes(self, scenario: str, chosen: str | None = None) -> None:
        routes = offered_routes(str(self.value("protocol")), scenario)
        w = self.query_one("#routes", Select)
        w.set_options([(r, r) for r in routes])
        if chosen in routes:
            w.value = chosen

    def fill(self, spec: Any | None) -> None:
        scenario = spec.scenario if spec else "text-generation"
        self.set_value("name", spec.name if spec else self.unique_name(self.DEFAULT_NAME))
        self.set_value("scenario", scenario)
        self.set_value("protocol", spec.protocol if spec else "openai")
        self._offer_routes(scenario, spec.routes[0] if spec and spec.routes else None)
        self.set_value("base_path", spec.base_path if spec else self._free_base_path())
        self.set_value("path_simplification", spec.path_simplification if spec else True)
        self.set_value("service_type", spec.service_type if spec else "single")
        if spec and spec.services:
            self.set_value("services", spec.services[0])
        elif self.ctx.name("model_services"):
            self.set_value("services", self.ctx.name("model_services"))

    def _free_base_path(self) -> str:
        taken = {a.base_path for a in self.ctx.config.model_apis}
        path, n = DEFAULT_BASE_PATH, 2
        while path in taken:
            path, n = f"{DEFAULT_BASE_PATH}{n}", n + 1
        return path

    @on(Select.Changed, "#scenario")
    @on(Select.Changed, "#protocol")
    def _scenario_changed(self, event: Select.Changed) -> None:
        """The routes the chosen protocol offers for the chosen scenario (an Anthropic API: Messages)."""
        if event.select.value != event.value:
            return
        scenario = str(self.value("scenario"))
        if self.value("routes") not in offered_routes(str(self.value("protocol")), scenario):
            self._offer_routes(scenario)

    def build_spec(self) -> ModelApiSpec:
        spec = self.base_spec() or ModelApiSpec(name="")
        route, service = self.value("routes"), self.value("services")
        spec.name = self.value("name").strip()
        spec.scenario = self.value("scenario")
        spec.protocol = self.value("protocol") or "openai"
        offered = offered_routes(spec.protocol, spec.scenario)
        spec.routes = [route] + [r for r in spec.routes if r != route and r in offered]
        spec.base_path = self.value("base_path").strip()
        spec.path_simplification = bool(self.value("path_simplification"))
        spec.service_type = self.value("service_type")
        if spec.service_type == "single":
            spec.services = [service] if service else []
        else:
            spec.services = ([service] if service else []) + [s for s in spec.services if s != service]
        return spec
