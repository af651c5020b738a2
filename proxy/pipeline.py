"""The request path as named stages, run in a fixed order by :func:`run_pipeline`.

route → authenticate → authorize → read body → traffic control → choose service →
[attempts: choose model → choose key → relay] → answer failure → account → log.
Every stage is ``(state, request, ctx) -> None``: it reads and fills in the
:class:`RequestContext`, or raises a :class:`GatewayError`, which
:func:`run_pipeline` answers in one place. The attempts loop runs once per vendor
attempt; how each ended is an :class:`~proxy.context.Outcome`, kept in ``ctx``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from store.keys import hash_key

from . import cors
from .context import Attempt, RequestContext
from .errors import (
    GatewayError,
    bad_request,
    forbidden,
    internal_error,
    method_not_allowed,
    model_not_found,
    not_found,
    rate_limited,
    unauthorized,
)
from .events import record_of
from .heads import error_head, json_head, relayed_head, request_id_line
from .http_server import Request
from .limits import Decision
from .relay import forward
from .routes import Service, find_model, granted_apis, listed_models
from .state import GatewayState
from .usage import cost_of

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


# ------------------------------------------------------------------ stages before the vendor


_MODEL_PATH = "/v1/models/"


def stage_route(state: GatewayState, request: Request, ctx: RequestContext) -> None:
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
    method = request.method
    want = "GET" if route.models_list else "POST"
    if method != want and method != "OPTIONS" and not (method == "HEAD" and route.models_list):
        raise method_not_allowed(method, ctx.path, want)
    ctx.route = route
    ctx.api = route.api
    ctx.cors_headers = cors.answer_headers(route, request.headers)


def stage_preflight(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """A browser's CORS preflight (``OPTIONS``), answered without a key (:mod:`proxy.cors`)."""
    assert ctx.route is not None
    head = cors.preflight(ctx.route, ctx.path, request.headers)
    ctx.status = 204
    request.respond(204, head + request_id_line(ctx.request_id), b"")


