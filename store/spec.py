"""The configuration as plain data: every entity, references by name.

This is the shape users think in (the TOML document, a console form), and the one
shape the validator checks. The database rows in :mod:`store.models` are its storage;
the gateway compiles a :class:`Config` into its routing snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Enumerations. Tuples keep the order the console offers them in.
PROTOCOLS = ("openai", "anthropic")
KEY_POLICIES = ("polling", "random", "failover")
MODEL_POLICIES = ("specified", "passthrough")
UNLISTED_MODEL = ("refuse", "default")
SCENARIOS = ("text-generation", "embeddings")
SERVICE_TYPES = ("single", "multi")
ROUTINGS = ("model", "weight")
QUOTA_UNITS = ("tokens", "requests", "cost")
QUOTA_PERIODS = ("day", "week", "month", "total")
CACHE_KEYS = ("full", "last_user_message")
CACHE_SCOPES = ("consumer", "api")

#: Routes each scenario may expose on an ``openai`` API; the first is the default.
SCENARIO_ROUTES: dict[str, tuple[str, ...]] = {
    "text-generation": ("/v1/chat/completions", "/v1/completions", "/v1/responses"),
    "embeddings": ("/v1/embeddings",),
}
#: Routes per API protocol and scenario; the first is the default. A protocol offers
#: only the scenarios listed here.
PROTOCOL_ROUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "openai": SCENARIO_ROUTES,
    "anthropic": {"text-generation": ("/v1/messages", "/v1/messages/count_tokens")},
}
#: What an Anthropic vendor is told when a request sets no ``max_tokens`` (it requires one).
DEFAULT_MAX_TOKENS = 4096

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_ADMIN_LISTEN = "127.0.0.1:8081"
DEFAULT_MAX_CONNECTIONS = 10_000
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_QUEUE_TIMEOUT_S = 10.0
DEFAULT_CIRCUIT_FAILURES = 5
DEFAULT_CIRCUIT_COOLDOWN_S = 30.0
DEFAULT_CACHE_MAX_MB = 64
#: The longest a cached answer may be kept: 30 days.
MAX_CACHE_TTL_S = 30 * 24 * 3600
#: What the limiter does while Redis cannot be reached.
REDIS_FAILURE_MODES = ("local", "refuse")


@dataclass
class GatewaySpec:
    listen: str = DEFAULT_LISTEN
    public_url: str = ""
    admin_listen: str = DEFAULT_ADMIN_LISTEN
    #: Client connections the data plane keeps open at most; past it new ones are closed at once.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Memory for cached answers (MiB, least recently used out first); 0 = nothing is cached.
    cache_max_mb: int = DEFAULT_CACHE_MAX_MB
    #: Limit state shared by every gateway naming this Redis (empty = in this instance's memory).
    redis_url: str = ""
    #: While Redis cannot be reached: ``local`` (each process counts alone) or ``refuse`` (503).
    redis_failure: str = "local"
    #: Data-plane processes of one ``aigw serve``: a number, or ``"auto"`` (one per CPU).
    workers: int | str = 1

    def effective_public_url(self) -> str:
        """``public_url``, or ``http://{listen}`` when unset (wildcard hosts shown as loopback)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return loopback_url(self.listen)


def loopback_url(listen: str) -> str:
    """``http://host:port`` that reaches a listen address from this machine: a wildcard host
    (``0.0.0.0``, ``::`` or none) becomes the loopback of its family."""
    return listen_url(listen)


