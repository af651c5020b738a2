"""The compiled, immutable routing snapshot of the store that the request path reads.

Built off the event loop from ``repo.load_config`` + ``repo.all_consumer_keys`` and
swapped with one attribute assignment, so a request keeps the snapshot it started with
and never touches the database. Everything is resolved here once (paths, key hashes,
grants, prices) so a request does only dictionary lookups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from store import repo
from store.db import Store
from store.limits_rule import granted_limits
from store.spec import Config, GatewaySpec, ModelServiceSpec, Price
from store.validation import glob_matches, model_matches

from .errors import bad_gateway

ENV_PREFIX = "env:"
#: The route each base path answers with the models of the APIs on it.
MODELS_ROUTE = "/v1/models"


@dataclass(frozen=True, slots=True)
class CompiledKey:
    """A model key; the credential is never in ``repr`` (it may end up in a traceback)."""

    name: str
    credential: str = field(repr=False)
    env_var: str | None = None
    #: Requests in flight with this key at most (0 = unlimited); :mod:`proxy.key_slots` holds it.
    max_concurrency: int = 0

    def resolve(self) -> str:
        """The credential to send, read from the environment at request time for ``env:``."""
        if self.env_var is None:
            return self.credential
        value = os.environ.get(self.env_var)
        if value and ("\n" in value or "\r" in value):  # would split the vendor request's head
            raise bad_gateway(
                f"model key {self.name!r}: the environment variable {self.env_var} holds a line "
                "break; set it to the credential alone",
                code="model_key_unavailable",
            )
        if not value:
            raise bad_gateway(
                f"model key {self.name!r} reads its credential from the environment variable "
                f"{self.env_var}, which is not set in the gateway's environment; set it and "
                "restart the gateway, or give the key a literal credential",
                code="model_key_unavailable",
            )
        return value


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    address: str
    keys: tuple[CompiledKey, ...]
    key_policy: str
    model_policy: str
    default_model: str
    models: list[str]
    unlisted_model: str
    timeout_s: float
    prices: dict[str, Price]
    #: The service's forward proxy setting ("" = the environment's, "none" = never) and extra CA file.
    proxy: str
    ca_file: str
    price_globs: tuple[tuple[str, Price], ...]
    #: Resilience (:mod:`proxy.key_slots`, :mod:`proxy.circuit`, :mod:`proxy.probes`); 0 = off.
    queue_timeout_s: float = 10.0
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    probe_interval_s: float = 0.0
    first_byte_timeout_s: float = 0.0
    #: ``openai`` or ``anthropic``: what the vendor speaks.
    protocol: str = "openai"
    #: ``max_tokens`` for an Anthropic vendor when the request names none.
    default_max_tokens: int = 4096
    #: The vendor serves ``/responses`` itself (else the gateway bridges to chat completions).
    responses: bool = False

    def serves(self, model: str) -> bool:
        """Empty ``models`` = any model; otherwise exact name or glob (the store's one rule)."""
        return model_matches(model, self.models)

    def price_for(self, model: str) -> Price | None:
        exact = self.prices.get(model)
        if exact is not None:
            return exact
        for pattern, price in self.price_globs:
            if glob_matches(model, pattern):
                return price
        return None

    def offered(self) -> list[str]:
        """Concrete model names to show (globs are not model ids)."""
        names = [m for m in self.models if not any(c in m for c in "*?[")]
        if self.default_model and self.default_model not in names:
            names.insert(0, self.default_model)
        return names


@dataclass(frozen=True, slots=True)
class Api:
    name: str
    scenario: str
    base_path: str
    path_simplification: bool
    service_type: str
    services: tuple[Service, ...]
    routing: str
    weights: tuple[int, ...]
    fallbacks: tuple[Service, ...]
    routes: tuple[str, ...] = ()
    #: The response cache: seconds an answer is served again (0 = no cache), key, scope.
    cache_ttl_s: float = 0.0
    cache_key: str = "full"
    cache_scope: str = "consumer"
    #: ``openai`` or ``anthropic``: what the API's clients speak.
    protocol: str = "openai"

    def offered_models(self) -> list[str]:
        out: list[str] = []
        for svc in self.services:
            for m in svc.offered():
                if m not in out:
                    out.append(m)
        return out


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path resolves to: the API and the vendor operation (``/chat/completions``).

    A models listing (``{base_path}/v1/models``) belongs to every API on its base path:
    ``apis`` holds them all (chat and embeddings may share one client ``base_url``), and
    ``api`` is the first of them.
    """

    api: Api
    route: str
    op: str
    models_list: bool = False
    apis: tuple[Api, ...] = ()
    #: Browser origins allowed on this path (``*`` = any; the APIs' ``cors_origins``).
    cors_origins: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Consumer:
    name: str
    enabled: bool
    quota: float
    quota_unit: str
    quota_period: str


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """The most generous per-consumer limits any granting group gives (0 = unlimited)."""

    requests_per_minute: int
    tokens_per_minute: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    gateway: GatewaySpec
    routes: dict[str, Route]
    consumers_by_hash: dict[str, Consumer]
    consumers: dict[str, Consumer]
    grants: dict[str, frozenset[str]]
    limits: dict[tuple[str, str], GroupLimits]
    services: dict[str, Service]
    apis: dict[str, Api]


def _compile_service(s: ModelServiceSpec, creds: dict[str, str], limits: dict[str, int]) -> Service:
    keys = []
    for name in s.keys:
        raw = creds.get(name, "")
        env = raw[len(ENV_PREFIX) :] if raw.startswith(ENV_PREFIX) else None
        keys.append(CompiledKey(name, "" if env else raw, env, limits.get(name, 0)))
    exact = {m: p for m, p in s.prices.items() if not any(c in m for c in "*?[")}
    # The most specific pattern first: "hunyuan-t1-*" before "hunyuan-*" before "*".
    globs = tuple(sorted(((m, p) for m, p in s.prices.items() if m not in exact), key=lambda mp: -len(mp[0])))
    return Service(
        name=s.name,
        address=s.address.rstrip("/"),
        keys=tuple(keys),
        key_policy=s.key_policy,
        model_policy=s.model_policy,
        default_model=s.default_model,
        models=list(s.models),
        unlisted_model=s.unlisted_model,
        timeout_s=float(s.timeout_s),
        prices=exact,
        price_globs=globs,
        proxy=s.proxy,
        ca_file=s.ca_file,
        queue_timeout_s=float(s.queue_timeout_s),
        circuit_failures=int(s.circuit_failures),
        circuit_cooldown_s=float(s.circuit_cooldown_s),
        probe_interval_s=float(s.probe_interval_s),
        first_byte_timeout_s=float(s.first_byte_timeout_s),
        protocol=s.protocol,
        default_max_tokens=s.default_max_tokens,
        responses=s.serves_responses(),
    )


def op_for(route: str) -> str:
    """``/v1/chat/completions`` → ``/chat/completions`` (the part after the vendor's base URL)."""
    return route[3:] if route.startswith("/v1/") else route


def compile_snapshot(cfg: Config, consumer_keys: list[tuple[str, str]], revision: int) -> Snapshot:
    creds = {k.name: k.credential or "" for k in cfg.model_keys}
    concurrency = {k.name: k.max_concurrency for k in cfg.model_keys}
    services = {s.name: _compile_service(s, creds, concurrency) for s in cfg.model_services}
    apis: dict[str, Api] = {}
    routes: dict[str, Route] = {}
    on_path: dict[str, list[Api]] = {}
    origins: dict[str, frozenset[str]] = {}
    for a in cfg.model_apis:
        api = Api(
            name=a.name,
            scenario=a.scenario,
            base_path=a.base_path,
            path_simplification=a.path_simplification,
            service_type=a.service_type,
            services=tuple(services[n] for n in a.services if n in services),
            routing=a.routing,
            weights=tuple(a.weights),
            fallbacks=tuple(services[n] for n in a.fallback_services if n in services),
            routes=tuple(a.routes),
            cache_ttl_s=float(a.cache_ttl_s),
            cache_key=a.cache_key,
            cache_scope=a.cache_scope,
            protocol=a.protocol,
        )
        apis[a.name] = api
        origins[a.name] = frozenset(a.cors_origins)
        for r in a.routes:
            routes[a.base_path + r] = Route(api, r, op_for(r), cors_origins=origins[a.name])
        on_path.setdefault(a.base_path, []).append(api)
    for base, shared in on_path.items():
        routes[base + MODELS_ROUTE] = Route(
            shared[0],
            MODELS_ROUTE,
            "/models",
            models_list=True,
            apis=tuple(shared),
            cors_origins=frozenset().union(*(origins[a.name] for a in shared)),
        )

    consumers = {
        c.name: Consumer(c.name, c.enabled, float(c.quota), c.quota_unit, c.quota_period) for c in cfg.consumers
    }
    by_hash = {h: consumers[n] for h, n in consumer_keys if n in consumers}

    grants: dict[str, set[str]] = {}
    for g in cfg.consumer_groups:
        for c in g.consumers:
            grants.setdefault(c, set()).update(g.model_apis)
    limits = {key: GroupLimits(rpm, tpm) for key, (rpm, tpm) in granted_limits(cfg.consumer_groups).items()}
    return Snapshot(
        revision=revision,
        gateway=cfg.gateway,
        routes=routes,
        consumers_by_hash=by_hash,
        consumers=consumers,
        grants={c: frozenset(a) for c, a in grants.items()},
        limits=limits,
        services=services,
        apis=apis,
    )


def granted_apis(snapshot: Snapshot, route: Route, consumer: str) -> tuple[Api, ...]:
    """The APIs of a models listing whose models ``consumer`` may see: those it is granted."""
    granted = snapshot.grants.get(consumer, frozenset())
    return tuple(a for a in route.apis if a.name in granted)


def model_entry(model: str, owner: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": 0, "owned_by": owner}


def listed_models(apis: tuple[Api, ...]) -> list[dict[str, object]]:
    """OpenAI's model objects for what ``apis`` offer, each once, owned by its first service."""
    seen: set[str] = set()
    out: list[dict[str, object]] = []
    for api in apis:
        for svc in api.services:
            for m in svc.offered():
                if m not in seen:
                    seen.add(m)
                    out.append(model_entry(m, svc.name))
    return out


#: Anthropic's model objects carry a creation time; the gateway's models have none of their own.
_EPOCH = "1970-01-01T00:00:00Z"


def anthropic_model(entry: dict[str, object]) -> dict[str, object]:
    """An OpenAI model object (:func:`model_entry`) in Anthropic's shape."""
    return {"type": "model", "id": entry["id"], "display_name": entry["id"], "created_at": _EPOCH}


def anthropic_models(data: list[dict[str, object]]) -> dict[str, object]:
    """A models listing in Anthropic's shape: one page holding every model."""
    out = [anthropic_model(d) for d in data]
    return {
        "data": out,
        "has_more": False,
        "first_id": out[0]["id"] if out else None,
        "last_id": out[-1]["id"] if out else None,
    }


def find_model(apis: tuple[Api, ...], model: str) -> dict[str, object] | None:
    """The model object of ``model`` if one of ``apis`` offers it, else ``None``.

    Offered = a listed model (a ``default_model`` or a non-glob ``models`` entry) or a name
    a service's ``models`` glob matches. A service with an empty ``models`` forwards any
    model the client names, but that does not make every id exist: a client probing ids
    must be told which ones are really there.
    """
    for entry in listed_models(apis):
        if entry["id"] == model:
            return entry
    for api in apis:
        for svc in api.services:
            if any(c in p for p in svc.models for c in "*?[") and svc.serves(model):
                return model_entry(model, svc.name)
    return None


def read_revision(store: Store) -> int:
    with store.session() as s:
        return repo.get_revision(s)


def load_snapshot(store: Store) -> Snapshot:
    """Blocking (runs in a worker thread): one consistent read of the whole configuration."""
    with store.session() as s:
        revision = repo.get_revision(s)
        cfg = repo.load_config(s)
        keys = repo.all_consumer_keys(s)
    return compile_snapshot(cfg, keys, revision)
