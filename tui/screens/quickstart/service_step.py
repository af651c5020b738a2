"""Step 2 — Create Model Service: the vendor, its address, the key from step 1, the default model."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from textual import on
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Input, Select

from store.presets import PRESETS, VENDORS
from store.spec import ModelServiceSpec

from ...fields import entity_field, live_checks
from ...modals.model_service_form import (
    KEY_POLICY_LABELS,
    MODEL_POLICY_LABELS,
    PROTOCOL_LABELS,
    format_prices,
    parse_prices,
)
from .step import WizardStep

#: The model the README's example uses: Quick Start proposes it when the vendor offers it.
EXAMPLE_MODEL = "hunyuan-turbos-latest"


def vendor_models(vendor: str) -> tuple[str, ...]:
    preset = PRESETS.get(vendor)
    return preset.models if preset else ()


def proposed_model(vendor: str) -> str:
    models = vendor_models(vendor)
    return EXAMPLE_MODEL if EXAMPLE_MODEL in models else (models[0] if models else "")


class ServiceStep(WizardStep):
    """Service Name, Model Vendor (Hunyuan first), protocol, address (from the vendor), model key,
    key policy (Polling), model selection (specified) and the default model."""

    TABLE = "model_services"
    NOUN = "model service"
    DEFAULT_NAME = "hunyuan-service"
    INTRO = (
        "A model service is one vendor: where to send requests, with which model key, and which "
        "model to use. Choosing the vendor fills in its address and its models."
    )
    LIVE_CHECKS: ClassVar = live_checks("model_services")

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self._vendor = VENDORS[0]

    def compose_fields(self) -> Iterable[Widget]:
        first = PRESETS[VENDORS[0]]
        yield entity_field(self.TABLE, "name", Input(self.DEFAULT_NAME, id="name"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "vendor",
                Select([(p.label, p.name) for p in PRESETS.values()], value=first.name, allow_blank=False, id="vendor"),
            )
            yield entity_field(
                self.TABLE,
                "protocol",
                Select(PROTOCOL_LABELS, value="openai", allow_blank=False, id="protocol"),
            )
        yield entity_field(self.TABLE, "address", Input(first.address, id="address"))
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "keys", Select([], prompt="no model keys yet", id="keys"))
            yield entity_field(
                self.TABLE, "key_policy", Select(KEY_POLICY_LABELS, value="polling", allow_blank=False, id="key-policy")
            )
        yield entity_field(
            self.TABLE,
            "model_policy",
            Select(MODEL_POLICY_LABELS, value="specified", allow_blank=False, id="model-policy"),
        )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "default_model",
                Input(proposed_model(first.name), id="default-model", suggester=SuggestFromList(first.models)),
            )
            yield entity_field(
                self.TABLE,
                "model_picker",
                Select([(m, m) for m in first.models], prompt="pick a model", id="model-picker"),
            )
        # No list price is built in: one typed here is what Usage and Traffic count cost with.
        yield entity_field(self.TABLE, "prices", Input("", id="prices"))

    def refresh_refs(self) -> None:
        self.sync_ref("keys", [k.name for k in self.ctx.config.model_keys], self.ctx.name("model_keys"))

    def fill(self, spec: Any | None) -> None:
        vendor = spec.vendor if spec else VENDORS[0]
        self._vendor = vendor
        self.set_value("name", spec.name if spec else self.unique_name(self.DEFAULT_NAME))
        self.set_value("vendor", vendor)
        self.set_value("protocol", spec.protocol if spec else "openai")
        self._offer_models(vendor)
        self.set_value("address", spec.address if spec else PRESETS[vendor].address)
        if spec and spec.keys:
            self.set_value("keys", spec.keys[0])
        elif self.ctx.name("model_keys"):
            self.set_value("keys", self.ctx.name("model_keys"))
        self.set_value("key_policy", spec.key_policy if spec else "polling")
        self.set_value("model_policy", spec.model_policy if spec else "specified")
        self.set_value("default_model", spec.default_model if spec else proposed_model(vendor))
        self.set_value("prices", format_prices(spec.prices) if spec else "")

    def _offer_models(self, vendor: str) -> None:
        models = vendor_models(vendor)
        self.query_one("#model-picker", Select).set_options([(m, m) for m in models])
        self.query_one("#default-model", Input).suggester = SuggestFromList(models)

    @on(Select.Changed, "#vendor")
    def _vendor_changed(self, event: Select.Changed) -> None:
        new = str(event.value)
        old, self._vendor = self._vendor, new
        if new == old or event.select.value != event.value:
            return
        old_p, new_p = PRESETS.get(old), PRESETS.get(new)
        address = self.query_one("#address", Input)
        if not address.value or (old_p and address.value == old_p.address):
            address.value = new_p.address if new_p else ""
        self._offer_models(new)
        model = self.query_one("#default-model", Input)
        if not model.value or (old_p and model.value in old_p.models):
            model.value = proposed_model(new)

    @on(Select.Changed, "#protocol")
    def _protocol_changed(self, event: Select.Changed) -> None:
        """The vendor's address for the protocol (Hunyuan's Anthropic one), unless typed by hand."""
        preset = PRESETS.get(self._vendor)
        if preset is None or event.select.value != event.value:
            return
        address = self.query_one("#address", Input)
        if address.value in (preset.address, preset.anthropic_address, ""):
            address.value = preset.address_for(str(event.value)) or address.value

    @on(Select.Changed, "#model-picker")
    def _model_picked(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.query_one("#default-model", Input).value = str(event.value)

    def build_spec(self) -> ModelServiceSpec:
        spec = self.base_spec() or ModelServiceSpec(name="")
        key = self.value("keys")
        spec.name = self.value("name").strip()
        spec.vendor = self.value("vendor")
        spec.protocol = self.value("protocol") or "openai"
        spec.address = self.value("address").strip()
        spec.keys = ([key] + [k for k in spec.keys if k != key]) if key else []
        spec.key_policy = self.value("key_policy")
        spec.model_policy = self.value("model_policy")
        spec.default_model = self.value("default_model").strip()
        spec.prices = parse_prices(self.value("prices"))
        return spec
