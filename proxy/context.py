"""The per-request state every pipeline stage reads and fills in, ending as the record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .circuit import Admission
from .errors import GatewayError
from .key_slots import Slot
from .protocols.translation import Translation
from .response_cache import StreamRecorder
from .routes import Api, CompiledKey, Consumer, Route, Service, Snapshot


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one vendor attempt ended: what the attempts loop decides the next step from.

    ``answered``: the client has (the start of) this attempt's answer, so there is no
    other attempt, even if ``reason`` says the stream broke midway. Otherwise the
    attempt failed before any byte reached the client, and the answer to give if no
    other attempt does better is ``error`` (the gateway's own) or the vendor's error
    answer (``status``, ``headers``, ``body``).
    """

    answered: bool
    status: int = 0
    #: Why it failed, as ``aigw_upstream_errors_total`` counts it (``""``: it did not).
    reason: str = ""
    #: Another service may do better: connect error, timeout, 429, 5xx.
    retryable: bool = False
    #: The vendor refused the key itself (401/403/429): cool it down, try the next one.
    key_rejected: bool = False
    error: GatewayError | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    #: What ``gateway.log`` says about a failure (never a credential).
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One vendor attempt as it happened: a line in the request's story."""

    service: str
    key_name: str
    status: int
    #: One of :data:`proxy.circuit.REASONS`.
    reason: str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        """The record's ``attempts[]`` entry: the key by name only."""
        return {
            "service": self.service,
            "key": self.key_name,
            "status": self.status,
            "reason": self.reason,
            "ms": round(self.ms, 3),
        }


@dataclass(slots=True)
class RequestContext:
    """One request: pinned to the snapshot it started with, whatever reloads happen meanwhile."""

    snapshot: Snapshot
    request_id: str
    method: str
    path: str
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    #: Nanoseconds spent waiting on others — the vendor, the client, a key slot — which
    #: ``aigw_overhead_seconds`` takes from the wall time to leave the gateway's own.
    waited_ns: int = 0
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
    #: The response's ``x-ratelimit-*`` header lines, filled by the limiter.
    limit_headers: bytes = b""
    # ---- the attempts loop
    #: The services to try: the chosen one, then the API's fallbacks in order.
    candidates: Sequence[Service] = ()
    #: Where the loop is in ``candidates`` (-1: before the first attempt).
    candidate: int = -1
    #: The keys of ``service`` this request may try, and which one is next.
    keys: Sequence[CompiledKey] = ()
    key_index: int = 0
    key: CompiledKey | None = None
    #: The body to send to ``service`` (the client's, or with the model or options changed).
    upstream_body: bytes = b""
    #: How the latest attempt ended.
    outcome: Outcome | None = None
    attempts: list[Attempt] = field(default_factory=list)
    #: When the attempt under way began (ms since the request's start; its queue wait included).
    attempt_began: float = 0.0
    #: The breaker's admission and the key slot of the attempt under way (released when it ends).
    admission: Admission | None = None
    slot: Slot | None = None
    #: Called once when the first byte of an answer reaches the client (the breaker's "ok").
    on_first_byte: Callable[[], None] | None = None
    #: The response's CORS header lines (:mod:`proxy.cors`), set once the route is known.
    cors_headers: bytes = b""
    # ---- the response cache (:mod:`proxy.cache_stage`)
    #: ``hit``, ``miss`` (a cache-enabled API not answered from it) or ``""`` (no cache).
    cache: str = ""
    #: The ``x-cache`` header line of a cache-enabled API's answers.
    cache_line: bytes = b""
    #: The entry's key when this request's answer may be stored (None: it may not).
    cache_key: str | None = None
    #: The largest entry the cache takes (a stream recorder's bound).
    cache_max_entry: int = 0
    #: What the relay kept for the cache: a plain 200's headers and body, or a clean stream.
    cache_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    cache_body: bytes | None = None
    cache_stream: StreamRecorder | None = None
    #: A hit: what the stored answer cost when it was made.
    cost_saved: float = 0.0

    #: The protocol the client speaks: its API's (``openai`` until the route is known).
    protocol: str = "openai"
    #: How this attempt's request and answer are translated (``None``: passed through).
    translation: Translation | None = None
    #: Anthropic clients read the request id from ``request-id`` too.
    id_lines: bytes = b""

    def extra_lines(self) -> bytes:
        """Header lines every answer of this request carries: the limiter's, CORS's, the
        protocol's request id and the cache's."""
        lines = self.limit_headers
        for more in (self.cors_headers, self.id_lines, self.cache_line):
            if more:
                lines += more
        return lines

    def mark_first_byte(self) -> None:
        """The client has the first byte of the answer: time it, and tell whoever waits for it."""
        self.ttfb_ms = self.elapsed_ms()
        hook, self.on_first_byte = self.on_first_byte, None
        if hook is not None:
            hook()

    @property
    def vendor_protocol(self) -> str:
        """The protocol the vendor was spoken to in (the client's until a service is chosen)."""
        if self.service is None:
            return self.protocol
        return self.service.protocol

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0
