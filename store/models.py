"""SQLModel tables: the storage of :mod:`store.spec`, plus request records and metadata.

References are link rows keyed by id, so renaming an entity keeps its references and
the database refuses dangling ones (``foreign_keys=ON``). Lists of plain values
(models, routes, prices) are JSON columns: they are only ever read whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class Meta(SQLModel, table=True):
    """Key/value rows: ``schema_version``, ``revision``, console state (Quick Start)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True)
    value: str = ""


class GatewaySettings(SQLModel, table=True):
    __tablename__ = "gateway_settings"
    id: int = Field(default=1, primary_key=True)
    listen: str = "127.0.0.1:8080"
    public_url: str = ""
    admin_listen: str = "127.0.0.1:8081"
    max_connections: int = 10_000
    cache_max_mb: int = 64
    redis_url: str = ""
    redis_failure: str = "local"
    #: Data-plane worker processes; 0 = one per CPU (``workers = "auto"``).
    workers: int = 1
    updated_at: datetime = Field(default_factory=utcnow)


class _Entity(SQLModel):
    name: str = Field(index=True, unique=True)
    description: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class ModelKey(_Entity, table=True):
    __tablename__ = "model_keys"
    id: int | None = Field(default=None, primary_key=True)
    credential: str
    max_concurrency: int = 0


class ModelService(_Entity, table=True):
    __tablename__ = "model_services"
    id: int | None = Field(default=None, primary_key=True)
    vendor: str
    protocol: str = "openai"
    address: str
    key_policy: str = "polling"
    model_policy: str = "specified"
    default_model: str = ""
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    unlisted_model: str = "refuse"
    timeout_s: float = 120.0
    prices: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    proxy: str = ""
    ca_file: str = ""
    queue_timeout_s: float = 10.0
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    probe_interval_s: float = 0.0
    first_byte_timeout_s: float = 0.0
    default_max_tokens: int = 4096
    #: ``None``: the vendor's default (see ``store.spec.responses_default``).
    responses: bool | None = None


class ServiceKey(SQLModel, table=True):
    """A service's ordered model keys (order matters for polling and failover)."""

    __tablename__ = "service_keys"
    service_id: int = Field(foreign_key="model_services.id", primary_key=True, ondelete="CASCADE")
    key_id: int = Field(foreign_key="model_keys.id", primary_key=True, ondelete="RESTRICT")
    position: int = 0


class ModelApi(_Entity, table=True):
    __tablename__ = "model_apis"
    id: int | None = Field(default=None, primary_key=True)
    scenario: str = "text-generation"
    protocol: str = "openai"
    routes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    base_path: str = Field(index=True)  # APIs whose routes differ may share one
    path_simplification: bool = True
    service_type: str = "single"
    routing: str = "model"
    cors_origins: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cache_ttl_s: int = 0
    cache_key: str = "full"
    cache_scope: str = "consumer"


class ApiService(SQLModel, table=True):
    """An API's services (``role='primary'``, with weight) and fallbacks, each in order."""

    __tablename__ = "api_services"
    api_id: int = Field(foreign_key="model_apis.id", primary_key=True, ondelete="CASCADE")
    service_id: int = Field(foreign_key="model_services.id", primary_key=True, ondelete="RESTRICT")
    role: str = Field(default="primary", primary_key=True)
    position: int = 0
    weight: int | None = None


class Consumer(_Entity, table=True):
    __tablename__ = "consumers"
    id: int | None = Field(default=None, primary_key=True)
    enabled: bool = True
    quota: float = 0
    quota_unit: str = "tokens"
    quota_period: str = "month"


class ConsumerKey(SQLModel, table=True):
    """A consumer's API key: digest and display prefix only, never the key."""

    __tablename__ = "consumer_keys"
    id: int | None = Field(default=None, primary_key=True)
    consumer_id: int = Field(foreign_key="consumers.id", index=True, ondelete="CASCADE")
    key_hash: str = Field(index=True, unique=True)
    prefix: str
    created_at: datetime = Field(default_factory=utcnow)


class ConsumerGroup(_Entity, table=True):
    __tablename__ = "consumer_groups"
    id: int | None = Field(default=None, primary_key=True)
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


class GroupMember(SQLModel, table=True):
    __tablename__ = "group_members"
    group_id: int = Field(foreign_key="consumer_groups.id", primary_key=True, ondelete="CASCADE")
    consumer_id: int = Field(foreign_key="consumers.id", primary_key=True, ondelete="RESTRICT")
    position: int = 0


class GroupGrant(SQLModel, table=True):
    __tablename__ = "group_grants"
    group_id: int = Field(foreign_key="consumer_groups.id", primary_key=True, ondelete="CASCADE")
    api_id: int = Field(foreign_key="model_apis.id", primary_key=True, ondelete="RESTRICT")
    position: int = 0


class RequestRecord(SQLModel, table=True):
    """One request through the gateway, written by its account-and-log stage.

    Names, not ids: a record outlives renames and deletions of what it names.
    """

    __tablename__ = "request_records"
    __table_args__ = (
        Index("ix_records_ts", "ts"),
        Index("ix_records_consumer_ts", "consumer", "ts"),
        Index("ix_records_request_id", "request_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    #: Unix time (seconds, float) when the request arrived.
    ts: float
    request_id: str
    method: str = "POST"
    path: str = ""
    consumer: str = ""
    api: str = ""
    service: str = ""
    model: str = ""
    key_name: str = ""
    status: int = 0
    latency_ms: float = 0.0
    ttfb_ms: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    stream: bool = False
    #: True when the token counts are the gateway's estimate (vendor sent no usage).
    estimated: bool = False
    error: str = ""
    #: One entry per vendor attempt: ``service``, ``key`` (name), ``status``, ``reason``, ``ms``.
    attempts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, default=list))
    #: ``hit``: answered from the response cache (no vendor call); ``miss``: a cache-enabled
    #: API's answer that was not (it may have been stored); ``""``: the API has no cache.
    cache: str = ""
    #: What a hit's tokens would have cost at the service's prices when the answer was stored.
    cost_saved: float = 0.0
    #: The protocol the client spoke (the API's), and the one the vendor was sent.
    protocol: str = "openai"
    vendor_protocol: str = "openai"


class Node(SQLModel, table=True):
    """A running ``aigw serve`` of this store: registered at start, refreshed while it serves,
    removed on a clean stop (one unseen for a while is stale: it died without a word)."""

    __tablename__ = "nodes"
    id: str = Field(primary_key=True)
    host: str = ""
    listen: str = ""
    admin_listen: str = ""
    workers: int = 1
    version: str = ""
    revision: int = 0
    #: Unix seconds.
    started_at: float = 0.0
    last_seen: float = 0.0
