"""Client speaks Anthropic, vendor speaks OpenAI chat: golden shapes from both API
references. The official ``anthropic`` SDK reads the translated answers in
``tests/gateway/test_sdk_reads_anthropic_to_openai.py``."""

from __future__ import annotations

from typing import Any

import pytest
from translations import events, load, replay

from proxy.protocols import anthropic_to_openai as a2o
from proxy.protocols.unsupported import UnsupportedParameter


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


def test_error_from_a_non_json_body_keeps_the_text() -> None:
    assert a2o.error(502, b"<html>Bad Gateway</html>")[1]["error"]["message"] == "<html>Bad Gateway</html>"
