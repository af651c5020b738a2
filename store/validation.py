"""The one source of configuration rules, used by the console, ``aigw import`` and the gateway.

Two layers:

* field checks (``check_*``) return a message or ``None``; a console form calls them
  as the user types, so inline messages and import errors are the same words;
* :func:`validate_config` normalises a whole :class:`~store.spec.Config` in place and
  checks every field, reference and uniqueness rule, raising one :class:`StoreError`
  whose entries name the table, the entry and the field.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import re
import ssl
from urllib.parse import urlsplit

from .errors import ErrorList
from .keys import check_plain_key, hash_key
from .presets import PRESETS, VENDORS
from .spec import (
    CACHE_KEYS,
    CACHE_SCOPES,
    KEY_POLICIES,
    MAX_CACHE_TTL_S,
    MODEL_POLICIES,
    PROTOCOL_ROUTES,
    PROTOCOLS,
    QUOTA_PERIODS,
    QUOTA_UNITS,
    REDIS_FAILURE_MODES,
    ROUTINGS,
    SCENARIOS,
    SERVICE_TYPES,
    UNLISTED_MODEL,
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelServiceSpec,
)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
ENV_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-\[\]*?]{0,255}$")
SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+$")
ORIGIN_RE = re.compile(r"^[a-z][a-z0-9+.-]*://(?:\[[0-9a-f:.]+\]|[a-z0-9._~-]+)(?::(?P<port>[0-9]{1,5}))?$")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_DESCRIPTION = 1024
MAX_CREDENTIAL = 8192
MAX_TIMEOUT_S = 3600.0
MAX_CONCURRENCY = 100_000
MAX_CIRCUIT_FAILURES = 1000


def one_of(value: object, allowed: tuple[str, ...]) -> str | None:
    if value in allowed:
        return None
    return f"{value!r} is not one of: {', '.join(allowed)}"


def check_name(value: str) -> str | None:
    if not isinstance(value, str) or not value:
        return "a name is required"
    if len(value) > 64:
        return f"name is {len(value)} characters long; at most 64"
    if not NAME_RE.fullmatch(value):
        return f"{value!r} is not a valid name: use a-z, 0-9, '-', '_' or '.', starting with a letter or digit"
    return None


def check_description(value: str) -> str | None:
    if len(value) > MAX_DESCRIPTION:
        return f"description is {len(value)} characters long; at most {MAX_DESCRIPTION}"
    if any(ord(c) < 32 and c not in "\t" for c in value):
        return "description must be one line without control characters"
    return None


def check_credential(value: str | None) -> str | None:
    if value is None or value == "":
        return "a credential is required: the vendor API key, or env:VAR to read it at request time"
    if len(value) > MAX_CREDENTIAL:
        return f"credential is too long (at most {MAX_CREDENTIAL} characters)"
    if value != value.strip() or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return "credential must not contain spaces, line breaks or control characters"
    if value.startswith("env:") and not ENV_VAR_RE.fullmatch(value[4:]):
        return "env: must be followed by an environment variable name, e.g. env:HUNYUAN_API_KEY"
    return None


def normalise_url(value: str) -> str:
    return value.strip().rstrip("/")


def check_url(value: str, *, what: str = "address") -> str | None:
    if not value:
        return f"{what} is required"
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"{value!r} is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"{what} must start with http:// or https:// (got {value!r})"
    if not parts.hostname:
        return f"{what} {value!r} has no host"
    if parts.username or parts.password:
        return f"{what} must not carry credentials; put the key in a Model Key"
    if parts.query or parts.fragment:
        return f"{what} must not have a query or fragment"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{what} {value!r} has an invalid port"
    if any(c.isspace() for c in value):
        return f"{what} must not contain spaces"
    return None


def check_proxy(value: str) -> str | None:
    """Empty (the environment's proxy), ``none``, or an ``http://`` forward proxy URL.

    The value is never echoed: its userinfo may hold the proxy's password.
    """
    value = value.strip()
    if not value or value.lower() == "none":
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a valid proxy URL; use http://host:port, or none"
    if parts.scheme != "http":
        return "must be an http:// forward proxy URL (http://[user:password@]host:port), or none for no proxy"
    if not parts.hostname:
        return "the proxy URL has no host"
    if parts.path not in ("", "/") or parts.query or parts.fragment or any(c.isspace() for c in value):
        return "must be only http://[user:password@]host:port"
    return None


def check_ca_file(value: str) -> str | None:
    """Empty, or a readable PEM file of at least one certificate (loaded as the gateway will)."""
    if not value:
        return None
    try:
        with open(value, "rb") as f:
            data = f.read(16 * 1024 * 1024)
    except OSError as exc:
        return f"cannot read {value}: {exc.strerror or exc}"
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return f"{value} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    try:
        # A bare client context: the system trust store (which the gateway adds) says nothing
        # about this file, and loading it costs tens of milliseconds on every validation.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        return f"{value} is not a valid PEM certificate file ({exc.reason if isinstance(exc, ssl.SSLError) else exc})"
    return None


def check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"port in {value!r} must be a number from 1 to 65535"
    if any(c.isspace() for c in host) or "/" in host:
        return f"host in {value!r} is not valid"
    return None


def normalise_base_path(value: str) -> str:
    value = value.strip()
    if value and not value.startswith("/"):
        value = "/" + value
    return value.rstrip("/")


def check_base_path(value: str) -> str | None:
    """``value`` already normalised. Empty means the root (one API may live there)."""
    if value == "":
        return None
    if len(value) > 200:
        return "base path is too long (at most 200 characters)"
    if "?" in value or "#" in value:
        return "base path must not contain a query ('?') or fragment ('#')"
    if "%" in value:
        return "base path must not contain percent-encoded characters"
    if "//" in value:
        return "base path must not contain '//'"
    for seg in value.split("/")[1:]:
        if seg in (".", ".."):
            return "base path must not contain '.' or '..' segments"
        if not SEGMENT_RE.fullmatch(seg):
            return f"base path segment {seg!r} may only hold letters, digits, '.', '_', '~', '-'"
    return None


def check_model(value: str, *, glob: bool = False) -> str | None:
    if not value:
        return "a model name is required"
    if not MODEL_RE.fullmatch(value) or (not glob and any(c in value for c in "*?[]")):
        return f"{value!r} is not a valid model name" + (" or pattern" if glob else "")
    return None


def model_matches(model: str, patterns: list[str]) -> bool:
    """Empty list = any model; otherwise exact name or glob (``hunyuan-*``)."""
    if not patterns:
        return True
    return any(p == model or glob_matches(model, p) for p in patterns)


@functools.lru_cache(maxsize=4096)
def glob_matches(model: str, pattern: str) -> bool:
    """``fnmatchcase``, remembered: the gateway asks it for every request (which service
    serves the model, its price), always of the same few names. Bounded: the names come
    from clients."""
    return fnmatch.fnmatchcase(model, pattern)


def check_number(
    value: object, *, lo: float, hi: float | None = None, integer: bool = False, lo_open: bool = False
) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a number"
    if integer and not isinstance(value, int):
        return f"{value!r} is not a whole number"
    if not math.isfinite(value):
        return "must be a finite number"
    if value < lo or (lo_open and value == lo):
        return f"must be {'greater than' if lo_open else 'at least'} {lo:g}"
    if hi is not None and value > hi:
        return f"must be at most {hi:g}"
    return None


def _dups(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({x for x in items if x in seen or seen.add(x)})  # type: ignore[func-returns-value]


# ---------------------------------------------------------------- per entity


def normalise_service(s: ModelServiceSpec) -> None:
    s.address = normalise_url(s.address)
    s.proxy = s.proxy.strip()
    if s.proxy.lower() == "none":
        s.proxy = "none"
    s.ca_file = s.ca_file.strip()
    if s.ca_file:  # the gateway may run from another folder than the import
        s.ca_file = os.path.abspath(os.path.expanduser(s.ca_file))
    if not s.address and s.vendor in PRESETS:
        s.address = PRESETS[s.vendor].address_for(s.protocol)


def check_service(s: ModelServiceSpec, err: ErrorList) -> None:
    t, n = "model_services", s.name
    if m := check_description(s.description):
        err.add(t, n, "description", m)
    if m := one_of(s.vendor, VENDORS):
        err.add(t, n, "vendor", m)
    if m := one_of(s.protocol, PROTOCOLS):
        err.add(t, n, "protocol", m)
    if not s.address and s.vendor == "custom":
        err.add(t, n, "address", "address is required for vendor 'custom' (the vendor's OpenAI base URL)")
    elif not s.address and s.protocol == "anthropic":
        err.add(
            t, n, "address", f"vendor {s.vendor!r} has no preset Anthropic address; give the vendor's Messages base URL"
        )
    elif m := check_url(s.address):
        err.add(t, n, "address", m)
    if not s.keys:
        err.add(t, n, "keys", "at least one model key is required")
    for d in _dups(s.keys):
        err.add(t, n, "keys", f"key {d!r} is listed twice")
    if m := one_of(s.key_policy, KEY_POLICIES):
        err.add(t, n, "key_policy", m)
    if m := one_of(s.model_policy, MODEL_POLICIES):
        err.add(t, n, "model_policy", m)
    if m := one_of(s.unlisted_model, UNLISTED_MODEL):
        err.add(t, n, "unlisted_model", m)
    for pat in s.models:
        if m := check_model(pat, glob=True):
            err.add(t, n, "models", m)
    if s.default_model:
        if m := check_model(s.default_model):
            err.add(t, n, "default_model", m)
        elif not model_matches(s.default_model, s.models):
            err.add(t, n, "default_model", f"{s.default_model!r} is not in this service's models")
    elif s.model_policy == "specified":
        err.add(t, n, "default_model", "a default model is required with model_policy 'specified'")
    elif s.unlisted_model == "default":
        err.add(t, n, "default_model", "a default model is required with unlisted_model 'default'")
    if m := check_number(s.timeout_s, lo=0, hi=MAX_TIMEOUT_S, lo_open=True):
        err.add(t, n, "timeout_s", m)
    check_resilience(s, err)
    if m := check_number(s.default_max_tokens, lo=1, hi=10_000_000, integer=True):
        err.add(t, n, "default_max_tokens", m)
    if s.responses and s.protocol != "openai":
        err.add(t, n, "responses", "responses applies to openai services only; set it to false or remove it")
    if m := check_proxy(s.proxy):
        err.add(t, n, "proxy", m)
    if m := check_ca_file(s.ca_file):
        err.add(t, n, "ca_file", m)
    for model, price in s.prices.items():
        if m := check_model(model, glob=True):
            err.add(t, n, f"prices.{model}", m)
        for side in ("input", "output"):
            if m := check_number(getattr(price, side), lo=0, hi=1e9):
                err.add(t, n, f"prices.{model}.{side}", m)


def check_resilience(s: ModelServiceSpec, err: ErrorList) -> None:
    """The service's queue, circuit breaker, probe and first-byte settings (0 = off, except the cool-down)."""
    t, n = "model_services", s.name
    for f in ("queue_timeout_s", "probe_interval_s"):
        if m := check_number(getattr(s, f), lo=0, hi=MAX_TIMEOUT_S):
            err.add(t, n, f, m)
    if m := check_number(s.circuit_failures, lo=0, hi=MAX_CIRCUIT_FAILURES, integer=True):
        err.add(t, n, "circuit_failures", m)
    if m := check_number(s.circuit_cooldown_s, lo=0, hi=MAX_TIMEOUT_S, lo_open=True):
        err.add(t, n, "circuit_cooldown_s", m)
    fb = s.first_byte_timeout_s
    if m := check_number(fb, lo=0, hi=MAX_TIMEOUT_S):
        err.add(t, n, "first_byte_timeout_s", m)
    elif isinstance(s.timeout_s, int | float) and fb > s.timeout_s:
        err.add(t, n, "first_byte_timeout_s", f"must be at most timeout_s ({s.timeout_s:g}); 0 = only timeout_s")


def check_max_concurrency(value: object) -> str | None:
    return check_number(value, lo=0, hi=MAX_CONCURRENCY, integer=True)


def normalise_origin(value: str) -> str:
    """Origins compare as browsers send them: lower case, no trailing slash."""
    v = value.strip()
    return v if v == "*" else v.rstrip("/").lower()


def check_origin(value: str) -> str | None:
    """``*`` or ``scheme://host[:port]``: what a browser sends in ``Origin``, never a path."""
    if value == "*":
        return None
    m = ORIGIN_RE.match(value)
    if m is None:
        return f"{value!r} is not an origin; use scheme://host[:port] (e.g. https://app.example.com) or *"
    port = m.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return f"{value!r}: port must be 1-65535"
    return None


def normalise_api(a: ModelApiSpec) -> None:
    a.base_path = normalise_base_path(a.base_path)
    a.cors_origins = [normalise_origin(o) for o in a.cors_origins]
    offered = PROTOCOL_ROUTES.get(a.protocol, {}).get(a.scenario)
    if not a.routes and offered:
        a.routes = [offered[0]]


def check_api(a: ModelApiSpec, err: ErrorList) -> None:
    t, n = "model_apis", a.name
    if m := check_description(a.description):
        err.add(t, n, "description", m)
    if m := one_of(a.scenario, SCENARIOS):
        err.add(t, n, "scenario", m)
    if m := one_of(a.protocol, PROTOCOLS):
        err.add(t, n, "protocol", m)
    scenarios = PROTOCOL_ROUTES.get(a.protocol, {})
    allowed = scenarios.get(a.scenario, ())
    if scenarios and a.scenario in SCENARIOS and not allowed:
        err.add(t, n, "scenario", f"protocol {a.protocol!r} offers scenario {', '.join(scenarios)} only")
    for r in a.routes:
        if allowed and r not in allowed:
            err.add(
                t,
                n,
                "routes",
                f"route {r!r} is not offered by protocol {a.protocol!r} with scenario {a.scenario!r}; "
                f"use {', '.join(allowed)}",
            )
    for d in _dups(a.routes):
        err.add(t, n, "routes", f"route {d!r} is listed twice")
    if m := check_base_path(a.base_path):
        err.add(t, n, "base_path", m)
    if m := one_of(a.service_type, SERVICE_TYPES):
        err.add(t, n, "service_type", m)
    if not a.services:
        err.add(t, n, "services", "at least one model service is required")
    elif a.service_type == "single" and len(a.services) != 1:
        err.add(t, n, "services", f"service_type 'single' takes exactly one service, got {len(a.services)}")
    for d in _dups(a.services):
        err.add(t, n, "services", f"service {d!r} is listed twice")
    if m := one_of(a.routing, ROUTINGS):
        err.add(t, n, "routing", m)
    if a.service_type == "multi" and a.routing == "weight":
        if len(a.weights) != len(a.services):
            err.add(
                t,
                n,
                "weights",
                f"routing 'weight' needs one weight per service ({len(a.services)}), got {len(a.weights)}",
            )
        for w in a.weights:
            if m := check_number(w, lo=1, hi=100, integer=True):
                err.add(t, n, "weights", f"weight {w!r}: {m}")
    elif a.weights:
        err.add(t, n, "weights", "weights apply only to service_type 'multi' with routing 'weight'")
    for d in _dups(a.fallback_services):
        err.add(t, n, "fallback_services", f"service {d!r} is listed twice")
    for f in a.fallback_services:
        if f in a.services:
            err.add(t, n, "fallback_services", f"{f!r} is already one of the API's services")
    for o in a.cors_origins:
        if m := check_origin(o):
            err.add(t, n, "cors_origins", m)
    for d in _dups(a.cors_origins):
        err.add(t, n, "cors_origins", f"origin {d!r} is listed twice")
    if m := check_cache_ttl(a.cache_ttl_s):
        err.add(t, n, "cache_ttl_s", m)
    if m := one_of(a.cache_key, CACHE_KEYS):
        err.add(t, n, "cache_key", m)
    if m := one_of(a.cache_scope, CACHE_SCOPES):
        err.add(t, n, "cache_scope", m)


def check_cache_ttl(value: object) -> str | None:
    """Whole seconds, 0 (no cache) up to 30 days."""
    return check_number(value, lo=0, hi=MAX_CACHE_TTL_S, integer=True)


def check_cache_max_mb(value: object) -> str | None:
    """Whole MiB, 0 (nothing cached) up to 64 GiB."""
    return check_number(value, lo=0, hi=65536, integer=True)


def route_overlaps(apis: list[ModelApiSpec]) -> list[tuple[str, str, str]]:
    """``(api, request path, api already answering it)`` for each request path two APIs claim.

    APIs may share a base path (chat and embeddings behind one client ``base_url``) as long
    as none of their routes is the same request path: ``{base_path}/v1/models`` is not one
    of them (no scenario offers it as a route), it lists the models of every API on the path.
    """
    owners: dict[str, str] = {}
    out: list[tuple[str, str, str]] = []
    for a in apis:
        for r in a.routes:
            path = a.base_path + r
            other = owners.setdefault(path, a.name)
            if other != a.name:
                out.append((a.name, path, other))
                break
    return out


def check_consumer(c: ConsumerSpec, err: ErrorList) -> None:
    t, n = "consumers", c.name
    if m := check_description(c.description):
        err.add(t, n, "description", m)
    if not isinstance(c.enabled, bool):
        err.add(t, n, "enabled", "must be true or false")
    if m := check_number(c.quota, lo=0):
        err.add(t, n, "quota", m)
    if m := one_of(c.quota_unit, QUOTA_UNITS):
        err.add(t, n, "quota_unit", m)
    if m := one_of(c.quota_period, QUOTA_PERIODS):
        err.add(t, n, "quota_period", m)
    for k in c.api_keys:
        if m := check_plain_key(k):
            err.add(t, n, "api_keys", m)
    for h in c.api_key_hashes or []:
        if not HASH_RE.fullmatch(h):
            err.add(t, n, "api_key_hashes", f"{h[:20]!r}… is not 'sha256:' followed by 64 hex digits")


def check_group(g: ConsumerGroupSpec, err: ErrorList) -> None:
    t, n = "consumer_groups", g.name
    if m := check_description(g.description):
        err.add(t, n, "description", m)
    for fld in ("requests_per_minute", "tokens_per_minute"):
        if m := check_number(getattr(g, fld), lo=0, hi=1e12, integer=True):
            err.add(t, n, fld, m)
    for fld in ("consumers", "model_apis"):
        for d in _dups(getattr(g, fld)):
            err.add(t, n, fld, f"{d!r} is listed twice")


def check_gateway(g: GatewaySpec, err: ErrorList) -> None:
    g.public_url = normalise_url(g.public_url)
    if m := check_listen(g.listen):
        err.add("gateway", "", "listen", m)
    if m := check_listen(g.admin_listen):
        err.add("gateway", "", "admin_listen", m)
    if g.listen == g.admin_listen:
        err.add("gateway", "", "admin_listen", "must differ from listen")
    if g.public_url and (m := check_url(g.public_url, what="public_url")):
        err.add("gateway", "", "public_url", m)
    if m := check_number(g.max_connections, lo=1, hi=1_000_000, integer=True):
        err.add("gateway", "", "max_connections", m)
    if m := check_cache_max_mb(g.cache_max_mb):
        err.add("gateway", "", "cache_max_mb", m)
    if m := check_redis_url(g.redis_url):
        err.add("gateway", "", "redis_url", m)
    if g.redis_failure not in REDIS_FAILURE_MODES:
        err.add("gateway", "", "redis_failure", f"must be one of {', '.join(REDIS_FAILURE_MODES)}")
    if m := check_workers(g.workers):
        err.add("gateway", "", "workers", m)


#: More worker processes than this is a typo, not a machine.
MAX_WORKERS = 1024


def check_workers(workers: int | str) -> str | None:
    if workers == "auto":
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        return f'must be a number of processes from 1 to {MAX_WORKERS}, or "auto" (one per CPU)'
    return None


def check_redis_url(url: str) -> str | None:
    """Empty (limits in memory), or ``redis://`` / ``rediss://`` (TLS) with a host."""
    if not url:
        return None
    if any(c.isspace() for c in url):
        return "must not contain spaces"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        return "must start with redis:// or rediss:// (TLS), e.g. redis://127.0.0.1:6379/0"
    if not rest.rpartition("@")[2].split("/")[0].split("?")[0]:
        return "names no host, e.g. redis://127.0.0.1:6379/0"
    return None


# ---------------------------------------------------------------- the whole


def normalise(cfg: Config) -> None:
    for s in cfg.model_services:
        normalise_service(s)
    for a in cfg.model_apis:
        normalise_api(a)
    cfg.gateway.public_url = normalise_url(cfg.gateway.public_url)


def validate_config(cfg: Config) -> None:
    """Normalise ``cfg`` in place and raise :class:`StoreError` listing every problem."""
    normalise(cfg)
    err = ErrorList()
    check_gateway(cfg.gateway, err)
    tables: list[tuple[str, list]] = [  # type: ignore[type-arg]
        ("model_keys", cfg.model_keys),
        ("model_services", cfg.model_services),
        ("model_apis", cfg.model_apis),
        ("consumers", cfg.consumers),
        ("consumer_groups", cfg.consumer_groups),
    ]
    for table, items in tables:
        names = [x.name for x in items]
        for x in items:
            if m := check_name(x.name):
                err.add(table, x.name, "name", m)
        for d in _dups(names):
            err.add(table, d, "name", f"{d!r} is defined twice")

    for k in cfg.model_keys:
        if m := check_credential(k.credential):
            err.add("model_keys", k.name, "credential", m)
        if m := check_description(k.description):
            err.add("model_keys", k.name, "description", m)
        if m := check_max_concurrency(k.max_concurrency):
            err.add("model_keys", k.name, "max_concurrency", m)

    key_names = {k.name for k in cfg.model_keys}
    service_names = {s.name for s in cfg.model_services}
    api_names = {a.name for a in cfg.model_apis}
    consumer_names = {c.name for c in cfg.consumers}

    for s in cfg.model_services:
        check_service(s, err)
        for key_name in s.keys:
            if key_name not in key_names:
                err.add("model_services", s.name, "keys", f"model key {key_name!r} does not exist")

    for a in cfg.model_apis:
        check_api(a, err)
        for service_name in [*a.services, *a.fallback_services]:
            if service_name not in service_names:
                fld = "services" if service_name in a.services else "fallback_services"
                err.add("model_apis", a.name, fld, f"model service {service_name!r} does not exist")
    for name, path, other in route_overlaps(cfg.model_apis):
        err.add("model_apis", name, "base_path", f"request path {path!r} is already served by model API {other!r}")
    spoken: dict[str, ModelApiSpec] = {}
    for a in cfg.model_apis:  # one models listing per base path, in one protocol's shape
        first = spoken.setdefault(a.base_path, a)
        if first.protocol != a.protocol:
            err.add(
                "model_apis",
                a.name,
                "base_path",
                f"base path {a.base_path!r} is used by model API {first.name!r}, which speaks "
                f"{first.protocol!r}; APIs sharing a base path must speak one protocol",
            )

    owners: dict[str, str] = {}
    for c in cfg.consumers:
        check_consumer(c, err)
        plain = ["sha256:" + hash_key(k) for k in c.api_keys]
        hashes = list(c.api_key_hashes or [])
        if _dups(plain) or _dups(hashes):
            err.add("consumers", c.name, "api_keys", "the same API key is listed twice")
        # A plain key whose digest is already stored for this consumer is simply kept.
        for h in sorted(set(hashes) | set(plain)):
            other = owners.setdefault(h, c.name)
            if other != c.name:
                err.add("consumers", c.name, "api_keys", f"an API key is already registered to consumer {other!r}")

    for g in cfg.consumer_groups:
        check_group(g, err)
        for consumer_name in g.consumers:
            if consumer_name not in consumer_names:
                err.add("consumer_groups", g.name, "consumers", f"consumer {consumer_name!r} does not exist")
        for api_name in g.model_apis:
            if api_name not in api_names:
                err.add("consumer_groups", g.name, "model_apis", f"model API {api_name!r} does not exist")

    err.raise_if_any()


def referrers(cfg: Config, table: str, name: str) -> list[str]:
    """Who uses ``table[name]``, as ``"model_services[x]"`` strings — the delete refusal text."""
    out: list[str] = []
    if table == "model_keys":
        out = [f"model service {s.name!r}" for s in cfg.model_services if name in s.keys]
    elif table == "model_services":
        out = [f"model API {a.name!r}" for a in cfg.model_apis if name in a.services or name in a.fallback_services]
    elif table == "model_apis":
        out = [f"consumer group {g.name!r}" for g in cfg.consumer_groups if name in g.model_apis]
    elif table == "consumers":
        out = [f"consumer group {g.name!r}" for g in cfg.consumer_groups if name in g.consumers]
    return out