def listen_url(listen: str, machine: str | None = None) -> str:
    """``http://host:port`` that reaches a listen address of ``machine`` (a host name), or of
    this machine when ``None``: a wildcard host stands for every address of the machine it
    runs on, so it becomes ``machine``, or here the loopback of its family."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in _WILDCARDS:
        host = machine or ("::1" if host == "::" else "127.0.0.1")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_loopback(listen: str) -> bool:
    """The host of a listen address is this machine only (``127.x``, ``::1``, ``localhost``):
    nothing on another machine can reach it."""
    host = listen.rpartition(":")[0].strip("[]").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


_WILDCARDS = ("", "0.0.0.0", "::")


@dataclass
class ModelKeySpec:
    name: str
    #: The vendor key, or ``env:VAR``. ``None`` only while importing a secret-less export
    #: over an existing key (the stored credential is kept).
    credential: str | None = None
    description: str = ""
    #: Requests in flight with this key at most (0 = unlimited).
    max_concurrency: int = 0


@dataclass
class Price:
    input: float = 0.0
    output: float = 0.0


@dataclass
class ModelServiceSpec:
    name: str
    vendor: str = "custom"
    protocol: str = "openai"
    address: str = ""
    keys: list[str] = field(default_factory=list)
    key_policy: str = "polling"
    model_policy: str = "specified"
    default_model: str = ""
    models: list[str] = field(default_factory=list)
    unlisted_model: str = "refuse"
    timeout_s: float = DEFAULT_TIMEOUT_S
    prices: dict[str, Price] = field(default_factory=dict)
    #: Forward proxy for this vendor: "" = the environment's, "none" = never, else http://host:port.
    proxy: str = ""
    #: A PEM file of certificates to trust for this vendor, on top of the system's.
    ca_file: str = ""
    #: ``max_tokens`` sent to an Anthropic service when an OpenAI request names none.
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    #: Whether the vendor serves the Responses API itself (passed through) or
    #: ``/v1/responses`` is bridged to chat completions. ``None`` = the vendor's default
    #: (:func:`responses_default`), kept as ``None`` so an export round-trips it.
    responses: bool | None = None
    description: str = ""
    #: How long a request waits for a free key slot (0 = no waiting).
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    #: Consecutive retryable failures that open the circuit (0 = no breaker), and for how long.
    circuit_failures: int = DEFAULT_CIRCUIT_FAILURES
    circuit_cooldown_s: float = DEFAULT_CIRCUIT_COOLDOWN_S
    #: Seconds between active probes (0 = no probes).
    probe_interval_s: float = 0.0
    #: The vendor's first byte is due this long after the request (0 = only ``timeout_s``).
    first_byte_timeout_s: float = 0.0

    def serves_responses(self) -> bool:
        """``responses``, or the vendor's default when unset."""
        return responses_default(self.vendor, self.protocol) if self.responses is None else self.responses


def responses_default(vendor: str, protocol: str) -> bool:
    """Only OpenAI itself serves the Responses API among the presets."""
    return vendor == "openai" and protocol == "openai"


@dataclass
class ModelApiSpec:
    name: str
    scenario: str = "text-generation"
    protocol: str = "openai"
    routes: list[str] = field(default_factory=list)
    base_path: str = ""
    path_simplification: bool = True
    service_type: str = "single"
    services: list[str] = field(default_factory=list)
    routing: str = "model"
    weights: list[int] = field(default_factory=list)
    fallback_services: list[str] = field(default_factory=list)
    description: str = ""
    #: Browser origins allowed to call the API (``*`` = any); empty = no CORS answers.
    cors_origins: list[str] = field(default_factory=list)
    #: Seconds a complete answer is served again from the cache (0 = no cache).
    cache_ttl_s: int = 0
    #: What makes two requests the same: the whole body, or the model and last user message.
    cache_key: str = "full"
    #: ``consumer``: each consumer gets only its own cached answers; ``api``: shared.
    cache_scope: str = "consumer"


@dataclass
class ConsumerSpec:
    name: str
    enabled: bool = True
    #: Plain keys to register (import only; hashed before storing, never exported).
    api_keys: list[str] = field(default_factory=list)
    #: ``sha256:<hex>`` digests. ``None`` = leave the stored keys as they are.
    api_key_hashes: list[str] | None = None
    quota: float = 0
    quota_unit: str = "tokens"
    quota_period: str = "month"
    description: str = ""


@dataclass
class ConsumerGroupSpec:
    name: str
    consumers: list[str] = field(default_factory=list)
    model_apis: list[str] = field(default_factory=list)
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    description: str = ""


@dataclass
class Config:
    """The whole configuration. Lists are in the store's order (by name)."""

    gateway: GatewaySpec = field(default_factory=GatewaySpec)
    model_keys: list[ModelKeySpec] = field(default_factory=list)
    model_services: list[ModelServiceSpec] = field(default_factory=list)
    model_apis: list[ModelApiSpec] = field(default_factory=list)
    consumers: list[ConsumerSpec] = field(default_factory=list)
    consumer_groups: list[ConsumerGroupSpec] = field(default_factory=list)


#: TOML table name → the spec class of its entries, in dependency order.
TABLES: dict[str, type] = {
    "model_keys": ModelKeySpec,
    "model_services": ModelServiceSpec,
    "model_apis": ModelApiSpec,
    "consumers": ConsumerSpec,
    "consumer_groups": ConsumerGroupSpec,
}
