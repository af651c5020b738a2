"""Client speaks Anthropic Messages, vendor speaks OpenAI chat completions.

``request`` turns a ``/v1/messages`` body into a chat completions body, ``answer`` the
vendor's ``chat.completion`` into a ``message``, ``StreamTranslator`` the vendor's
chunks into Anthropic's event stream as they arrive, and ``error`` the vendor's error
into Anthropic's error shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.protocols import sse, tool_args
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage

_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ------------------------------------------------------------------ request


def _text(blocks: Any) -> str:
    """The text of a string or a list of text blocks (system prompts, tool results)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    return "\n".join(b.get("text", "") for b in blocks if isinstance(b, Mapping) and b.get("type") == "text")


def _image(block: Mapping[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = str(src.get("url", ""))
    else:
        raise UnsupportedParameter(
            "image.source", f"image source type {src.get('type')!r} cannot be sent to this model"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _user_turn(content: Any) -> list[dict[str, Any]]:
    """A user turn: its tool results become ``tool`` messages first (chat completions
    wants them right after the assistant's calls), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "tool_result":
            result = block.get("content")
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": _text(result)})
            # A tool message holds text only: images a tool returned follow as user content.
            if isinstance(result, list):
                parts.extend(_image(b) for b in result if isinstance(b, Mapping) and b.get("type") == "image")
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise UnsupportedParameter(
                f"content.{kind}", f"content blocks of type {kind!r} cannot be sent to this model"
            )
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _assistant_turn(content: Any) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": tool_args.dump(block.get("input"))},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):
            raise UnsupportedParameter(
                f"content.{kind}", f"content blocks of type {kind!r} cannot be sent to this model"
            )
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        if t.get("type") not in (None, "custom"):
            raise UnsupportedParameter("tools", f"the server tool {t.get('type')!r} is not available on this model")
        fn: dict[str, Any] = {"name": t.get("name", ""), "parameters": t.get("input_schema") or {"type": "object"}}
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The chat completions body for an Anthropic ``/v1/messages`` body.

    Dropped, having no counterpart: ``top_k``, ``thinking``, ``cache_control`` marks,
    thinking blocks of earlier turns, ``is_error`` on tool results. Refused
    (``UnsupportedParameter``): server tools, document and other non-text/image blocks.
    """
    messages: list[dict[str, Any]] = []
    system = _text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for m in body.get("messages") or []:
        if m.get("role") == "assistant":
            messages.append(_assistant_turn(m.get("content")))
        else:
            messages.extend(_user_turn(m.get("content")))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if "max_tokens" in body:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
        elif kind in _TOOL_CHOICE:
            out["tool_choice"] = _TOOL_CHOICE[kind]
        if choice.get("disable_parallel_tool_use") and body.get("tools"):
            out["parallel_tool_calls"] = False
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out["user"] = user
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# ------------------------------------------------------------------ answer


def _message_id(vendor_id: Any) -> str:
    return f"msg_{vendor_id}" if isinstance(vendor_id, str) and vendor_id else tool_args.new_id("msg_")


def _stop_reason(finish: Any, has_calls: bool) -> str:
    # Some vendors say "stop" after tool calls: the client must still run the tools.
    if has_calls and finish in ("stop", "tool_calls", "function_call", None):
        return "tool_use"
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def answer(openai_answer: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The Anthropic ``message`` for a ``chat.completion``. OpenAI does not say which
    stop sequence ended the text, so ``stop`` is always ``end_turn``."""
    choices = openai_answer.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    calls = msg.get("tool_calls") or []
    for call in calls:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or tool_args.new_id("toolu_"),
                "name": fn.get("name", ""),
                "input": tool_args.parse(fn.get("arguments")),
            }
        )
    usage = Usage.from_openai(openai_answer.get("usage")) or Usage()
    return {
        "id": _message_id(openai_answer.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(choice.get("finish_reason"), bool(calls)),
        "stop_sequence": None,
        "usage": usage.to_anthropic(),
    }


# ------------------------------------------------------------------ errors

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status (the SDK picks its exception by status,
    Claude Code shows the type)."""
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "api_error"


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")[:2000]
    return body[:2000] if isinstance(body, str) else "the model service failed"


def error(status: int, openai_error_body: Any) -> tuple[int, dict[str, Any]]:
    """The status and Anthropic error body for a vendor's OpenAI-shaped error (or any
    body: a vendor's HTML page is kept as the message, cut short)."""
    return status, {"type": "error", "error": {"type": error_type(status), "message": _message(openai_error_body)}}


# ------------------------------------------------------------------ stream


class StreamTranslator(sse.ChatChunkTranslator):
    """OpenAI chunks in, Anthropic events out. Holds the one open content block (a
    text or a tool call); a new block closes it, as Anthropic's streams never have two
    open. ``message_delta`` waits for the end of the vendor's stream, since OpenAI
    sends usage in a chunk of its own after the finish reason."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self._started = False
        self._closed = False
        self._next_index = 0
        #: The open block: ("text", index) or ("tool", index); None when none is open.
        self._open: tuple[str, int] | None = None
        #: OpenAI tool-call index → Anthropic block index.
        self._tools: dict[int, int] = {}
        self._finish: Any = None

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        if self._closed:
            return []
        if "error" in chunk and "choices" not in chunk:
            self._closed = True
            err = chunk["error"]
            code = err.get("code") if isinstance(err, Mapping) else None
            status = code if isinstance(code, int) else 500
            return [sse.encode(error(status, chunk)[1], "error")]
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start(chunk))
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._open is None or self._open[0] != "text":
                    out.extend(self._start({"type": "text", "text": ""}, "text"))
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                out.extend(self._tool_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out.extend(self._stop())
        return out

    def close(self) -> list[bytes]:
        """The end of the vendor's stream: close what is open, report why it stopped
        and the usage, end the message. A second call does nothing."""
        if self._closed:
            return []
        out: list[bytes] = []
        if not self._started:
            out.append(self._message_start({}))
        out.extend(self._stop())
        self._closed = True
        usage = self.usage or Usage()
        delta_usage = usage.to_anthropic()
        out.append(
            sse.encode(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _stop_reason(self._finish, bool(self._tools)), "stop_sequence": None},
                    "usage": delta_usage,
                },
                "message_delta",
            )
        )
        out.append(sse.encode({"type": "message_stop"}, "message_stop"))
        return out

    def _message_start(self, chunk: Mapping[str, Any]) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse.encode({"type": "message_start", "message": message}, "message_start")

    def _start(self, block: dict[str, Any], kind: str) -> list[bytes]:
        out = self._stop()
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        out.append(
            sse.encode({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")
        )
        return out

    def _delta(self, delta: dict[str, Any], index: int | None = None) -> bytes:
        at = index if index is not None else self._open[1] if self._open else 0
        return sse.encode({"type": "content_block_delta", "index": at, "delta": delta}, "content_block_delta")

    def _stop(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [sse.encode({"type": "content_block_stop", "index": index}, "content_block_stop")]

    def _tool_delta(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        at = call.get("index", 0)
        fn = call.get("function") or {}
        if at not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id") or tool_args.new_id("toolu_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            out.extend(self._start(block, "tool"))
            self._tools[at] = self._next_index - 1
        fragment = fn.get("arguments")
        if fragment:
            # A vendor interleaving parallel calls sends fragments of a call whose block
            # is already closed: they go out by index, which the SDKs accumulate by.
            out.append(self._delta({"type": "input_json_delta", "partial_json": fragment}, self._tools[at]))
        return out
