"""Client speaks Anthropic, vendor speaks OpenAI chat: golden shapes from both API
references, and the official ``anthropic`` SDK reading the translated answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from conftest import events, load, replay
from pydantic import TypeAdapter

from proxy.protocols import anthropic_to_openai as a2o
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)


def test_request_golden() -> None:
    fx = load("anthropic_request.json")
    assert a2o.request(fx["anthropic"], "gpt-4o-mini") == fx["openai"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: Any) -> None:
    body = {
        "messages": [],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": choice,
    }
    out = a2o.request(body, "m")
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_plain_request_without_stream_asks_nothing_extra() -> None:
    out = a2o.request({"max_tokens": 10, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}, "m")
    assert out == {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


def test_images_returned_by_a_tool_follow_as_user_content() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA="}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "shot"}, image]}
    out = a2o.request({"messages": [{"role": "user", "content": [result]}]}, "m")
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "shot"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}}]},
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64"}}]}]},
            "content.document",
        ),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        a2o.request(body, "m")
    assert err.value.param == param


def test_answer_golden_and_sdk_parses_it(serving: Callable[..., str]) -> None:
    fx = load("openai_answer_tools.json")
    out = a2o.answer(fx["openai"], "claude-sonnet-4-5")
    assert out == fx["anthropic"]
    client = anthropic.Anthropic(api_key="k", base_url=serving(200, json.dumps(out).encode()))
    msg = client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert msg.stop_reason == "tool_use"
    assert msg.usage.cache_read_input_tokens == 1024


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "tool_use"), ("content_filter", "refusal")],
)
def test_stop_reasons(finish: str, stop_reason: str) -> None:
    answer = {
        "id": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": finish}],
    }
    out = a2o.answer(answer, "m")
    assert out["stop_reason"] == stop_reason
    anthropic.types.Message.model_validate(out)


def test_stream_golden_events() -> None:
    chunks = load("openai_stream_tools.json")["chunks"]
    out = events(replay(a2o.StreamTranslator("claude-sonnet-4-5"), chunks))
    kinds = [(e.event, e.json().get("index"), (e.json().get("delta") or {}).get("type")) for e in out]
    assert kinds == [
        ("message_start", None, None),
        ("content_block_start", 0, None),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, None),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, None),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    for e in out:
        STREAM_EVENT.validate_python(e.json())
    final = out[-2].json()
    assert final["delta"]["stop_reason"] == "tool_use"
    # Usage reaches the client on message_delta, arriving after the finish chunk.
    assert final["usage"] == {
        "input_tokens": 52,
        "output_tokens": 38,
        "cache_read_input_tokens": 2048,
        "cache_creation_input_tokens": 0,
    }


def test_stream_read_by_the_sdk(serving: Callable[..., str]) -> None:
    chunks = load("openai_stream_tools.json")["chunks"]
    tr = a2o.StreamTranslator("claude-sonnet-4-5")
    body = b"".join(replay(tr, chunks))
    client = anthropic.Anthropic(api_key="k", base_url=serving(200, body, "text/event-stream"))
    with client.messages.stream(model="m", max_tokens=10, messages=[{"role": "user", "content": "x"}]) as s:
        msg = s.get_final_message()
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[0].text == "Checking both."  # type: ignore[union-attr]
    assert msg.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert msg.content[2].input == {"zone": "Europe/Paris"}  # type: ignore[union-attr]
    assert msg.stop_reason == "tool_use"
    assert msg.usage.output_tokens == 38
    assert tr.usage == Usage(2100, 38, 2048)


def test_text_after_tool_calls_opens_a_new_block() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({"content": "done"}),
        chunk({}, "stop"),
    ]
    out = [e.json() for e in events(replay(a2o.StreamTranslator("m"), chunks))]
    starts = [e["content_block"]["type"] for e in out if e["type"] == "content_block_start"]
    assert starts == ["tool_use", "text"]
    assert out[-2]["delta"]["stop_reason"] == "tool_use"
    assert out[-2]["usage"]["output_tokens"] == 0


def test_stream_error_chunk_becomes_an_error_event() -> None:
    tr = a2o.StreamTranslator("m")
    out = events(tr.feed({"error": {"message": "overloaded", "type": "server_error", "code": None}}))
    assert out[-1].event == "error"
    assert out[-1].json() == {"type": "error", "error": {"type": "api_error", "message": "overloaded"}}
    assert tr.close() == []


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_errors(status: int, kind: str, serving: Callable[..., str]) -> None:
    vendor = {"error": {"message": "Rate limit reached for gpt-4o", "type": "requests", "code": "rate_limit_exceeded"}}
    got_status, body = a2o.error(status, vendor)
    assert got_status == status
    assert body == {"type": "error", "error": {"type": kind, "message": "Rate limit reached for gpt-4o"}}
    client = anthropic.Anthropic(api_key="k", base_url=serving(status, json.dumps(body).encode()), max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == status
    assert err.value.body == body


def test_error_from_a_non_json_body_keeps_the_text() -> None:
    assert a2o.error(502, b"<html>Bad Gateway</html>")[1]["error"]["message"] == "<html>Bad Gateway</html>"
