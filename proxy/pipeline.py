"""The request path of SPEC §2 as named stages, called in this order by :func:`handle`.

route → authenticate → authorize → (read body) → traffic control → choose service →
choose model → choose key → forward/relay (:mod:`proxy.relay`) → account → log.
Each stage either fills in the :class:`RequestContext` or raises a
:class:`GatewayError`; :func:`handle` turns errors into responses in one place.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from . import cors
from .context import RequestContext
from .errors import (
    GatewayError,
    bad_request,
    forbidden,
    method_not_allowed,
    model_not_found,
    not_found,
    rate_limited,
    unauthorized,
)
from .events import record_of
from .http_server import Request, header_lines
from .relay import Attempt, forward, response_head
from .routes import Consumer, Route, Service, find_model, granted_apis, listed_models
from .state import GatewayState

log = logging.getLogger("aigw")

MAX_BODY = 8 * 1024 * 1024


def _client_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("AIGW_CLIENT_TIMEOUT_S", "60")))
    except ValueError:
        return 60.0


#: How long a client may take to send a request's headers, or its body, and stay idle between
#: requests on a keep-alive connection (``AIGW_CLIENT_TIMEOUT_S``, default 60): a slow or
#: silent client holds a connection this long at most.
CLIENT_TIMEOUT_S = _client_timeout()
#: Operations whose streams can carry usage when asked with ``stream_options``.
USAGE_OPS = frozenset({"/chat/completions", "/completions"})
_MAX_REQUEST_ID = 200


#: New request ids: a random per-process prefix and a counter — unique, and no syscall each.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def request_id_of(headers: dict[str, str]) -> str:
    """The client's ``x-request-id`` when it is sane (short printable ASCII), else a new one."""
    rid = headers.get("x-request-id", "")
    if 0 < len(rid) <= _MAX_REQUEST_ID and rid.isascii() and rid.isprintable():
        return rid
    return f"{_ID_PREFIX}{next(_ids):016x}"


# ------------------------------------------------------------------ stages


_MODEL_PATH = "/v1/models/"


def stage_route(ctx: RequestContext, method: str) -> Route:
    route = ctx.snapshot.routes.get(ctx.path)
    if route is None and _MODEL_PATH in ctx.path:  # GET {base_path}/v1/models/{id}
        base, _, model_id = ctx.path.rpartition(_MODEL_PATH)
        listing = ctx.snapshot.routes.get(base + "/v1/models")
        if listing is not None and model_id:
            route = listing
            ctx.model = model_id
    if route is None:
        raise not_found(
            f"no model API serves {ctx.path}; check the base path and route (e.g. /<base_path>/v1/chat/completions)"
        )
    want = "GET" if route.models_list else "POST"
    if method != want and method != "OPTIONS" and not (method == "HEAD" and route.models_list):
        raise method_not_allowed(method, ctx.path, want)
    ctx.route = route
    ctx.api = route.api
    return route


