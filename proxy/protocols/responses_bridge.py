"""Client speaks the OpenAI Responses API, vendor speaks chat completions.

The bridge keeps nothing between requests: what needs a stored conversation or
OpenAI's own tools is refused (``UnsupportedParameter``) rather than half-done.
``request`` builds the chat body, ``answer`` the ``response`` object, and
``StreamTranslator`` the Responses event stream from chat chunks as they arrive.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from proxy.protocols import sse, tool_args
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage

#: Fields that need state or tools only OpenAI has: refused when set.
REFUSED = ("previous_response_id", "conversation", "prompt", "background")


# ------------------------------------------------------------------ request


def _part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "refusal":
        return {"type": "text", "text": part.get("refusal", "")}
    if kind == "input_image" and part.get("image_url"):
        image: dict[str, Any] = {"url": part["image_url"]}
        if part.get("detail") in ("low", "high"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    name = "input_image.file_id" if kind == "input_image" else f"input.{kind}"
    raise UnsupportedParameter(name, f"content of type {kind!r} cannot be sent to this model")


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = [_part(p) for p in content or []]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    items = body.get("input")
    if isinstance(items, str):
        return [*messages, {"role": "user", "content": items}]
    for item in items or []:
        kind = item.get("type", "message")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": _content(item.get("content"))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id", ""),
                "type": "function",
                "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            # Parallel calls (and the text before them) are one assistant message in chat.
            if last is not None and last["role"] == "assistant" and isinstance(last.get("content"), str | None):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output)
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""), "content": text})
        elif kind == "reasoning":
            continue
        else:
            raise UnsupportedParameter(f"input.{kind}", f"input items of type {kind!r} need OpenAI's own service")
    return messages


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        if t.get("type") != "function":
            raise UnsupportedParameter("tools", f"the built-in tool {t.get('type')!r} is not available on this model")
        fn: dict[str, Any] = {"name": t.get("name", ""), "parameters": t.get("parameters") or {"type": "object"}}
        if t.get("description"):
            fn["description"] = t["description"]
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    raise UnsupportedParameter("tool_choice", f"tool_choice {choice!r} is not available on this model")


def _response_format(fmt: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    return None


def request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The chat completions body for a Responses body.

    Refused: ``previous_response_id``, ``conversation``, ``prompt``, ``background:
    true``, built-in tools, file inputs. ``store`` is ignored (nothing is stored, so
    a later ``previous_response_id`` is refused). Dropped: ``include``,
    ``truncation``, ``metadata``, ``max_tool_calls``.
    """
    for name in REFUSED:
        if body.get(name):
            raise UnsupportedParameter(name, f"{name} needs OpenAI's own Responses service; this model has none")
    out: dict[str, Any] = {"model": model, "messages": _messages(body)}
    if body.get("max_output_tokens") is not None:
        out["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("safety_identifier") and "user" not in out:
        out["user"] = body["safety_identifier"]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        out["reasoning_effort"] = effort
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        out["tool_choice"] = _tool_choice(body["tool_choice"])
    fmt = (body.get("text") or {}).get("format")
    if isinstance(fmt, Mapping):
        response_format = _response_format(fmt)
        if response_format is not None:
            out["response_format"] = response_format
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


# ------------------------------------------------------------------ answer


def _shell(body: Mapping[str, Any], response_id: str, model: str, created: float) -> dict[str, Any]:
    """The fields of a ``response`` that echo the request."""
    tool_choice = body.get("tool_choice", "auto")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "model": model,
        "output": [],
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": tool_choice,
        "tools": list(body.get("tools") or []),
        "text": body.get("text") or {"format": {"type": "text"}},
        "metadata": body.get("metadata") or {},
        "error": None,
        "incomplete_details": None,
        "usage": None,
    }


