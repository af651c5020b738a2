"""The request path as named stages, run in a fixed order by :func:`run_pipeline`.

route → authenticate → authorize → read body → traffic control → cache lookup → choose
service → [attempts: choose model → choose key → relay] → answer failure → cache store →
account → log.
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
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from store.keys import hash_key

from . import compact_json, cors
from .cache_stage import mark_cache_api, stage_cache_lookup, stage_cache_store
from .circuit import Reason
from .context import Attempt, Outcome, RequestContext
from .errors import (
    GatewayError,
    bad_request,
    forbidden,
    internal_error,
    method_not_allowed,
    model_not_found,
    not_found,
    rate_limited,
    service_unavailable,
    unauthorized,
    unsupported_parameter,
)
from .events import record_of
from .heads import JSON, error_head, json_head, relayed_head, request_id_line
from .http_server import Request
from .limits import Decision
from .protocols.translation import ANTHROPIC, COUNT_TOKENS, NotTranslatable, UnsupportedParameter, translation_for
from .relay import forward
from .routes import Service, anthropic_model, anthropic_models, find_model, granted_apis, listed_models
from .state import GatewayState
from .usage import cost_of, estimate_prompt

log = logging.getLogger("aigw")

MAX_BODY = 8 * 1024 * 1024


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
        if _under_anthropic_api(ctx):
            raise not_found(f"no model API serves {ctx.path}; an Anthropic API here serves /v1/messages")
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
    if not route.models_list:
        mark_cache_api(ctx)
    if route.api.protocol == ANTHROPIC:  # errors from here on are in Anthropic's shape
        _speak_anthropic(ctx)


def _speak_anthropic(ctx: RequestContext) -> None:
    ctx.protocol = ANTHROPIC
    ctx.id_lines = b"request-id: " + ctx.request_id.encode() + b"\r\n"


def _under_anthropic_api(ctx: RequestContext) -> bool:
    """Whether an unknown path lies under an Anthropic API's base path: its client (Claude
    Code, the Anthropic SDK) reads the 404 in Anthropic's shape. Only 404s pay for the scan."""
    for r in ctx.snapshot.routes.values():
        if r.api.protocol == ANTHROPIC and ctx.path.startswith(r.api.base_path + "/v1/"):
            _speak_anthropic(ctx)
            return True
    return False


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
        how = (
            "'x-api-key: <key>' or 'Authorization: Bearer <key>'"
            if ctx.protocol == ANTHROPIC
            else ("'Authorization: Bearer <key>'")
        )
        raise unauthorized(f"no API key: send your consumer key as {how}", code="missing_api_key")
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
    """The models of the granted APIs on the base path in the API protocol's list shape, or one of them.

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
    anthropic = ctx.protocol == ANTHROPIC
    payload: Any = anthropic_models(data) if anthropic else {"object": "list", "data": data}
    if ctx.model:
        payload = find_model(apis, ctx.model)
        if payload is None:
            raise model_not_found(
                f"model {ctx.model!r} is not offered by {names}; use one of: "
                f"{', '.join(str(d['id']) for d in data) or '(none configured)'}"
            )
        if anthropic:
            payload = anthropic_model(payload)
    ctx.status = 200
    request.respond(200, json_head(ctx.request_id, ctx.cors_headers + ctx.id_lines), orjson.dumps(payload))


async def stage_read_body(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """The JSON body, read only now that the client is known to be allowed to send it
    (the HTTP layer enforces its size and deadline while reading)."""
    raw = request.body_now()
    if raw is None:
        began = time.perf_counter_ns()
        try:
            raw = await request.read_body()
        finally:  # a body still coming is the client's time (a 408 included)
            ctx.waited_ns += time.perf_counter_ns() - began
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


def stage_count_tokens(state: GatewayState, request: Request, ctx: RequestContext) -> bool:
    """``/v1/messages/count_tokens`` for an OpenAI service, which has no such operation:
    answered with the gateway's estimate (about four characters a token), the same the
    records use when a vendor reports no usage. Whether it answered."""
    if ctx.route is None or ctx.route.op != COUNT_TOKENS or ctx.candidates[0].protocol == ANTHROPIC:
        return False
    assert ctx.body is not None
    ctx.service = ctx.candidates[0]
    ctx.model = str(ctx.body.get("model") or ctx.service.default_model)
    tools = ctx.body.get("tools")
    n = estimate_prompt(ctx.body) + (len(orjson.dumps(tools)) + 3) // 4 if tools else estimate_prompt(ctx.body)
    ctx.status = 200
    request.respond(200, json_head(ctx.request_id, ctx.extra_lines()), orjson.dumps({"input_tokens": n}))
    return True


# ------------------------------------------------------------------ the attempts loop


def next_attempt(state: GatewayState, request: Request, ctx: RequestContext) -> bool:
    """Whether the loop makes another vendor attempt, and at which service.

    After a key the vendor refused, a ``failover`` service tries its next key (once);
    after a retryable failure — or a service skipped for its open circuit or its full
    keys — the next fallback service that serves the model; after an answer, or a
    vendor error that is the caller's (400, 404), nothing.
    """
    o = ctx.outcome
    if o is not None:
        if o.answered:
            return False
        svc = ctx.service
        retry_key = o.key_rejected and svc is not None and svc.key_policy == "failover"
        if retry_key and ctx.key_index == 0 and len(ctx.keys) > 1:
            ctx.key_index = 1
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
    svc, body = ctx.service, ctx.body
    assert svc is not None and body is not None and ctx.route is not None
    ctx.model = _model_for(svc, body)
    try:
        ctx.translation = translation_for(
            ctx.protocol, ctx.route.op, svc.protocol, svc.responses, body, ctx.model, svc.default_max_tokens
        )
    except NotTranslatable:
        raise bad_request(
            f"{ctx.route.route} cannot be sent to model service {svc.name!r}, which speaks {svc.protocol}; "
            "use /v1/chat/completions or /v1/responses",
            code="unsupported_route",
        ) from None
    if ctx.translation is None:
        ctx.upstream_body = upstream_body(ctx, ctx.model)
        return
    try:
        ctx.upstream_body = _dumps(ctx.translation.request())
    except UnsupportedParameter as exc:
        raise unsupported_parameter(exc.param, exc.message) from None


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
    return _dumps(new)


def _dumps(new: dict[str, Any]) -> bytes:
    try:
        return compact_json.dumps(new)  # held until the request ends: sized to fit
    except orjson.JSONEncodeError:  # deeper than orjson writes (255 levels): the stdlib can
        try:
            return json.dumps(new, ensure_ascii=False, separators=(",", ":")).encode()
        except (RecursionError, ValueError):
            raise bad_request("the request body is nested too deeply; flatten it", code="invalid_body") from None


async def stage_choose_key(state: GatewayState, request: Request, ctx: RequestContext) -> bool:
    """The service's circuit admits the request, and a key with a free slot is taken.

    The keys are tried in the key policy's order; when every one is at its
    ``max_concurrency`` the request queues, first come first served, up to the service's
    ``queue_timeout_s``. False: the attempt ended here (circuit open, no slot) and
    ``ctx.outcome`` says so; the loop goes on to the next fallback service.
    """
    svc = ctx.service
    assert svc is not None
    if ctx.key_index == 0:
        ctx.keys = state.balancer.order(svc)
        keys = ctx.keys
    else:  # failover's second try: any key but the one the vendor refused
        keys = [k for k in ctx.keys if k is not ctx.key] or ctx.keys
    ctx.attempt_began = ctx.elapsed_ms()
    adm = state.breakers.admit(svc)
    if not adm.allowed:
        health = state.breakers.health(svc)
        why = (
            f"its circuit is open after {health.consecutive_failures} failure(s) in a row"
            + (f" (last: {health.last_reason})" if health.last_reason else "")
            if adm.state == "open"
            else "its circuit is half-open and a trial request is under way"
        )
        _refused(
            ctx,
            svc,
            "circuit_open",
            service_unavailable(
                f"model service {svc.name!r} is unavailable: {why}; it is retried in {max(1, round(adm.retry_in_s))} s",
                adm.retry_in_s,
            ),
        )
        return False
    slot = state.slots.take_now(keys)
    if slot is None:  # shared counts, or a queue: the full path
        began = time.perf_counter_ns()
        try:
            slot = await state.slots.acquire(keys, svc.queue_timeout_s)
        except BaseException:  # cancelled, or shared slot counts out of reach (refused: 503)
            state.breakers.release(adm)
            raise
        ctx.waited_ns += time.perf_counter_ns() - began  # a queue for a key's slot is the vendor's capacity
    if slot is None:
        state.breakers.record(svc, adm, "concurrency")
        waited = f"no slot freed within its queue_timeout_s ({svc.queue_timeout_s:g} s)"
        _refused(
            ctx,
            svc,
            "concurrency",
            rate_limited(
                f"every model key of model service {svc.name!r} is at its max_concurrency and "
                f"{waited if svc.queue_timeout_s > 0 else 'the service does not queue (queue_timeout_s 0)'}; "
                "retry shortly",
                1.0,
                code="concurrency_limit_exceeded",
            ),
        )
        return False
    ctx.admission, ctx.slot = adm, slot
    ctx.key = next(k for k in keys if k.name == slot.key.name)
    ctx.key_name = ctx.key.name
    return True


def _refused(ctx: RequestContext, svc: Service, reason: Reason, err: GatewayError) -> None:
    """An attempt that never reached the vendor: on to the next fallback, else this answer."""
    ctx.outcome = Outcome(False, err.status, reason, retryable=True, error=err, detail=err.message)
    ctx.attempts.append(Attempt(svc.name, "", err.status, reason, ctx.elapsed_ms() - ctx.attempt_began))


def attempt_reason(o: Outcome, cooled: bool) -> Reason:
    """How an attempt ended, in the record's and the breaker's words (``ok``: the vendor answered)."""
    r = o.reason
    if not r:
        return "ok"
    if r == "timeout":
        return "timeout"
    if r == "first_byte_timeout":
        return "first_byte_timeout"
    if r.startswith("http_"):
        if o.status == 429:
            return "status_429"
        if o.status >= 500:
            return "status_5xx"
        return "key_cooldown" if cooled else "ok"
    if r in _CONNECT_REASONS:
        return "connect"
    return "status_5xx"  # the vendor's answer was broken: the gateway answers 502


#: Failures of reaching the vendor at all (or of the connection breaking under the answer).
_CONNECT_REASONS = frozenset({"connect", "connect_timeout", "tls", "proxy", "broken"})


async def stage_relay(state: GatewayState, request: Request, ctx: RequestContext) -> None:
    """Forward to the vendor and relay its answer (:mod:`proxy.relay`); count what failed.

    The key's slot is held until the answer is relayed to its end (a stream, its last
    event) and given back however the attempt ends — the client going away included.
    The breaker hears ``ok`` at the answer's first byte (a half-open trial need not
    wait for a long stream), else the failure's reason.
    """
    svc, key, adm, slot = ctx.service, ctx.key, ctx.admission, ctx.slot
    assert svc is not None and key is not None and adm is not None and slot is not None and state.pool is not None
    answered = False

    def first_byte() -> None:
        nonlocal answered
        answered = True
        state.breakers.record(svc, adm, "ok")

    ctx.on_first_byte = first_byte
    try:
        o = await forward(request, ctx, state.pool, svc, key, state.client_timeout_s)
    except GatewayError as err:  # the key's env variable is missing: the operator's to fix
        state.breakers.release(adm)
        state.upstream_failed(svc.name, "key_unavailable", err.message)
        raise
    except BaseException:  # cancelled: the client went away
        if answered:
            ctx.attempts.append(Attempt(svc.name, key.name, ctx.status, "ok", ctx.elapsed_ms() - ctx.attempt_began))
        else:
            state.breakers.release(adm)
        raise
    finally:
        ctx.on_first_byte = None
        ctx.admission = ctx.slot = None
        slot.release()
    ctx.outcome = o
    cooled = o.key_rejected and svc.key_policy == "failover"
    reason = "ok" if answered else attempt_reason(o, cooled)
    if not answered:
        state.breakers.record(svc, adm, reason)
    ctx.attempts.append(Attempt(svc.name, key.name, o.status, reason, ctx.elapsed_ms() - ctx.attempt_began))
    if o.reason and (o.answered or o.retryable or o.key_rejected):  # a vendor's 400/404 is the caller's
        state.upstream_failed(svc.name, o.reason, o.detail)
    if cooled:
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
    if ctx.translation is not None:  # the vendor's error in the client's protocol, its message kept
        status, body = ctx.translation.error(o.status, o.body)
        request.respond(status, JSON + request_id_line(ctx.request_id) + ctx.extra_lines(), body)
        return
    request.respond(o.status, relayed_head(o.headers, ctx.request_id, ctx.extra_lines()), o.body)


# ------------------------------------------------------------------ after the answer


def stage_account(state: GatewayState, request: Request | None, ctx: RequestContext) -> None:
    ctx.cost = cost_of(ctx.service, ctx.model, ctx.usage)
    if ctx.consumer is not None and ctx.api is not None:  # a cache hit is charged no tokens
        state.limiter.settle(ctx, None if ctx.cache == "hit" else ctx.usage)


def stage_log(state: GatewayState, request: Request | None, ctx: RequestContext) -> None:
    state.recorder.submit(record_of(ctx))
    if request is not None and ctx.status != 499:
        observe_overhead(state, ctx)


def observe_overhead(state: GatewayState, ctx: RequestContext) -> None:
    """The request's own time in the gateway, into ``aigw_overhead_seconds``.

    Its wall time, from the head parsed to the record handed on, less what it waited on
    others (``ctx.waited_ns``). Not for a request the client left (499): its end is the
    client's doing, and the wait it left in is unknown. Nor for those the HTTP layer
    refused before the pipeline (no ``request``).
    """
    ns = int((time.perf_counter() - ctx.started) * 1e9) - ctx.waited_ns
    outcome = "cache" if ctx.cache == "hit" else "gateway" if ctx.key is None else "vendor"
    state.metrics.observe_overhead(ctx.stream, outcome, max(0, ns))


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
        if ctx.cache and await stage_cache_lookup(state, request, ctx):  # an API with a cache only
            return
        stage_choose_service(state, request, ctx)
        if stage_count_tokens(state, request, ctx):
            return
        while next_attempt(state, request, ctx):
            stage_choose_model(state, request, ctx)
            if await stage_choose_key(state, request, ctx):
                await stage_relay(state, request, ctx)
        stage_answer_failure(state, request, ctx)
        if ctx.cache_key is not None:  # marked for storing by the lookup
            await stage_cache_store(state, request, ctx)
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
    request.respond(err.status, head, err.body(ctx.protocol), close=err.status == 408)


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