def stage_authenticate(ctx: RequestContext, headers: dict[str, str]) -> Consumer:
    key = ""
    auth = headers.get("authorization")
    if auth:
        scheme, _, rest = auth.partition(" ")
        if scheme.lower() == "bearer":
            key = rest.strip()
    if not key:
        key = (headers.get("x-api-key") or headers.get("api-key") or "").strip()
    if not key:
        raise unauthorized(
            "no API key: send your consumer key as 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    consumer = ctx.snapshot.consumers_by_hash.get(hashlib.sha256(key.encode()).hexdigest())
    if consumer is None:
        raise unauthorized(
            "the API key is not valid: use a key created for a consumer of this "
            "gateway (sk-aigw-…); keys are shown once, when created"
        )
    if not consumer.enabled:
        raise unauthorized(
            f"consumer {consumer.name!r} is disabled; ask the gateway operator to enable it", code="consumer_disabled"
        )
    ctx.consumer = consumer
    return consumer


def stage_authorize(ctx: RequestContext) -> None:
    assert ctx.consumer is not None and ctx.api is not None
    if ctx.api.name not in ctx.snapshot.grants.get(ctx.consumer.name, ()):
        raise forbidden(
            f"consumer {ctx.consumer.name!r} is not authorized for model API "
            f"{ctx.api.name!r}; add it to a consumer group that grants this API"
        )


def stage_read_body(ctx: RequestContext, raw: bytes) -> dict[str, Any]:
    """The JSON body (the HTTP layer read it whole: its size and deadline are enforced there)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(
            f"the request body is not valid JSON ({exc}); send a JSON object", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise bad_request(
            'the request body must be a JSON object, e.g. {"model": "…", "messages": [...]}', code="invalid_body"
        )
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", code="invalid_model")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false", code="invalid_stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", code="invalid_stream_options")
    ctx.raw_body = raw
    ctx.body = body
    ctx.stream = bool(stream)
    ctx.client_wants_usage = bool(options and options.get("include_usage") is True)
    return body


def stage_traffic_control(state: GatewayState, ctx: RequestContext) -> None:
    decision = state.limiter.check(ctx)
    ctx.limit_headers = decision.headers
    if not decision.allowed:
        raise decision.error or rate_limited("rate limit reached; retry later", 60.0)


def stage_choose_service(state: GatewayState, ctx: RequestContext) -> list[Service]:
    """The primary service, then the API's fallback services in order."""
    api = ctx.api
    assert api is not None and ctx.body is not None
    services = api.services
    if not services:
        raise not_found(f"model API {api.name!r} has no model service", code="no_service")
    if api.service_type != "multi" or len(services) == 1:
        primary = services[0]
    elif api.routing == "weight":
        primary = state.balancer.pick_weighted(services, api.weights or [1] * len(services))
    else:
        model = ctx.body.get("model")
        if model is None:
            primary = services[0]
        else:
            # Services listing models are matched in order; one with empty models catches
            # the rest wherever it sits in the list.
            found = next((s for s in services if s.models and s.serves(model)), None) or next(
                (s for s in services if not s.models), None
            )
            if found is None:
                raise model_not_found(
                    f"model {model!r} is not offered by model API {api.name!r}; use one of: "
                    f"{', '.join(api.offered_models()) or '(none configured)'}"
                )
            primary = found
    if not api.fallbacks:
        return [primary]
    return [primary, *(s for s in api.fallbacks if s is not primary)]


def stage_choose_model(svc: Service, body: dict[str, Any]) -> str:
    asked = body.get("model")
    if svc.model_policy == "specified" or not asked:
        if not svc.default_model:
            raise bad_request(
                f"'model' is required: model service {svc.name!r} has no default model", code="missing_model"
            )
        return svc.default_model
    if svc.serves(asked):
        return str(asked)
    if svc.unlisted_model == "default" and svc.default_model:
        return svc.default_model
    raise model_not_found(
        f"model {asked!r} is not offered by model service {svc.name!r}; use "
        f"one of: {', '.join(svc.offered()) or '(none configured)'}"
    )


def upstream_body(ctx: RequestContext, model: str) -> bytes:
    """The client's bytes untouched, unless the model or ``stream_options`` must change."""
    body = ctx.body
    assert body is not None
    need_usage = ctx.stream and not ctx.client_wants_usage and ctx.route is not None and ctx.route.op in USAGE_OPS
    if body.get("model") == model and not need_usage:
        return ctx.raw_body
    new = dict(body)
    new["model"] = model
    if need_usage:
        opts = dict(body.get("stream_options") or {})
        opts["include_usage"] = True
        new["stream_options"] = opts
    try:
        return orjson.dumps(new)
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels): the stdlib can
        try:
            return json.dumps(new, ensure_ascii=False, separators=(",", ":")).encode()
        except (RecursionError, ValueError):
            raise bad_request("the request body is nested too deeply; flatten it", code="invalid_body") from None


async def stage_forward(
    state: GatewayState, request: Request, ctx: RequestContext, candidates: Sequence[Service]
) -> None:
    """Try the services in order, and within a ``failover`` service one more key."""
    assert ctx.body is not None and state.pool is not None
    last: Attempt | None = None
    for i, svc in enumerate(candidates):
        try:
            model = stage_choose_model(svc, ctx.body)
        except GatewayError:
            if i == 0:
                raise
            continue  # a fallback that cannot serve this model is skipped
        body = upstream_body(ctx, model)
        keys = state.balancer.order(svc)
        tries = keys[:2] if svc.key_policy == "failover" else keys[:1]
        for j, key in enumerate(tries):
            ctx.service, ctx.model, ctx.key_name = svc, model, key.name
            try:
                result = await forward(request, ctx, state.pool, svc, key, body)
            except GatewayError as err:  # the key's env variable is missing: the operator's to fix
                state.upstream_failed(svc.name, "key_unavailable", err.message)
                raise
            if result is None:  # answered
                if ctx.upstream_failure:
                    state.upstream_failed(svc.name, ctx.upstream_failure, ctx.error)
                return
            last = result
            if result.retryable or result.key_rejected:  # a vendor's 400/404 is the caller's
                state.upstream_failed(
                    svc.name,
                    result.reason,
                    result.error.message
                    if result.error
                    else f"vendor answered {result.status} (model key {key.name!r})",
                )
            if result.key_rejected and svc.key_policy == "failover":
                state.balancer.cool_down(svc, key)
                if j + 1 < len(tries):
                    continue
            break
        if last is None or not last.retryable:
            break
    assert last is not None
    if last.error is not None:
        raise last.error
    ctx.status = last.status
    ctx.error = f"vendor answered {last.status}"
    assert last.headers is not None
    request.respond(last.status, response_head(last.headers, ctx), last.body)


