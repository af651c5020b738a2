"""The response cache on the request path: look up before a service is chosen, store after.

A model API with ``cache_ttl_s > 0`` answers an exact repeat from the cache, without a
vendor call: :func:`stage_cache_lookup` runs after traffic control (a hit is a request
for ``requests_per_minute`` and a ``requests`` quota, but is charged no tokens and no
cost) and replays the stored answer — a plain body, or a stream event by event through
the relay's own stream writes. On a miss the request is marked so the relay keeps what
the client got, and :func:`stage_cache_store` stores it once the answer is known to be a
complete 200. Every answer of such an API carries ``x-cache: HIT`` or ``x-cache: MISS``.

The cache is behind :class:`~proxy.response_cache.CacheBackend`: this process's memory
(:class:`~proxy.response_cache.MemoryCache`) or Redis, shared by every gateway naming it
(:class:`~proxy.redis_cache.RedisCache`). The key names the API's configuration
(:meth:`~proxy.state.GatewayState.cache_config`), so an answer made under an API's old
definition is never served under its new one, whichever node made it. A backend that
fails is a miss (lookup) or an answer not kept (store): the cache never fails a request.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .context import RequestContext, Usage
from .heads import relayed_head
from .http_server import Request
from .relay import ClientStalled, _write
from .response_cache import CacheBackend, CachedAnswer, answer_of, cache_key
from .routes import Api
from .usage import cost_of

if TYPE_CHECKING:  # the state holds the cache and calls :func:`drop_changed` on reload
    from .state import GatewayState

log = logging.getLogger("aigw")

HIT_LINE = b"x-cache: HIT\r\n"
MISS_LINE = b"x-cache: MISS\r\n"


def cache_enabled(api: Api | None) -> bool:
    return api is not None and api.cache_ttl_s > 0


def mark_cache_api(ctx: RequestContext) -> None:
    """From the moment the API is known, its answers (errors too) say ``x-cache: MISS``."""
    if cache_enabled(ctx.api):
        ctx.cache, ctx.cache_line = "miss", MISS_LINE


async def stage_cache_lookup(state: GatewayState, request: Request, ctx: RequestContext) -> bool:
    """Answer from the cache (True), or mark the request for storing (False: go on)."""
    api, consumer, body = ctx.api, ctx.consumer, ctx.body
    cache = state.cache
    if not cache_enabled(api) or cache.max_entry_bytes <= 0:
        return False
    assert api is not None and consumer is not None and body is not None
    model = body.get("model")
    key = cache_key(
        api=api.name,
        scope="api" if api.cache_scope == "api" else "consumer",
        consumer=consumer.name,
        model=model if isinstance(model, str) else "",
        mode="last_user_message" if api.cache_key == "last_user_message" else "full",
        body=body,
        stream=ctx.stream,
        config=state.cache_config(api),
    )
    if key is None:  # nested past what the key encodes: neither served nor stored
        return False
    try:
        entry = await cache.get(key, api.name)
    except Exception as exc:  # a backend that breaks its promise not to raise: answer from the vendor
        log.warning("response cache lookup failed: %s", type(exc).__name__)
        return False
    if entry is None:
        ctx.cache_key, ctx.cache_max_entry = key, cache.max_entry_bytes
        return False
    ctx.cache, ctx.cache_line = "hit", HIT_LINE
    ctx.model = entry.model or ctx.model
    ctx.usage = Usage(entry.prompt_tokens, entry.completion_tokens)
    ctx.cost_saved = entry.cost
    ctx.status = 200
    await _replay(request, ctx, entry, state.client_timeout_s)
    return True


async def _replay(request: Request, ctx: RequestContext, entry: CachedAnswer, timeout_s: float) -> None:
    head = relayed_head(list(entry.headers), ctx.request_id, ctx.extra_lines())
    if entry.events is None:
        request.respond(200, head, entry.body or b"")
        ctx.ttfb_ms = ctx.elapsed_ms()
        ctx.complete = True
        return
    events = entry.events
    request.start_stream(200, head, events[0] if events else b"")
    ctx.ttfb_ms = ctx.elapsed_ms()
    try:
        for event in events[1:]:
            ctx.waited_ns += await _write(request, event, timeout_s)
    except ClientStalled:
        ctx.status = 499
        ctx.error = f"client stopped reading the stream for {timeout_s:g} s"
        if request.conn.transport is not None:
            request.conn.transport.abort()
        return
    ctx.complete = True
    request.end_stream()


async def stage_cache_store(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """Store the answer the client got, if it is a complete 200 of a request marked for it."""
    key, api, cache = ctx.cache_key, ctx.api, state.cache
    if key is None or api is None or ctx.status != 200:
        return
    u = ctx.usage or Usage()
    cost = cost_of(ctx.service, ctx.model, ctx.usage)
    now = time.time()
    entry: CachedAnswer | None = None
    if ctx.cache_body is not None:
        entry = answer_of(
            200,
            ctx.cache_headers,
            ctx.cache_body,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            ttl_s=api.cache_ttl_s,
            now=now,
            model=ctx.model,
            cost=cost,
        )
    elif ctx.cache_stream is not None:
        entry = ctx.cache_stream.finish(
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            ttl_s=api.cache_ttl_s,
            now=now,
            model=ctx.model,
            cost=cost,
        )
    if entry is None:
        return
    # The API changed while this answer was made: its entries were dropped, and this one
    # answers to the old definition.
    current = state.snapshot.apis.get(api.name)
    if current is not api and current != api:
        return
    await _put(cache, key, api.name, entry)


async def _put(cache: CacheBackend, key: str, api: str, entry: CachedAnswer) -> None:
    try:
        await cache.put(key, api, entry)
    except Exception as exc:
        log.warning("response cache store failed: %s", type(exc).__name__)


async def drop_changed(cache: CacheBackend, old: dict[str, Api], new: dict[str, Api]) -> int:
    """Tell the backend of every API whose definition changed or that is gone; how many
    entries that freed (their keys are never asked for again either way)."""
    dropped = 0
    for name, api in old.items():
        if not cache_enabled(api) and not cache_enabled(new.get(name)):
            continue
        if new.get(name) != api:
            dropped += await cache.api_changed(name)
    return dropped
