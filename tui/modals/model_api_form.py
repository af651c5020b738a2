"""Create or edit a model API: base path, routes, and the service(s) behind it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Select, SelectionList, Switch

from store.spec import PROTOCOL_ROUTES, ModelApiSpec
from store.validation import (
    check_base_path,
    check_description,
    check_name,
    check_origin,
    normalise_base_path,
    normalise_origin,
)

from ..widgets.form_field import FormField
from .form import EntityForm, FormProblem, as_list

SCENARIO_LABELS = (("Text Generation", "text-generation"), ("Embeddings", "embeddings"))
SERVICE_TYPE_LABELS = (("Single model service", "single"), ("Multiple model services", "multi"))
ROUTING_LABELS = (("By the request's model", "model"), ("By weight", "weight"))
PROTOCOL_LABELS = (("OpenAI", "openai"), ("Anthropic", "anthropic"))


def offered_routes(protocol: str, scenario: str) -> tuple[str, ...]:
    return PROTOCOL_ROUTES.get(protocol, {}).get(scenario, ())


class ModelApiForm(EntityForm):
    """API Name, usage scenario, protocol, routes, base path, path simplification, services."""

    TABLE = "model_apis"
    NOUN = "model API"
    LIVE_CHECKS: ClassVar = {
        "name": check_name,
        "description": check_description,
        "base_path": lambda v: check_base_path(normalise_base_path(v)),
        "cors_origins": lambda v: next(filter(None, (check_origin(normalise_origin(o)) for o in as_list(v))), None),
    }

    def compose_fields(self) -> Iterable[Widget]:
        o: ModelApiSpec | None = self.original
        scenario = o.scenario if o else "text-generation"
        protocol = o.protocol if o else "openai"
        offered = offered_routes(protocol, scenario)
        routes = list(o.routes) if o else list(offered[:1])
        services = [s.name for s in self.config.model_services]
        chosen = list(o.services) if o else (services[:1] if len(services) == 1 else [])
        yield FormField("API Name", Input(o.name if o else "", placeholder="hunyuan-api", id="name"), field="name")
        with Horizontal(classes="form-row"):
            yield FormField(
                "Usage scenario",
                Select(SCENARIO_LABELS, value=scenario, allow_blank=False, id="scenario"),
                field="scenario",
            )
            yield FormField(
                "Request Protocol",
                Select(PROTOCOL_LABELS, value=protocol, allow_blank=False, id="protocol"),
                field="protocol",
            )
        yield FormField(
            "Routes",
            SelectionList[str](*[(r, r, r in routes) for r in offered], id="routes"),
            field="routes",
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Base Path",
                Input(o.base_path if o else "", placeholder="/hunyuan", id="base-path"),
                field="base_path",
                hint="Clients call {public URL}{base path}{route}",
            )
            yield FormField(
                "Path Simplification",
                Switch(o.path_simplification if o else True, id="path-simplification"),
                field="path_simplification",
                hint="On: the vendor gets a concise path",
            )
        yield FormField(
            "Service Type",
            Select(SERVICE_TYPE_LABELS, value=o.service_type if o else "single", allow_blank=False, id="service-type"),
            field="service_type",
        )
        yield FormField(
            "Model Services",
            SelectionList[str](*[(s, s, s in chosen) for s in services], id="services"),
            field="services",
            hint="" if services else "No model services yet: create one in Model Services first",
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Routing (multiple services)",
                Select(ROUTING_LABELS, value=o.routing if o else "model", allow_blank=False, id="routing"),
                field="routing",
            )
            yield FormField(
                "Weights (1–100, one per service)",
                Input(", ".join(str(w) for w in o.weights) if o else "", placeholder="70, 30", id="weights"),
                field="weights",
            )
        yield FormField(
            "Fallback services (tried in order on failure)",
            SelectionList[str](
                *[(s, s, bool(o and s in o.fallback_services)) for s in services], id="fallback-services"
            ),
            field="fallback_services",
        )
        yield FormField(
            "Browser origins (CORS, optional)",
            Input(", ".join(o.cors_origins) if o else "", placeholder="https://app.example.com, *", id="cors-origins"),
            field="cors_origins",
            hint="Pages on these origins may call the API; empty = none",
        )
        yield FormField(
            "Description (optional)", Input(o.description if o else "", id="description"), field="description"
        )

    def on_mount(self) -> None:
        self._sync_multi()

    @on(Select.Changed, "#scenario")
    @on(Select.Changed, "#protocol")
    def _scenario_changed(self) -> None:
        """The routes the chosen protocol offers for the chosen scenario."""
        routes = self.query_one("#routes", SelectionList)
        offered = offered_routes(str(self.value("protocol")), str(self.value("scenario")))
        keep = [r for r in routes.selected if r in offered]
        routes.clear_options()
        routes.add_options([(r, r, r in keep or (not keep and r == offered[0])) for r in offered])

    @on(Select.Changed, "#service-type")
    def _type_changed(self) -> None:
        self._sync_multi()

    def _sync_multi(self) -> None:
        multi = self.value("service_type") == "multi"
        self.field("routing").display = multi
        self.field("weights").display = multi

    def build_spec(self) -> ModelApiSpec:
        multi = self.value("service_type") == "multi"
        routing = self.value("routing") if multi else "model"
        weights: list[int] = []
        if multi and routing == "weight":
            for w in as_list(self.value("weights")):
                try:
                    weights.append(int(w))
                except ValueError:
                    raise FormProblem("weights", f"{w!r} is not a whole number") from None
        return ModelApiSpec(
            name=self.value("name").strip(),
            scenario=self.value("scenario"),
            protocol=self.value("protocol") or "openai",
            routes=self.value("routes"),
            base_path=self.value("base_path").strip(),
            path_simplification=bool(self.value("path_simplification")),
            service_type=self.value("service_type"),
            services=self.value("services"),
            routing=routing,
            weights=weights,
            fallback_services=self.value("fallback_services"),
            description=self.value("description").strip(),
            cors_origins=as_list(self.value("cors_origins")),
        )
