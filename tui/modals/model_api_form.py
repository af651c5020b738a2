"""Create or edit a model API: base path, routes, and the service(s) behind it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Select, SelectionList, Switch

from store.spec import PROTOCOL_ROUTES, ModelApiSpec
from store.validation import check_cache_ttl

from ..fields import entity_field, live_checks
from ..widgets.marked_list import MarkedSelectionList
from .form import EntityForm, FormProblem, as_list, as_number

SCENARIO_LABELS = (("Text Generation", "text-generation"), ("Embeddings", "embeddings"))
SERVICE_TYPE_LABELS = (("Single model service", "single"), ("Multiple model services", "multi"))
ROUTING_LABELS = (("By the request's model", "model"), ("By weight", "weight"))
CACHE_KEY_LABELS = (("The whole request", "full"), ("The last user message", "last_user_message"))
CACHE_SCOPE_LABELS = (("Each consumer its own", "consumer"), ("Shared by the API's consumers", "api"))


def _check_ttl(value: str) -> str | None:
    try:
        seconds = int(value.strip() or "0")
    except ValueError:
        return f"{value.strip()!r} is not a whole number of seconds"
    return check_cache_ttl(seconds)


PROTOCOL_LABELS = (("OpenAI", "openai"), ("Anthropic", "anthropic"))


def offered_routes(protocol: str, scenario: str) -> tuple[str, ...]:
    return PROTOCOL_ROUTES.get(protocol, {}).get(scenario, ())


class ModelApiForm(EntityForm):
    """API Name, usage scenario, protocol, routes, base path, path simplification, services."""

    TABLE = "model_apis"
    NOUN = "model API"
    LIVE_CHECKS: ClassVar = {**live_checks("model_apis"), "cache_ttl_s": _check_ttl}

    def compose_fields(self) -> Iterable[Widget]:
        o: ModelApiSpec | None = self.original
        scenario = o.scenario if o else "text-generation"
        protocol = o.protocol if o else "openai"
        offered = offered_routes(protocol, scenario)
        routes = list(o.routes) if o else list(offered[:1])
        services = [s.name for s in self.config.model_services]
        chosen = list(o.services) if o else (services[:1] if len(services) == 1 else [])
        yield entity_field(self.TABLE, "name", Input(o.name if o else "", id="name"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE, "scenario", Select(SCENARIO_LABELS, value=scenario, allow_blank=False, id="scenario")
            )
            yield entity_field(
                self.TABLE, "protocol", Select(PROTOCOL_LABELS, value=protocol, allow_blank=False, id="protocol")
            )
        yield entity_field(
            self.TABLE,
            "routes",
            MarkedSelectionList[str](*[(r, r, r in routes) for r in offered], id="routes"),
        )
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "base_path", Input(o.base_path if o else "", id="base-path"))
            yield entity_field(
                self.TABLE,
                "path_simplification",
                Switch(o.path_simplification if o else True, id="path-simplification"),
            )
        yield entity_field(
            self.TABLE,
            "service_type",
            Select(SERVICE_TYPE_LABELS, value=o.service_type if o else "single", allow_blank=False, id="service-type"),
        )
        yield entity_field(
            self.TABLE, "services", MarkedSelectionList[str](*[(s, s, s in chosen) for s in services], id="services")
        )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "routing",
                Select(ROUTING_LABELS, value=o.routing if o else "model", allow_blank=False, id="routing"),
            )
            yield entity_field(
                self.TABLE, "weights", Input(", ".join(str(w) for w in o.weights) if o else "", id="weights")
            )
        yield entity_field(
            self.TABLE,
            "fallback_services",
            MarkedSelectionList[str](
                *[(s, s, bool(o and s in o.fallback_services)) for s in services], id="fallback-services"
            ),
        )
        yield entity_field(self.TABLE, "cors_origins", Input(", ".join(o.cors_origins) if o else "", id="cors-origins"))
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "cache_ttl_s", Input(str(o.cache_ttl_s) if o else "0", id="cache-ttl-s"))
            yield entity_field(
                self.TABLE,
                "cache_key",
                Select(CACHE_KEY_LABELS, value=o.cache_key if o else "full", allow_blank=False, id="cache-key"),
            )
            yield entity_field(
                self.TABLE,
                "cache_scope",
                Select(
                    CACHE_SCOPE_LABELS, value=o.cache_scope if o else "consumer", allow_blank=False, id="cache-scope"
                ),
            )
        yield entity_field(self.TABLE, "description", Input(o.description if o else "", id="description"))

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
            cache_ttl_s=int(as_number(self.value("cache_ttl_s"), "cache_ttl_s", integer=True)),
            cache_key=self.value("cache_key") or "full",
            cache_scope=self.value("cache_scope") or "consumer",
        )