def models_response(request: Request, ctx: RequestContext) -> None:
    """The models of the granted APIs on the base path in OpenAI's list shape, or one of them."""
    assert ctx.route is not None and ctx.consumer is not None
    apis = granted_apis(ctx.snapshot, ctx.route, ctx.consumer.name)
    named = apis or ctx.route.apis
    names = ("model API " if len(named) == 1 else "model APIs ") + ", ".join(repr(a.name) for a in named)
    if not apis:
        raise forbidden(
            f"consumer {ctx.consumer.name!r} is not authorized for {names}; add it to a consumer group that grants "
            + ("this API" if len(named) == 1 else "one of them")
        )
    ctx.api = apis[0]
    data = listed_models(apis)
    payload: Any = {"object": "list", "data": data}
    if ctx.model:
        payload = find_model(apis, ctx.model)
        if payload is None:
            raise model_not_found(
                f"model {ctx.model!r} is not offered by {names}; use one of: "
                f"{', '.join(str(d['id']) for d in data) or '(none configured)'}"
            )
    ctx.status = 200
    request.respond(
        200,
        b"content-type: application/json\r\nx-request-id: %b\r\n" % ctx.request_id.encode() + ctx.cors_headers,
        orjson.dumps(payload),
    )


def stage_account(state: GatewayState, ctx: RequestContext) -> None:
    u = ctx.usage
    if u is not None and ctx.service is not None and (u.prompt_tokens or u.completion_tokens):
        price = ctx.service.price_for(ctx.model)
        if price is not None:
            ctx.cost = round((u.prompt_tokens * price.input + u.completion_tokens * price.output) / 1_000_000, 10)
    if ctx.consumer is not None and ctx.api is not None:
        state.limiter.settle(ctx, u)


def stage_log(state: GatewayState, ctx: RequestContext) -> None:
    state.recorder.submit(record_of(ctx))


# ------------------------------------------------------------------ the handler


async def run_pipeline(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    route = stage_route(ctx, request.method)
    ctx.cors_headers = cors.answer_headers(route, request.headers)
    if request.method == "OPTIONS":  # a browser's preflight: answered without a key
        head = cors.preflight(route, ctx.path, request.headers)
        ctx.status = 204
        return request.respond(204, head + b"x-request-id: %b\r\n" % ctx.request_id.encode(), b"")
    stage_authenticate(ctx, request.headers)
    if route.models_list:  # shared by the APIs on the base path: authorized per API
        return models_response(request, ctx)
    stage_authorize(ctx)
    stage_read_body(ctx, request.body)
    stage_traffic_control(state, ctx)
    candidates = stage_choose_service(state, ctx)
    await stage_forward(state, request, ctx, candidates)


def error_response(request: Request, err: GatewayError, ctx: RequestContext) -> None:
    headers = {"content-type": "application/json", "x-request-id": ctx.request_id}
    if err.headers:
        headers.update(err.headers)
    request.respond(
        err.status, header_lines(headers) + ctx.limit_headers + ctx.cors_headers, err.body(), close=err.status == 408
    )


def make_handler(state: GatewayState) -> Callable[[Request], Awaitable[None]]:
    """The data plane's only handler: every request goes through the stages above."""

    async def handle(request: Request) -> None:
        ctx = RequestContext(state.snapshot, request_id_of(request.headers), request.method, request.path)
        state.in_flight += 1
        try:
            await run_pipeline(state, request, ctx)
        except GatewayError as err:
            ctx.status, ctx.error = err.status, err.message
            if request.started:  # cannot answer twice: end what was sent
                request.conn.closing = True
            else:
                error_response(request, err, ctx)
        except (asyncio.CancelledError, ConnectionResetError):
            if not ctx.complete:
                ctx.status, ctx.error = 499, "client closed the connection"
            raise
        except Exception as exc:  # a bug: answer in the API's shape, keep the details in the log
            log.exception("unexpected error handling %s %s", request.method, request.path)
            ctx.status, ctx.error = 500, f"internal error: {type(exc).__name__}"
            if request.started:
                request.conn.closing = True
            else:
                error_response(
                    request,
                    GatewayError(
                        500, "api_error", "internal_error", "the gateway failed to handle this request; see gateway.log"
                    ),
                    ctx,
                )
        finally:
            state.in_flight -= 1
            stage_account(state, ctx)
            stage_log(state, ctx)

    return handle


def record_refusal(
    state: GatewayState, method: str, path: str, headers: dict[str, str], status: int, message: str
) -> str:
    """A request the HTTP layer refused before the pipeline (too large, too slow, bad
    expectation) is still recorded, like any other answer; returns its request id."""
    ctx = RequestContext(state.snapshot, request_id_of(headers), method, path)
    ctx.status, ctx.error = status, message
    stage_log(state, ctx)
    return ctx.request_id
