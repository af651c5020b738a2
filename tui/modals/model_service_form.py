"""Create or edit a model service: a vendor preset fills the address and offers its models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Input, Select, SelectionList

from store.presets import PRESETS, VENDORS
from store.spec import DEFAULT_MAX_TOKENS, DEFAULT_TIMEOUT_S, ModelServiceSpec, Price
from store.validation import check_description, check_model, check_name, check_proxy, check_url

from ..widgets.form_field import FormField
from .form import EntityForm, FormProblem, as_list, as_number

KEY_POLICY_LABELS = (
    ("Polling (round robin)", "polling"),
    ("Random", "random"),
    ("Failover (first healthy key)", "failover"),
)
MODEL_POLICY_LABELS = (
    ("Specified model (always the default model)", "specified"),
    ("Pass through the client's model", "passthrough"),
)
UNLISTED_LABELS = (("Refuse with 404 model_not_found", "refuse"), ("Use the default model", "default"))
PROTOCOL_LABELS = (("OpenAI-compatible", "openai"), ("Anthropic Messages", "anthropic"))
RESPONSES_LABELS = (
    ("The vendor's default", "default"),
    ("Passed through (the vendor serves it)", "on"),
    ("Bridged to chat completions", "off"),
)
_RESPONSES = {"default": None, "on": True, "off": False}


def format_prices(prices: dict[str, Price]) -> str:
    return "; ".join(f"{m}={p.input:g}/{p.output:g}" for m, p in prices.items())


def parse_prices(text: str) -> dict[str, Price]:
    """``model=in/out; model2=in/out`` (USD or any currency per 1M tokens)."""
    out: dict[str, Price] = {}
    for part in [p.strip() for p in text.replace("\n", ";").split(";") if p.strip()]:
        model, sep, rest = part.partition("=")
        inp, sep2, outp = rest.partition("/")
        if not sep or not sep2 or not model.strip():
            raise FormProblem("prices", f"{part!r}: write model=input/output, e.g. hunyuan-turbos-latest=0.8/2.0")
        try:
            out[model.strip()] = Price(float(inp), float(outp))
        except ValueError:
            raise FormProblem("prices", f"{part!r}: prices must be numbers") from None
    return out


class ModelServiceForm(EntityForm):
    """Basic info (vendor, protocol, address, keys, key policy) and model policy."""

    TABLE = "model_services"
    NOUN = "model service"
    LIVE_CHECKS: ClassVar = {
        "name": check_name,
        "address": check_url,
        "proxy": check_proxy,
        "default_model": check_model,
        "description": check_description,
    }

    def compose_fields(self) -> Iterable[Widget]:
        o: ModelServiceSpec | None = self.original
        vendor = o.vendor if o else VENDORS[0]
        preset = PRESETS.get(vendor)
        protocol = o.protocol if o else (preset.protocol if preset else "openai")
        self._vendor, self._protocol = vendor, protocol
        keys = [k.name for k in self.config.model_keys]
        chosen = list(o.keys) if o else (keys[:1] if len(keys) == 1 else [])
        models = preset.models_for(protocol) if preset else ()
        default_model = o.default_model if o else (models[0] if models else "")
        yield FormField(
            "Service Name", Input(o.name if o else "", placeholder="hunyuan-service", id="name"), field="name"
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Model Vendor",
                Select(
                    [(f"{p.label} ({p.name})", p.name) for p in PRESETS.values()],
                    value=vendor,
                    allow_blank=False,
                    id="vendor",
                ),
                field="vendor",
            )
            yield FormField(
                "Model Protocol",
                Select(PROTOCOL_LABELS, value=protocol, allow_blank=False, id="protocol"),
                field="protocol",
            )
        yield FormField(
            "Service Address",
            Input(
                o.address if o else (preset.address_for(protocol) if preset else ""),
                placeholder="https://vendor.example/v1",
                id="address",
            ),
            field="address",
            hint="The vendor's base URL for the protocol; filled from the vendor",
        )
        yield FormField(
            "Model Keys (space to select, in order of use)",
            SelectionList[str](*[(k, k, k in chosen) for k in keys], id="keys"),
            field="keys",
            hint="" if keys else "No model keys yet: create one in Key Management first",
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Key Usage Policy",
                Select(KEY_POLICY_LABELS, value=o.key_policy if o else "polling", allow_blank=False, id="key-policy"),
                field="key_policy",
            )
            yield FormField(
                "Model Selection",
                Select(
                    MODEL_POLICY_LABELS,
                    value=o.model_policy if o else "specified",
                    allow_blank=False,
                    id="model-policy",
                ),
                field="model_policy",
            )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Default Model",
                Input(default_model, id="default-model", suggester=SuggestFromList(models)),
                field="default_model",
            )
            yield FormField(
                "Pick from the vendor's models",
                Select(self._model_options(vendor, protocol), prompt="vendor models", id="model-picker"),
                field="model_picker",
            )
        yield FormField(
            "Models served (comma separated, globs allowed; empty = any)",
            Input(", ".join(o.models) if o else "", placeholder="hunyuan-*", id="models"),
            field="models",
        )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Unlisted model (pass-through)",
                Select(
                    UNLISTED_LABELS, value=o.unlisted_model if o else "refuse", allow_blank=False, id="unlisted-model"
                ),
                field="unlisted_model",
            )
            yield FormField(
                "Timeout (seconds)",
                Input(f"{o.timeout_s:g}" if o else f"{DEFAULT_TIMEOUT_S:g}", id="timeout-s"),
                field="timeout_s",
            )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Default max_tokens (Anthropic vendors)",
                Input(str(o.default_max_tokens if o else DEFAULT_MAX_TOKENS), id="default-max-tokens"),
                field="default_max_tokens",
                hint="Sent when a translated request names none",
            )
            responses = "default" if not o or o.responses is None else ("on" if o.responses else "off")
            yield FormField(
                "Responses API (/v1/responses)",
                Select(RESPONSES_LABELS, value=responses, allow_blank=False, id="responses"),
                field="responses",
            )
        with Horizontal(classes="form-row"):
            yield FormField(
                "Proxy (empty = environment, none = direct)",
                Input(o.proxy if o else "", placeholder="http://proxy:3128", id="proxy"),
                field="proxy",
            )
            yield FormField(
                "CA file (PEM, trusted for this vendor)",
                Input(o.ca_file if o else "", placeholder="/etc/ssl/vendor-ca.pem", id="ca-file"),
                field="ca_file",
            )
        yield FormField(
            "Prices per 1M tokens (model=input/output; …)",
            Input(format_prices(o.prices) if o else "", placeholder="hunyuan-turbos-latest=0.8/2.0", id="prices"),
            field="prices",
        )
        yield FormField(
            "Description (optional)", Input(o.description if o else "", id="description"), field="description"
        )

    @staticmethod
    def _model_options(vendor: str, protocol: str) -> list[tuple[str, str]]:
        preset = PRESETS.get(vendor)
        return [(m, m) for m in (preset.models_for(protocol) if preset else ())]

    @on(Select.Changed, "#vendor")
    def _vendor_changed(self, event: Select.Changed) -> None:
        new = str(event.value)
        if new == self._vendor:
            return
        preset = PRESETS.get(new)
        if preset is not None and preset.protocol != self._protocol:  # Anthropic's preset speaks Anthropic
            self.query_one("#protocol", Select).value = preset.protocol
        self._refill(new, self.value("protocol") if preset is None else preset.protocol)

    @on(Select.Changed, "#protocol")
    def _protocol_changed(self, event: Select.Changed) -> None:
        self._refill(self._vendor, str(event.value))

    def _refill(self, vendor: str, protocol: str) -> None:
        """The address and models of the new vendor or protocol, unless the user typed their own."""
        if (vendor, protocol) == (self._vendor, self._protocol):
            return
        old_p, new_p = PRESETS.get(self._vendor), PRESETS.get(vendor)
        old_address = old_p.address_for(self._protocol) if old_p else ""
        old_models = old_p.models_for(self._protocol) if old_p else ()
        self._vendor, self._protocol = vendor, protocol
        address = self.query_one("#address", Input)
        if not address.value or address.value == old_address:
            address.value = new_p.address_for(protocol) if new_p else ""
        picker = self.query_one("#model-picker", Select)
        picker.set_options(self._model_options(vendor, protocol))
        models = new_p.models_for(protocol) if new_p else ()
        model = self.query_one("#default-model", Input)
        model.suggester = SuggestFromList(models)
        if models and (not model.value or model.value in old_models):
            model.value = models[0]

    @on(Select.Changed, "#model-picker")
    def _model_picked(self, event: Select.Changed) -> None:
        if event.value is not Select.NULL:
            self.query_one("#default-model", Input).value = str(event.value)

    def build_spec(self) -> ModelServiceSpec:
        return ModelServiceSpec(
            name=self.value("name").strip(),
            vendor=self.value("vendor"),
            protocol=self.value("protocol") or "openai",
            address=self.value("address").strip(),
            keys=self.value("keys"),
            key_policy=self.value("key_policy"),
            model_policy=self.value("model_policy"),
            default_model=self.value("default_model").strip(),
            models=as_list(self.value("models")),
            unlisted_model=self.value("unlisted_model"),
            timeout_s=as_number(self.value("timeout_s"), "timeout_s"),
            default_max_tokens=int(as_number(self.value("default_max_tokens"), "default_max_tokens", integer=True)),
            responses=_RESPONSES[str(self.value("responses"))],
            prices=parse_prices(self.value("prices")),
            proxy=self.value("proxy").strip(),
            ca_file=self.value("ca_file").strip(),
            description=self.value("description").strip(),
        )
