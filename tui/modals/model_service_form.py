"""Create or edit a model service: a vendor preset fills the address and offers its models."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.containers import Horizontal
from textual.suggester import SuggestFromList
from textual.widget import Widget
from textual.widgets import Input, Select

from store.presets import PRESETS, VENDORS
from store.spec import DEFAULT_MAX_TOKENS, DEFAULT_TIMEOUT_S, ModelServiceSpec, Price

from ..fields import entity_field, live_checks
from ..widgets.marked_list import MarkedSelectionList
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
    LIVE_CHECKS: ClassVar = live_checks("model_services")

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
        yield entity_field(self.TABLE, "name", Input(o.name if o else "", id="name"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "vendor",
                Select(
                    [(f"{p.label} ({p.name})", p.name) for p in PRESETS.values()],
                    value=vendor,
                    allow_blank=False,
                    id="vendor",
                ),
            )
            yield entity_field(
                self.TABLE,
                "protocol",
                Select(PROTOCOL_LABELS, value=protocol, allow_blank=False, id="protocol"),
            )
        yield entity_field(
            self.TABLE,
            "address",
            Input(
                o.address if o else (preset.address_for(protocol) if preset else ""),
                id="address",
            ),
        )
        yield entity_field(
            self.TABLE, "keys", MarkedSelectionList[str](*[(k, k, k in chosen) for k in keys], id="keys")
        )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "key_policy",
                Select(KEY_POLICY_LABELS, value=o.key_policy if o else "polling", allow_blank=False, id="key-policy"),
            )
            yield entity_field(
                self.TABLE,
                "model_policy",
                Select(
                    MODEL_POLICY_LABELS,
                    value=o.model_policy if o else "specified",
                    allow_blank=False,
                    id="model-policy",
                ),
            )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "default_model",
                Input(default_model, id="default-model", suggester=SuggestFromList(models)),
            )
            yield entity_field(
                self.TABLE,
                "model_picker",
                Select(self._model_options(vendor, protocol), prompt="vendor models", id="model-picker"),
            )
        yield entity_field(self.TABLE, "models", Input(", ".join(o.models) if o else "", id="models"))
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "unlisted_model",
                Select(
                    UNLISTED_LABELS, value=o.unlisted_model if o else "refuse", allow_blank=False, id="unlisted-model"
                ),
            )
            yield entity_field(
                self.TABLE, "timeout_s", Input(f"{o.timeout_s:g}" if o else f"{DEFAULT_TIMEOUT_S:g}", id="timeout-s")
            )
        with Horizontal(classes="form-row"):
            yield entity_field(
                self.TABLE,
                "default_max_tokens",
                Input(str(o.default_max_tokens if o else DEFAULT_MAX_TOKENS), id="default-max-tokens"),
            )
            responses = "default" if not o or o.responses is None else ("on" if o.responses else "off")
            yield entity_field(
                self.TABLE, "responses", Select(RESPONSES_LABELS, value=responses, allow_blank=False, id="responses")
            )
        with Horizontal(classes="form-row"):
            yield entity_field(self.TABLE, "proxy", Input(o.proxy if o else "", id="proxy"))
            yield entity_field(self.TABLE, "ca_file", Input(o.ca_file if o else "", id="ca-file"))
        yield from self._resilience_fields(o)
        yield entity_field(self.TABLE, "prices", Input(format_prices(o.prices) if o else "", id="prices"))
        yield entity_field(self.TABLE, "description", Input(o.description if o else "", id="description"))

    @staticmethod
    def _resilience_fields(o: ModelServiceSpec | None) -> Iterable[Widget]:
        """Queue wait, circuit breaker, probes and first-byte bound (0 = off for all but the cool-down)."""
        d = o or ModelServiceSpec(name="")
        with Horizontal(classes="form-row"):
            yield entity_field(
                ModelServiceForm.TABLE, "queue_timeout_s", Input(f"{d.queue_timeout_s:g}", id="queue-timeout-s")
            )
            yield entity_field(
                ModelServiceForm.TABLE,
                "first_byte_timeout_s",
                Input(f"{d.first_byte_timeout_s:g}", id="first-byte-timeout-s"),
            )
            yield entity_field(
                ModelServiceForm.TABLE, "probe_interval_s", Input(f"{d.probe_interval_s:g}", id="probe-interval-s")
            )
        with Horizontal(classes="form-row"):
            yield entity_field(
                ModelServiceForm.TABLE, "circuit_failures", Input(str(d.circuit_failures), id="circuit-failures")
            )
            yield entity_field(
                ModelServiceForm.TABLE,
                "circuit_cooldown_s",
                Input(f"{d.circuit_cooldown_s:g}", id="circuit-cooldown-s"),
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
            queue_timeout_s=as_number(self.value("queue_timeout_s"), "queue_timeout_s"),
            circuit_failures=int(as_number(self.value("circuit_failures"), "circuit_failures", integer=True)),
            circuit_cooldown_s=as_number(self.value("circuit_cooldown_s"), "circuit_cooldown_s"),
            probe_interval_s=as_number(self.value("probe_interval_s"), "probe_interval_s"),
            first_byte_timeout_s=as_number(self.value("first_byte_timeout_s"), "first_byte_timeout_s"),
        )
