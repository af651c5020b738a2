"""Client speaks OpenAI chat completions, vendor speaks Anthropic Messages.

``request`` turns a chat completions body into a ``/v1/messages`` body, ``answer`` the
vendor's ``message`` into a ``chat.completion``, ``StreamTranslator`` Anthropic's events
into ``chat.completion.chunk`` data lines as they arrive, and ``error`` Anthropic's error
into OpenAI's shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy.protocols import sse, tool_args
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage

DEFAULT_MAX_TOKENS = 4096

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# ------------------------------------------------------------------ request


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")


def _image(part: Mapping[str, Any]) -> dict[str, Any]:
    ref = part.get("image_url")
    url = ref.get("url", "") if isinstance(ref, Mapping) else str(ref or "")
    if url.startswith("data:"):
        head, _, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if encoding != "base64":
            raise UnsupportedParameter("image_url", "data: image URLs must be base64-encoded")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Content parts as Anthropic blocks (empty texts left out: Anthropic refuses them)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get("text") or part.get("refusal") or ""
            if text:
                out.append({"type": "text", "text": text})
        elif kind == "image_url":
            out.append(_image(part))
        else:
            raise UnsupportedParameter(
                f"content.{kind}", f"content parts of type {kind!r} cannot be sent to this model"
            )
    return out


def _turns(messages: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            text = _text_of(content)
            if text:
                system.append(text)
            continue
        if role == "assistant":
            blocks = _blocks(content)
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": fn.get("name", ""),
                        "input": tool_args.parse(fn.get("arguments")),
                    }
                )
        elif role == "tool":
            role = "user"
            blocks = [{"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""), "content": _text_of(content)}]
        elif role == "user":
            blocks = _blocks(content)
        else:
            raise UnsupportedParameter("messages.role", f"messages of role {role!r} cannot be sent to this model")
        if not blocks:
            continue
        # Anthropic wants turns alternating: consecutive same-role messages become one.
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        if t.get("type") != "function":
            raise UnsupportedParameter("tools", f"tools of type {t.get('type')!r} cannot be sent to this model")
        fn = t.get("function") or {}
        tool: dict[str, Any] = {
            "name": fn.get("name", ""),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            tool["description"] = fn["description"]
        out.append(tool)
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    if choice is None:
        return None
    raise UnsupportedParameter("tool_choice", f"tool_choice {choice!r} cannot be sent to this model")


def request(body: Mapping[str, Any], model: str, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """The Anthropic body for a chat completions body.

    System and developer messages (wherever they stand) become ``system``; tool
    results a user turn of ``tool_result`` blocks; a missing ``max_tokens`` the
    service's default (Anthropic requires one). ``temperature`` is capped at 1
    (Anthropic's range). Refused: ``n`` > 1, ``response_format`` other than text,
    ``logprobs``, audio and file parts, non-function tools. Dropped (no counterpart):
    penalties, ``seed``, ``logit_bias``, ``stream_options`` (Anthropic always reports
    usage), ``reasoning_effort``, ``store``, ``metadata``, ``service_tier``.
    """
    if (body.get("n") or 1) > 1:
        raise UnsupportedParameter("n", "this model answers one choice per request: send n = 1")
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") not in (None, "text"):
        raise UnsupportedParameter("response_format", "this model does not take response_format; ask in the prompt")
    if body.get("logprobs"):
        raise UnsupportedParameter("logprobs", "this model does not return logprobs")
    system, turns = _turns(body.get("messages") or [])
    out: dict[str, Any] = {"model": model, "messages": turns}
    if system:
        out["system"] = "\n\n".join(system)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else default_max_tokens
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and body.get("tools"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        out["stream"] = True
    return out


# ------------------------------------------------------------------ answer


def _finish(stop_reason: Any) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def answer(message: Mapping[str, Any], model: str, created: int | None = None) -> dict[str, Any]:
    """The ``chat.completion`` for an Anthropic ``message`` (thinking blocks dropped)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": tool_args.dump(block.get("input"))},
                }
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    usage = Usage.from_anthropic(message.get("usage")) or Usage()
    return {
        "id": message.get("id") or tool_args.new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": created if created is not None else int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": msg, "finish_reason": _finish(message.get("stop_reason")), "logprobs": None}
        ],
        "usage": usage.to_openai(),
    }


# ------------------------------------------------------------------ errors

