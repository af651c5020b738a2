"""The request record: one shape for the store, ``/events`` and the console's traffic pane."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from store.usage import RECORD_FIELDS

from .context import RequestContext

__all__ = ["RECORD_FIELDS", "event_bytes", "make_record"]


def make_record(ctx: RequestContext) -> dict[str, Any]:
    """The record of a finished request. Names only, never a credential or a consumer key."""
    u = ctx.usage
    pt = u.prompt_tokens if u else 0
    ct = u.completion_tokens if u else 0
    return {
        "ts": ctx.ts,
        "request_id": ctx.request_id,
        "method": ctx.method,
        "path": ctx.path,
        "consumer": ctx.consumer.name if ctx.consumer else "",
        "api": ctx.api.name if ctx.api else "",
        "service": ctx.service.name if ctx.service else "",
        "model": ctx.model,
        "key_name": ctx.key_name,
        "status": ctx.status,
        "latency_ms": round(ctx.elapsed_ms(), 3),
        "ttfb_ms": None if ctx.ttfb_ms is None else round(ctx.ttfb_ms, 3),
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "total_tokens": pt + ct,
        "cost": ctx.cost,
        "stream": ctx.stream,
        "estimated": bool(u and u.estimated),
        "error": ctx.error,
    }


def event_bytes(record: dict[str, Any]) -> bytes:
    """One SSE event: ``data: <record + ISO time>``, as ``store.usage.record_dict`` shapes it."""
    d = dict(record)
    d["time"] = (datetime.fromtimestamp(record["ts"], UTC)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return b"data: " + orjson.dumps(d) + b"\n\n"