def stage_authenticate(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    headers = request.headers
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
    consumer = ctx.snapshot.consumers_by_hash.get(hash_key(key))
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


def stage_authorize(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    assert ctx.consumer is not None and ctx.api is not None
    if ctx.api.name not in ctx.snapshot.grants.get(ctx.consumer.name, ()):
        raise forbidden(
            f"consumer {ctx.consumer.name!r} is not authorized for model API "
            f"{ctx.api.name!r}; add it to a consumer group that grants this API"
        )


def stage_list_models(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """The models of the granted APIs on the base path in OpenAI's list shape, or one of them.

    APIs may share a base path (chat and embeddings behind one SDK base URL), so the list
    is authorized per API: a consumer sees what the APIs it is granted offer, and is
    refused only when it is granted none of them.
    """
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
    request.respond(200, json_head(ctx.request_id, ctx.cors_headers), orjson.dumps(payload))


async def stage_read_body(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """The JSON body, read only now that the client is known to be allowed to send it
    (the HTTP layer enforces its size and deadline while reading)."""
    raw = await request.read_body()
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


async def stage_traffic_control(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    decision = state.limiter.check(ctx)
    if not isinstance(decision, Decision):  # the counts live elsewhere (Redis): one round trip
        decision = await decision
    ctx.limit_headers = decision.headers
    if not decision.allowed:
        raise decision.error or rate_limited("rate limit reached; retry later", 60.0)


def stage_choose_service(state: GatewayState, request: Request, ctx: RequestContext) -> None:
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
    ctx.candidates = [primary, *(s for s in api.fallbacks if s is not primary)] if api.fallbacks else [primary]


# ------------------------------------------------------------------ the attempts loop


def next_attempt(state: GatewayState, request: Request, ctx: RequestContext) -> bool:
    """Whether the loop makes another vendor attempt, and at which service.

    After a key the vendor refused, a ``failover`` service tries its next key; after a
    retryable failure, the next fallback service that serves the model; after an
    answer, or a vendor error that is the caller's (400, 404), nothing.
    """
    o = ctx.outcome
    if o is not None:
        if o.answered:
            return False
        svc = ctx.service
        if o.key_rejected and svc is not None and svc.key_policy == "failover" and ctx.key_index + 1 < len(ctx.keys):
            ctx.key_index += 1
            return True
        if not o.retryable:
            return False
    assert ctx.body is not None
    while ctx.candidate + 1 < len(ctx.candidates):
        ctx.candidate += 1
        svc = ctx.candidates[ctx.candidate]
        if ctx.candidate > 0 and not _can_serve(svc, ctx.body):
            continue  # a fallback that cannot serve this model is skipped
        ctx.service, ctx.keys, ctx.key_index = svc, (), 0
        return True
    return False


def _model_for(svc: Service, body: dict[str, Any]) -> str:
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


def _can_serve(svc: Service, body: dict[str, Any]) -> bool:
    try:
        _model_for(svc, body)
    except GatewayError:
        return False
    return True


def stage_choose_model(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """The model sent to this attempt's service, and the body that carries it."""
    if ctx.key_index:  # the same service with another key: same model, same body
        return
    assert ctx.service is not None and ctx.body is not None
    ctx.model = _model_for(ctx.service, ctx.body)
    ctx.upstream_body = upstream_body(ctx, ctx.model)


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


def stage_choose_key(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """The balancer's key for this service; a ``failover`` service may try one more."""
    svc = ctx.service
    assert svc is not None
    if not ctx.keys:
        keys = state.balancer.order(svc)
        ctx.keys = keys[:2] if svc.key_policy == "failover" else keys[:1]
    ctx.key = ctx.keys[ctx.key_index]
    ctx.key_name = ctx.key.name


async def stage_relay(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """Forward to the vendor and relay its answer (:mod:`proxy.relay`); count what failed."""
    svc, key = ctx.service, ctx.key
    assert svc is not None and key is not None and state.pool is not None
    began = ctx.elapsed_ms()
    try:
        o = await forward(request, ctx, state.pool, svc, key, CLIENT_TIMEOUT_S)
    except GatewayError as err:  # the key's env variable is missing: the operator's to fix
        state.upstream_failed(svc.name, "key_unavailable", err.message)
        raise
    ctx.outcome = o
    ctx.attempts.append(Attempt(svc.name, key.name, o.status, o.reason, ctx.elapsed_ms() - began))
    if o.reason and (o.answered or o.retryable or o.key_rejected):  # a vendor's 400/404 is the caller's
        state.upstream_failed(svc.name, o.reason, o.detail)
    if o.key_rejected and svc.key_policy == "failover":
        state.balancer.cool_down(svc, key)


def stage_answer_failure(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """No attempt answered: the last one's error, or the vendor's own error answer, relayed."""
    o = ctx.outcome
    assert o is not None
    if o.answered:
        return
    if o.error is not None:
        raise o.error
    ctx.status = o.status
    ctx.error = f"vendor answered {o.status}"
    request.respond(o.status, relayed_head(o.headers, ctx.request_id, ctx.extra_lines()), o.body)


# ------------------------------------------------------------------ after the answer


def stage_account(state: GatewayState, request: Request | None, ctx: RequestContext) -> None:
    ctx.cost = cost_of(ctx.service, ctx.model, ctx.usage)
    if ctx.consumer is not None and ctx.api is not None:
        state.limiter.settle(ctx, ctx.usage)


def stage_log(state: GatewayState, request: Request | None, ctx: RequestContext) -> None:
    state.recorder.submit(record_of(ctx))


# ------------------------------------------------------------------ the pipeline


async def run_pipeline(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """Every stage, in order; errors answered in one place; every request accounted and logged."""
    try:
        stage_route(state, request, ctx)
        if request.method == "OPTIONS":
            stage_preflight(state, request, ctx)
            return
        stage_authenticate(state, request, ctx)
        assert ctx.route is not None
        if ctx.route.models_list:  # authorized per API on the base path
            stage_list_models(state, request, ctx)
            return
        stage_authorize(state, request, ctx)
        await stage_read_body(state, request, ctx)
        await stage_traffic_control(state, request, ctx)
        stage_choose_service(state, request, ctx)
        while next_attempt(state, request, ctx):
            stage_choose_model(state, request, ctx)
            stage_choose_key(state, request, ctx)
            await stage_relay(state, request, ctx)
        stage_answer_failure(state, request, ctx)
    except GatewayError as err:
        answer_error(request, ctx, err)
    except (asyncio.CancelledError, ConnectionResetError):
        if not ctx.complete:
            ctx.status, ctx.error = 499, "client closed the connection"
        raise
    except Exception as exc:  # a bug: answer in the API's shape, keep the details in the log
        log.exception("unexpected error handling %s %s", request.method, request.path)
        answer_error(request, ctx, internal_error(), error=f"internal error: {type(exc).__name__}")
    finally:
        stage_account(state, request, ctx)
        stage_log(state, request, ctx)


def answer_error(request: Request, ctx: RequestContext, err: GatewayError, *, error: str = "") -> None:
    ctx.status, ctx.error = err.status, error or err.message
    if request.started:  # cannot answer twice: end what was sent
        request.conn.closing = True
        return
    head = error_head(ctx.request_id, err.headers, ctx.extra_lines())
    request.respond(err.status, head, err.body(), close=err.status == 408)


def make_handler(state: GatewayState) -> Callable[[Request], Awaitable[None]]:
    """The data plane's only handler: every request goes through :func:`run_pipeline`."""

    async def handle(request: Request) -> None:
        ctx = RequestContext(state.snapshot, request_id_of(request.headers), request.method, request.path)
        state.in_flight += 1
        try:
            await run_pipeline(state, request, ctx)
        finally:
            state.in_flight -= 1

    return handle


def record_refusal(
    state: GatewayState, method: str, path: str, headers: dict[str, str], status: int, message: str
) -> str:
    """A request the HTTP layer refused before the pipeline (too large, too slow, bad
    expectation) is still recorded, like any other answer; returns its request id."""
    ctx = RequestContext(state.snapshot, request_id_of(headers), method, path)
    ctx.status, ctx.error = status, message
    stage_log(state, None, ctx)
    return ctx.request_id
