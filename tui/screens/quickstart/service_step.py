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
from store.validation import check_model, check_name, check_url

from ...modals.model_service_form import KEY_POLICY_LABELS, MODEL_POLICY_LABELS, PROTOCOL_LABELS
from ...widgets.form_field import FormField
from .step import WizardStep


def vendor_models(vendor: str) -> tuple[str, ...]:
    preset = PRESETS.get(vendor)
    return preset.models if preset else ()


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
    LIVE_CHECKS: ClassVar = {"name": check_name, "address": check_url, "default_model": check_model}

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self._vendor = VENDORS[0]

    def compose_fields(self) -> Iterable[Widget]:
        first = PRESETS[VENDORS[0]]
        yield FormField(
            "Service Name", Input(self.DEFAULT_NAME, placeholder=self.DEFAULT_NAME, id="name"), field="name"
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Model Vendor",
                Select([(p.label, p.name) for p in PRESETS.values()], value=first.name, allow_blank=False, id="vendor"),
                field="vendor",
            )
            yield FormField(
                "Model Protocol",
                Select(PROTOCOL_LABELS, value="openai", allow_blank=False, id="protocol"),
                field="protocol",
            )
        yield FormField(
            "Service Address",
            Input(first.address, placeholder="https://vendor.example/v1", id="address"),
            field="address",
            hint="The vendor's OpenAI base URL; filled from the vendor, editable",
        )
        with Horizontal(classes="form-row"):
            yield FormField("Model Key", Select([], prompt="no model keys yet", id="keys"), field="keys")
            yield FormField(
                "Key Usage Policy",
                Select(KEY_POLICY_LABELS, value="polling", allow_blank=False, id="key-policy"),
                field="key_policy",
            )
        yield FormField(
            "Model Selection",
            Select(MODEL_POLICY_LABELS, value="specified", allow_blank=False, id="model-policy"),
            field="model_policy",
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Default Model",
                Input(first.models[0], id="default-model", suggester=SuggestFromList(first.models)),
                field="default_model",
            )
            yield FormField(
                "Vendor's models",
                Select([(m, m) for m in first.models], prompt="pick a model", id="model-picker"),
                field="model_picker",
            )

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
        models = vendor_models(vendor)
        self.set_value("default_model", spec.default_model if spec else (models[0] if models else ""))

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
            model.value = new_p.models[0] if new_p and new_p.models else ""

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
        return spec
