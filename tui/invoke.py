"""One real request through the gateway, and what went wrong in plain words.

Used by Route Management's "Try it" and Quick Start's last step. Blocking (httpx):
call it from a thread worker. The consumer key is only held for the request; it is
never stored, logged or put into a diagnosis.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any

import httpx

from store import repo
from store.db import Store
from store.spec import GatewaySpec, ModelApiSpec

DEFAULT_MESSAGE = "Hello, please introduce yourself."
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class InvokeResult:
    """What happened; ``step`` names the table to fix (``gateway``, ``model_keys``, …)."""

    ok: bool
    status: int | None
    latency_ms: float
    answer: str = ""
    diagnosis: str = ""
    step: str | None = None
    model: str = ""
    request_id: str = ""
    body: str = ""


def access_urls(gateway: GatewaySpec, api: ModelApiSpec) -> list[str]:
    """Full addresses a client calls: ``{public_url}{base_path}{route}`` for every route."""
    base = gateway.effective_public_url() + api.base_path
    return [base + r for r in api.routes]


def curl_command(
    url: str, model: str, api_key: str = "<API_KEY>", message: str = DEFAULT_MESSAGE, protocol: str | None = None
) -> str:
    """The example request as curl, with real values (the key stays a placeholder unless given), in the
    API's protocol: Anthropic's headers (``x-api-key``, ``anthropic-version``) for an
    ``anthropic`` API (known from its Messages route when not given)."""
    if protocol is None:
        protocol = "anthropic" if url.endswith(("/v1/messages", "/v1/messages/count_tokens")) else "openai"
    body = json.dumps(request_body(url, model, message), ensure_ascii=False, indent=2)
    auth = (
        f'  -H "x-api-key: {api_key}" \\\n  -H "anthropic-version: 2023-06-01" \\\n'
        if protocol == "anthropic"
        else f'  -H "Authorization: Bearer {api_key}" \\\n'
    )
    return (
        f"curl -i -X POST {shlex.quote(url)} \\\n"
        f'  -H "Content-Type: application/json" \\\n'
        f"{auth}"
        f"  -d {shlex.quote(body)}"
    )


def request_body(url: str, model: str, message: str) -> dict[str, Any]:
    """The body the route expects: chat messages, a completion prompt or an embedding input."""
    if url.endswith("/embeddings"):
        return {"model": model, "input": message}
    if url.endswith("/completions") and not url.endswith("/chat/completions"):
        return {"model": model, "prompt": message, "max_tokens": 256}
    if url.endswith("/messages"):
        return {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": message}]}
    if url.endswith("/messages/count_tokens"):
        return {"model": model, "messages": [{"role": "user", "content": message}]}
    if url.endswith("/responses"):
        return {"model": model, "input": message}
    return {"model": model, "messages": [{"role": "user", "content": message}], "stream": False}


def _error_message(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or "")
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return ""


def _answer(data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("data"), list) and data["data"]:
        vec = data["data"][0].get("embedding") if isinstance(data["data"][0], dict) else None
        if isinstance(vec, list):
            return f"an embedding of {len(vec)} dimensions"
    if isinstance(data, dict) and data.get("type") == "message":  # Anthropic Messages
        return "".join(str(b.get("text", "")) for b in data.get("content") or [] if isinstance(b, dict))
    if isinstance(data, dict) and isinstance(data.get("input_tokens"), int) and "object" not in data:
        return f"{data['input_tokens']} input tokens"
    if isinstance(data, dict) and data.get("object") == "response":  # the Responses API
        return "".join(
            str(part.get("text", ""))
            for item in data.get("output") or []
            if isinstance(item, dict)
            for part in item.get("content") or []
            if isinstance(part, dict)
        )
    try:
        msg = data["choices"][0]["message"]
        return str(msg.get("content") or msg.get("reasoning_content") or "")
    except (KeyError, IndexError, TypeError):
        try:
            return str(data["choices"][0]["text"])
        except (KeyError, IndexError, TypeError):
            return ""


def diagnose(status: int, message: str, *, key_known: bool | None = None) -> tuple[str, str | None]:
    """Plain words for a failed answer, and the step (table) to go back to.

    ``key_known``: whether the store knows the consumer key used — it tells a 401 from
    the gateway (unknown key) apart from a 401 the vendor sent about the *model* key.
    """
    said = f" (the gateway said: {message})" if message else ""
    if status == 401 and "disabled" in message.lower():
        return "This consumer is disabled: enable it in Consumers" + said, "consumers"
    if status == 401 and key_known is not False and (key_known or "vendor" in message.lower()):
        return (
            "The vendor rejected the model key: check the credential in Key Management "
            "(or the environment variable it names)" + said,
            "model_keys",
        )
    if status == 401:
        return (
            "The gateway does not accept this API key: use a key created for the consumer "
            "(Consumers → Create Key), and check the consumer is enabled" + said,
            "consumers",
        )
    if status == 403:
        if key_known and "vendor" in message.lower():
            return "The vendor refused the request with the model key" + said, "model_keys"
        return (
            "This consumer is not authorized for this API: add the API to one of its "
            "consumer groups (Consumer Groups → Authorized Model APIs)" + said,
            "consumer_groups",
        )
    if status == 404:
        if "model" in message.lower():
            return "The model is not offered by this API's services" + said, "model_services"
        return "No model API serves this address: check the base path and route" + said, "model_apis"
    if status == 429:
        if "quota" in message.lower():
            return "The consumer's quota is used up for this period" + said, "consumers"
        return (
            "Rate limited: the group's requests/tokens per minute (or the vendor's own limit)" + said,
            "consumer_groups",
        )
    if status == 502:
        return (
            "The gateway cannot reach the vendor: check the service address and that this machine can reach it" + said,
            "model_services",
        )
    if status == 504:
        return "The vendor did not answer in time (the service's timeout)" + said, "model_services"
    if status in (400, 413, 422):
        return "The request was refused as invalid" + said, "model_services"
    if status >= 500:
        return f"The vendor or the gateway failed with status {status}" + said, "model_services"
    return f"Unexpected status {status}" + said, None


def send_chat(
    url: str,
    api_key: str,
    model: str,
    *,
    message: str = DEFAULT_MESSAGE,
    store: Store | None = None,
    timeout: float = TIMEOUT_S,
) -> InvokeResult:
    """POST a one-message chat request to ``url`` with ``api_key``; never raises for network trouble."""
    key_known: bool | None = None
    if store is not None and api_key:
        with store.session() as s:
            key_known = repo.consumer_for_key(s, api_key) is not None
    if not api_key:
        return InvokeResult(
            False,
            None,
            0.0,
            diagnosis="Paste a consumer API key first (Consumers → Create Key shows a new one once)",
            step="consumers",
        )
    body = request_body(url, model, message)
    started = time.perf_counter()
    try:
        r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
    except httpx.ConnectError:
        return InvokeResult(
            False,
            None,
            (time.perf_counter() - started) * 1000,
            diagnosis=f"The gateway is not running: nothing answers at {url}. "
            "Start it with ctrl+g (or Instance Info → Start)",
            step="gateway",
        )
    except httpx.TimeoutException:
        return InvokeResult(
            False,
            None,
            (time.perf_counter() - started) * 1000,
            diagnosis=f"No answer within {timeout:g} s",
            step="model_services",
        )
    except httpx.HTTPError as exc:
        return InvokeResult(
            False,
            None,
            (time.perf_counter() - started) * 1000,
            diagnosis=f"The request failed: {type(exc).__name__}",
            step="gateway",
        )
    latency = (time.perf_counter() - started) * 1000
    text = r.text[:4000]
    try:
        data: Any = r.json()
    except ValueError:
        data = None
    rid = r.headers.get("x-request-id", "")
    if r.status_code == 200:
        answer = _answer(data)
        return InvokeResult(
            True,
            200,
            latency,
            answer=answer or text,
            model=str((data or {}).get("model", model)) if isinstance(data, dict) else model,
            request_id=rid,
            body=text,
        )
    diagnosis, step = diagnose(r.status_code, _error_message(data), key_known=key_known)
    return InvokeResult(False, r.status_code, latency, diagnosis=diagnosis, step=step, request_id=rid, body=text)
