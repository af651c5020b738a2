"""The official ``openai`` SDK (its Responses types and its streaming helper) reads what
the Responses-to-chat bridge answers, served by a real HTTP server. The golden shapes
alone are in ``tests/protocols``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from translations import events, load, replay

from proxy.protocols import responses_bridge as rb
from proxy.protocols.usage import Usage

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def test_answer_validates_and_the_sdk_reads_it(serving: Callable[..., str]) -> None:
    chat = load("openai_answer_tools.json")["openai"]
    body = {"model": "gpt-4.1", "input": "Weather?", "tools": [{"type": "function", "name": "get_weather"}]}
    out = rb.answer(chat, body, "gpt-4.1")
    resp = Response.model_validate(out)
    assert resp.id.startswith("resp_") and resp.status == "completed"
    assert [o.type for o in resp.output] == ["message", "function_call", "function_call"]
    assert resp.output_text == "Let me look both up."
    assert out["output"][1]["call_id"] == "call_abc" and out["output"][1]["arguments"] == '{"city": "Paris"}'
    assert out["usage"] == {
        "input_tokens": 1117,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
        "output_tokens": 46,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 1163,
    }
    client = openai.OpenAI(api_key="k", base_url=serving(200, json.dumps(out).encode()))
    assert client.responses.create(model="m", input="x").output_text == "Let me look both up."


def test_answer_cut_short_is_incomplete() -> None:
    chat = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Once upon"}, "finish_reason": "length"}]
    }
    resp = Response.model_validate(rb.answer(chat, {"input": "story"}, "m"))
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_output_tokens"


def test_stream_events_in_order_with_sequence_numbers() -> None:
    chunks = load("openai_stream_tools.json")["chunks"]
    out = events(replay(rb.StreamTranslator({"input": "x"}, "gpt-4.1"), chunks))
    data = [e.json() for e in out]
    for e, d in zip(out, data, strict=True):
        assert e.event == d["type"]
        STREAM_EVENT.validate_python(d)
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [d["type"] for d in data] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert data[0]["response"]["status"] == "in_progress" and data[0]["response"]["output"] == []
    done = data[-1]["response"]
    assert done["usage"]["input_tokens_details"]["cached_tokens"] == 2048
    assert done["output"][1]["arguments"] == '{"city": "Paris"}'


def test_stream_read_by_the_sdk_helper(serving: Callable[..., str]) -> None:
    chunks = load("openai_stream_tools.json")["chunks"]
    tr = rb.StreamTranslator({"input": "x"}, "gpt-4.1")
    body = b"".join(replay(tr, chunks))
    client = openai.OpenAI(api_key="k", base_url=serving(200, body, "text/event-stream"))
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {}, "strict": False}]
    with client.responses.stream(model="m", input="x", tools=tools) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Checking", " both."]
    assert final.output_text == "Checking both."
    assert final.usage is not None and final.usage.output_tokens == 38
    assert tr.usage == Usage(2100, 38, 2048)


def test_stream_cut_short_ends_incomplete() -> None:
    chunks = [
        {"id": "c", "choices": [{"index": 0, "delta": {"content": "Once"}, "finish_reason": None}]},
        {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    ]
    data = [e.json() for e in events(replay(rb.StreamTranslator({"input": "x"}, "m"), chunks))]
    assert data[-1]["type"] == "response.incomplete"
    assert data[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    STREAM_EVENT.validate_python(data[-1])


def test_stream_error_chunk_becomes_an_error_event() -> None:
    tr = rb.StreamTranslator({"input": "x"}, "m")
    out = [e.json() for e in events(tr.feed({"error": {"message": "boom", "code": "server_error"}}))]
    assert out == [{"type": "error", "sequence_number": 0, "code": "server_error", "message": "boom", "param": None}]
    STREAM_EVENT.validate_python(out[0])
    assert tr.close() == []
