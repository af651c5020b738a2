"""The request record: one shape for the store, ``/events`` and the console's traffic pane.

A finished request becomes one tuple in ``RECORD_FIELDS`` order — the row the store
inserts as it is. The dict form (``/events``, the console) is made from it only when
someone reads: the request path builds one tuple and nothing else.
"""

from __future__ import annotations

from typing import Any

import orjson

from store.usage import RECORD_FIELDS, row_dict

from .context import RequestContext

__all__ = ["RECORD_FIELDS", "event_bytes", "record_of"]

#: The order :func:`record_of` writes, checked against the store's columns at import: a
#: column added to ``RequestRecord`` must be added here too, or nothing starts.
_ORDER = (
    "ts",
    "request_id",
    "method",
    "path",
    "consumer",
    "api",
    "service",
    "model",
    "key_name",
    "status",
    "latency_ms",
    "ttfb_ms",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "stream",
    "estimated",
    "error",
    "attempts",
    "cache",
    "cost_saved",
    "protocol",
    "vendor_protocol",
)
if RECORD_FIELDS != _ORDER:  # pragma: no cover - a schema change without this module's
    raise RuntimeError(f"proxy.events writes {_ORDER}, the store has {RECORD_FIELDS}")


def record_of(ctx: RequestContext) -> tuple[Any, ...]:
    """The record of a finished request. Names only, never a credential or a consumer key."""
    u = ctx.usage
    if u is None:
        pt = ct = 0
        estimated = False
    else:
        pt, ct, estimated = u.prompt_tokens, u.completion_tokens, u.estimated
    consumer, api, service = ctx.consumer, ctx.api, ctx.service
    ttfb = ctx.ttfb_ms
    return (
        ctx.ts,
        ctx.request_id,
        ctx.method,
        ctx.path,
        consumer.name if consumer is not None else "",
        api.name if api is not None else "",
        service.name if service is not None else "",
        ctx.model,
        ctx.key_name,
        ctx.status,
        round(ctx.elapsed_ms(), 3),
        None if ttfb is None else round(ttfb, 3),
        pt,
        ct,
        pt + ct,
        ctx.cost,
        ctx.stream,
        estimated,
        ctx.error,
        [a.as_dict() for a in ctx.attempts],
        ctx.cache,
        ctx.cost_saved,
        ctx.protocol,
        ctx.vendor_protocol,
    )


def event_bytes(row: tuple[Any, ...]) -> bytes:
    """One SSE event: ``data: <record>``, in the store's one record shape."""
    return b"data: " + orjson.dumps(row_dict(row)) + b"\n\n"