def _status(finish: Any) -> tuple[str, dict[str, Any] | None]:
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def answer(chat_answer: Mapping[str, Any], body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The ``response`` object for a ``chat.completion`` (``body`` is the client's
    Responses request, which the object echoes)."""
    choice = (chat_answer.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    out = _shell(body, tool_args.new_id("resp_"), model, float(chat_answer.get("created") or time.time()))
    if msg.get("content"):
        out["output"].append(_message_item(tool_args.new_id("msg_"), msg["content"], status))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        out["output"].append(
            _call_item(
                tool_args.new_id("fc_"),
                call.get("id") or tool_args.new_id("call_"),
                fn.get("name", ""),
                fn.get("arguments") or "",
                "completed",
            )
        )
    out["status"] = status
    out["incomplete_details"] = incomplete
    out["usage"] = (Usage.from_openai(chat_answer.get("usage")) or Usage()).to_responses()
    return out


# ------------------------------------------------------------------ stream


class StreamTranslator(sse.ChatChunkTranslator):
    """Chat chunks in, Responses events out, each with its ``sequence_number``.

    Holds the open output item (a message being written or a function call whose
    arguments are arriving) and the items done so far, since the closing events and
    ``response.completed`` repeat the full text and arguments."""

    def __init__(self, body: Mapping[str, Any], model: str, created: float | None = None) -> None:
        self.usage: Usage | None = None
        self._response = _shell(body, tool_args.new_id("resp_"), model, created or time.time())
        self._seq = 0
        self._started = False
        self._done = False
        self._finish: Any = None
        #: The open item: its output index, or None.
        self._open: int | None = None
        #: Chat tool-call index → output index.
        self._calls: dict[int, int] = {}

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        if self._done:
            return []
        if "error" in chunk and "choices" not in chunk:
            self._done = True
            err = chunk["error"] if isinstance(chunk["error"], Mapping) else {}
            return [
                self._event(
                    "error",
                    code=err.get("code") if isinstance(err.get("code"), str) else "upstream_error",
                    message=str(err.get("message") or "the model service failed"),
                    param=None,
                )
            ]
        out = self._begin()
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.extend(self._text(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out.extend(self._call(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                out.extend(self._close_item())
        return out

    def close(self) -> list[bytes]:
        """The end of the vendor's stream: ``response.completed`` (or
        ``response.incomplete`` when the output was cut short) with the usage."""
        if self._done:
            return []
        out = self._begin()
        out.extend(self._close_item())
        self._done = True
        status, incomplete = _status(self._finish)
        self._response["status"] = status
        self._response["incomplete_details"] = incomplete
        self._response["usage"] = (self.usage or Usage()).to_responses()
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._event(kind, response=self._response))
        return out

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse.encode(data, kind)

    def _begin(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        return [
            self._event("response.created", response=self._response),
            self._event("response.in_progress", response=self._response),
        ]

    def _add(self, item: dict[str, Any]) -> bytes:
        self._response["output"].append(item)
        self._open = len(self._response["output"]) - 1
        return self._event("response.output_item.added", output_index=self._open, item=item)

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        item = self._response["output"][self._open] if self._open is not None else None
        if item is None or item["type"] != "message":
            out.extend(self._close_item())
            item = _message_item(tool_args.new_id("msg_"), "", "in_progress")
            part = item["content"][0]
            item["content"] = []
            out.append(self._add(item))
            item["content"].append(part)
            out.append(self._event("response.content_part.added", **self._where(item), part=dict(part)))
        item["content"][0]["text"] += text
        out.append(self._event("response.output_text.delta", **self._where(item), delta=text, logprobs=[]))
        return out

    def _where(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self._open, "content_index": 0}

    def _call(self, call: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        at = call.get("index", 0)
        fn = call.get("function") or {}
        if at not in self._calls:
            out.extend(self._close_item())
            item = _call_item(
                tool_args.new_id("fc_"),
                call.get("id") or tool_args.new_id("call_"),
                fn.get("name") or "",
                "",
                "in_progress",
            )
            out.append(self._add(dict(item)))
            self._calls[at] = len(self._response["output"]) - 1
        index = self._calls[at]
        fragment = fn.get("arguments")
        if fragment:
            item = self._response["output"][index]
            item["arguments"] += fragment
            # A late fragment of an interleaved parallel call still goes out by index.
            out.append(
                self._event(
                    "response.function_call_arguments.delta", item_id=item["id"], output_index=index, delta=fragment
                )
            )
        return out

    def _close_item(self) -> list[bytes]:
        if self._open is None:
            return []
        index, self._open = self._open, None
        item = self._response["output"][index]
        item["status"] = "completed"
        out: list[bytes] = []
        if item["type"] == "message":
            part = item["content"][0]
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self._event("response.output_text.done", **where, text=part["text"], logprobs=[]))
            out.append(self._event("response.content_part.done", **where, part=part))
        else:
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out
