"""The per-request state every pipeline stage reads and fills in, ending as the record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .routes import Api, Consumer, Route, Service, Snapshot


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class RequestContext:
    """One request: pinned to the snapshot it started with, whatever reloads happen meanwhile."""

    snapshot: Snapshot
    request_id: str
    method: str
    path: str
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    route: Route | None = None
    api: Api | None = None
    consumer: Consumer | None = None
    service: Service | None = None
    model: str = ""
    key_name: str = ""
    body: dict[str, Any] | None = None
    raw_body: bytes = b""
    stream: bool = False
    #: The client asked for ``stream_options.include_usage`` itself (else the usage chunk is ours).
    client_wants_usage: bool = False
    status: int = 0
    #: The client received the whole answer (a stream's ``[DONE]``): leaving after it is no 499.
    complete: bool = False
    ttfb_ms: float | None = None
    usage: Usage | None = None
    cost: float = 0.0
    error: str = ""
    #: Why the last vendor attempt failed (``aigw_upstream_errors_total`` reason), if it did.
    upstream_failure: str = ""
    #: The response's ``x-ratelimit-*`` header lines, filled by the limiter.
    limit_headers: bytes = b""
    #: The response's CORS header lines (:mod:`proxy.cors`), set once the route is known.
    cors_headers: bytes = b""

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
