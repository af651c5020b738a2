"""Each entity's fields, declared once: label, hint, placeholder and live check.

The entity forms (``tui/modals/*_form.py``) and the Quick Start steps
(``tui/screens/quickstart/``) show the same fields of the same entities; both build them
with :func:`entity_field` and take their live checks from :func:`live_checks`, so a
label, a hint or a rule's message cannot drift between the two. Which controls a screen
offers (Quick Start picks one route and one service; the form may pick several) stays
with the screen. Placeholders read as examples ("e.g. …"), never as a value already
filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.widget import Widget
from textual.widgets import Input

from store.validation import (
    check_base_path,
    check_credential,
    check_description,
    check_model,
    check_name,
    check_origin,
    check_proxy,
    check_url,
    normalise_base_path,
    normalise_origin,
)

from .widgets.form_field import FormField

#: The one key that shows or hides a typed credential, on every screen that has one.
REVEAL_KEY = "ctrl+l"


@dataclass(frozen=True)
class FieldSpec:
    label: str
    hint: str = ""
    placeholder: str = ""
    check: Callable[[str], str | None] | None = None


def _base_path(value: str) -> str | None:
    return check_base_path(normalise_base_path(value))


def _origins(value: str) -> str | None:
    origins = [o.strip() for o in value.split(",") if o.strip()]
    return next(filter(None, (check_origin(normalise_origin(o)) for o in origins)), None)


_DESCRIPTION = FieldSpec("Description (optional)", check=check_description)

FIELDS: dict[str, dict[str, FieldSpec]] = {
    "model_keys": {
        "name": FieldSpec("Key Name", placeholder="e.g. hunyuan-key", check=check_name),
        "credential": FieldSpec(
            "Credential Content",
            hint=f"Masked; {REVEAL_KEY} shows what you typed. env:VAR reads the variable when a request is sent.",
            placeholder="the vendor's API key, or env:HUNYUAN_API_KEY",
            check=check_credential,
        ),
        "max_concurrency": FieldSpec(
            "Max concurrency (0 = unlimited)",
            hint="Requests in flight with this key at most (Hunyuan allows 5 concurrent sessions per account)",
        ),
        "description": _DESCRIPTION,
    },
    "model_services": {
        "name": FieldSpec("Service Name", placeholder="e.g. hunyuan-service", check=check_name),
        "vendor": FieldSpec("Model Vendor"),
        "protocol": FieldSpec("Model Protocol"),
        "address": FieldSpec(
            "Service Address",
            hint="The vendor's base URL for the protocol; filled from the vendor, editable",
            placeholder="e.g. https://vendor.example/v1",
            check=check_url,
        ),
        "keys": FieldSpec("Model Keys", hint="Used in this order by the key usage policy"),
        "key_policy": FieldSpec("Key Usage Policy"),
        "model_policy": FieldSpec("Model Selection"),
        "default_model": FieldSpec("Default Model", check=check_model),
        "model_picker": FieldSpec("Pick from the vendor's models"),
        "models": FieldSpec(
            "Models served (comma separated, globs allowed; empty = any)", placeholder="e.g. hunyuan-*"
        ),
        "unlisted_model": FieldSpec(
            "A passed-through model not in the list",
            hint="With Model Selection = pass through: what a request for another model gets",
        ),
        "timeout_s": FieldSpec("Timeout (seconds)"),
        "default_max_tokens": FieldSpec(
            "Default max_tokens (Anthropic vendors)", hint="Sent when a translated request names none"
        ),
        "responses": FieldSpec("Responses API (/v1/responses)"),
        "queue_timeout_s": FieldSpec(
            "Queue timeout s (0 = no wait)", hint="How long a request waits for a key below its max concurrency"
        ),
        "first_byte_timeout_s": FieldSpec(
            "First byte timeout s (0 = off)", hint="A vendor silent this long is given up for the fallback"
        ),
        "probe_interval_s": FieldSpec("Probe every s (0 = off)", hint="GET {address}/models with the first key"),
        "circuit_failures": FieldSpec(
            "Circuit: failures to open (0 = off)", hint="Consecutive failures that make the service skipped"
        ),
        "circuit_cooldown_s": FieldSpec("Circuit: cool-down s", hint="How long an open circuit skips the service"),
        "proxy": FieldSpec(
            "Outbound proxy",
            hint="Empty: the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY; none: always direct",
            placeholder="e.g. http://proxy.internal:3128",
            check=check_proxy,
        ),
        "ca_file": FieldSpec(
            "CA file (PEM)",
            hint="Certificates trusted for this vendor, on top of the system's",
            placeholder="e.g. /etc/ssl/vendor-ca.pem",
        ),
        "prices": FieldSpec(
            "Prices per 1M tokens (model=input/output; …)",
            hint="Per 1M tokens, from the vendor's price list. Without a price a request's cost is recorded as 0",
            placeholder="e.g. my-model=0.8/2.0; other-*=1/3",
        ),
        "description": _DESCRIPTION,
    },
    "model_apis": {
        "name": FieldSpec("API Name", placeholder="e.g. hunyuan-api", check=check_name),
        "scenario": FieldSpec("Usage scenario"),
        "protocol": FieldSpec("Request Protocol"),
        "routes": FieldSpec("Routes"),
        "base_path": FieldSpec(
            "Base Path",
            hint="Clients call {public URL}{base path}{route}; empty serves at the root /",
            placeholder="e.g. /hunyuan (empty = the root /)",
            check=_base_path,
        ),
        "path_simplification": FieldSpec(
            "Path Simplification",
            hint="On: the vendor gets {address}/chat/completions. Off: {address}{base path}/chat/completions",
        ),
        "service_type": FieldSpec("Service Type"),
        "services": FieldSpec("Model Services"),
        "routing": FieldSpec("Routing (multiple services)"),
        "weights": FieldSpec("Weights (1–100, one per service)", placeholder="e.g. 70, 30"),
        "fallback_services": FieldSpec("Fallback services (tried in order on failure)"),
        "cache_ttl_s": FieldSpec("Cache answers for (s)", hint="Repeats answered without a vendor call; 0 = no cache"),
        "cache_key": FieldSpec("Cache key"),
        "cache_scope": FieldSpec("Cache scope"),
        "cors_origins": FieldSpec(
            "Browser origins (CORS, optional)",
            hint="Pages on these origins may call the API from a browser; empty = none",
            placeholder="e.g. https://app.example.com, *",
            check=_origins,
        ),
        "description": _DESCRIPTION,
    },
    "consumers": {
        "name": FieldSpec("Consumer Name", placeholder="e.g. my-app", check=check_name),
        "enabled": FieldSpec("Enabled", hint="A disabled consumer's keys are refused with 401"),
        "quota": FieldSpec("Quota (0 = unlimited)"),
        "quota_unit": FieldSpec("Unit"),
        "quota_period": FieldSpec("Period"),
        "create_key": FieldSpec("API key"),
        "description": _DESCRIPTION,
    },
    "consumer_groups": {
        "name": FieldSpec("Group Name", placeholder="e.g. my-apps", check=check_name),
        "consumers": FieldSpec("Consumers (members)"),
        "model_apis": FieldSpec("Authorized Model APIs"),
        "requests_per_minute": FieldSpec("Requests per minute (per consumer, 0 = unlimited)"),
        "tokens_per_minute": FieldSpec("Tokens per minute (per consumer, 0 = unlimited)"),
        "description": _DESCRIPTION,
    },
}


def entity_field(table: str, name: str, control: Widget, *, hint: str | None = None) -> FormField:
    """``control`` under the one label of ``table.name`` with its hint (``hint`` replaces it
    when the screen knows better, e.g. "no model keys yet"); an ``Input`` without a
    placeholder gets the declared one."""
    spec = FIELDS[table][name]
    if isinstance(control, Input) and not control.placeholder and spec.placeholder:
        control.placeholder = spec.placeholder
    return FormField(spec.label, control, field=name, hint=hint or spec.hint)


def live_checks(table: str) -> dict[str, Callable[[str], str | None]]:
    """The ``store.validation`` check of each text field of ``table``, run as the user types."""
    return {name: spec.check for name, spec in FIELDS[table].items() if spec.check is not None}