#: Anthropic error type → OpenAI's error type and the gateway's code for it.
ERROR_TYPES = {
    "invalid_request_error": ("invalid_request_error", "invalid_request"),
    "authentication_error": ("authentication_error", "invalid_api_key"),
    "permission_error": ("permission_error", "not_authorized"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "not_found_error": ("not_found_error", "not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "rate_limit_error": ("rate_limit_error", "rate_limit_exceeded"),
    "timeout_error": ("timeout_error", "upstream_timeout"),
    "api_error": ("server_error", "upstream_error"),
    "overloaded_error": ("server_error", "overloaded"),
}


def error(status: int, anthropic_error_body: Any) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI error body for Anthropic's ``{"type": "error", "error":
    {...}}``. Anthropic's own 529 (overloaded) becomes 503, which OpenAI clients know."""
    err = anthropic_error_body.get("error") if isinstance(anthropic_error_body, Mapping) else None
    kind = err.get("type") if isinstance(err, Mapping) else None
    message = err.get("message") if isinstance(err, Mapping) else None
    if not isinstance(message, str):
        raw = anthropic_error_body
        message = raw.decode("utf-8", "replace")[:2000] if isinstance(raw, bytes) else "the model service failed"
    default = (
        ("invalid_request_error", "invalid_request") if 400 <= status < 500 else ("server_error", "upstream_error")
    )
    type_, code = ERROR_TYPES.get(kind, default) if isinstance(kind, str) else default
    return (503 if status == 529 else status), {"error": {"message": message, "type": type_, "code": code}}


# ------------------------------------------------------------------ stream


class StreamTranslator:
    """Anthropic events in, ``chat.completion.chunk`` data lines out. Holds which
    Anthropic block index is which OpenAI tool-call index; text needs no state."""

    def __init__(self, model: str, include_usage: bool, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self._created = created if created is not None else int(time.time())
        self._id = tool_args.new_id("chatcmpl-")
        self._started = False
        self._done = False
        self._finish: str | None = None
        #: Anthropic block index → OpenAI tool-call index.
        self._tools: dict[int, int] = {}

    def feed_event(self, event: sse.Event) -> list[bytes]:
        """One event parsed from the vendor's stream."""
        try:
            data = event.json()
        except ValueError:
            return []
        return self.feed(data) if isinstance(data, Mapping) else []

    def feed(self, event: Mapping[str, Any]) -> list[bytes]:
        if self._done:
            return []
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            if message.get("id"):
                self._id = message["id"]
            self.usage = Usage.from_anthropic(message.get("usage"))
            return self._role()
        out = [] if self._started or kind in ("ping", "error") else self._role()
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                at = len(self._tools)
                self._tools[event.get("index", 0)] = at
                call = {
                    "index": at,
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": ""},
                }
                out.append(self._chunk({"tool_calls": [call]}))
            elif block.get("type") == "text" and block.get("text"):
                out.append(self._chunk({"content": block["text"]}))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                out.append(self._chunk({"content": delta["text"]}))
            elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                found = self._tools.get(event.get("index", 0))
                if found is not None:
                    call = {"index": found, "function": {"arguments": delta["partial_json"]}}
                    out.append(self._chunk({"tool_calls": [call]}))
        elif kind == "message_delta":
            later = Usage.from_anthropic(event.get("usage"))
            if later is not None:
                self.usage = later if self.usage is None else self.usage.merged(later)
            self._finish = _finish((event.get("delta") or {}).get("stop_reason"))
            out.append(self._chunk({}, self._finish))
        elif kind == "message_stop":
            out.extend(self.close())
        elif kind == "error":
            self._done = True
            status = 529 if (event.get("error") or {}).get("type") == "overloaded_error" else 500
            out.append(sse.encode(error(status, event)[1]))
        return out

    def close(self) -> list[bytes]:
        """The end of the vendor's stream: the usage chunk when the client asked for
        it, then ``[DONE]``. A second call does nothing."""
        if self._done:
            return []
        self._done = True
        out = [] if self._started else self._role()
        if self._finish is None:
            out.append(self._chunk({}, "stop"))
        if self.include_usage:
            out.append(
                sse.encode(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self.model,
                        "choices": [],
                        "usage": (self.usage or Usage()).to_openai(),
                    }
                )
            )
        out.append(sse.DONE)
        return out

    def _role(self) -> list[bytes]:
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.encode(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
        )
