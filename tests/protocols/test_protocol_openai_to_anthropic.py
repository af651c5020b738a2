"""Client speaks OpenAI chat, vendor speaks Anthropic: golden shapes from both API
references, and the official ``openai`` SDK reading the translated answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from conftest import events, load, replay

from proxy.protocols import anthropic_to_openai as a2o
from proxy.protocols import openai_to_anthropic as o2a
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage


def test_request_golden() -> None:
    fx = load("openai_request.json")
    assert o2a.request(fx["openai"], "claude-sonnet-4-5-20250929") == fx["anthropic"]


def test_max_tokens_default_and_explicit() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert o2a.request({"messages": msgs}, "m")["max_tokens"] == 4096
    assert o2a.request({"messages": msgs}, "m", default_max_tokens=1000)["max_tokens"] == 1000
    assert o2a.request({"messages": msgs, "max_tokens": 50}, "m")["max_tokens"] == 50
    assert o2a.request({"messages": msgs, "max_completion_tokens": 60, "max_tokens": 50}, "m")["max_tokens"] == 60


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice(choice: str, expected: dict[str, Any]) -> None:
    body = {"messages": [], "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": choice}
    assert o2a.request(body, "m")["tool_choice"] == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [], "n": 2}, "n"),
        ({"messages": [], "response_format": {"type": "json_object"}}, "response_format"),
        ({"messages": [], "tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "content.input_audio",
        ),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        o2a.request(body, "m")
    assert err.value.param == param


def test_answer_golden_and_sdk_parses_it(serving: Callable[..., str]) -> None:
    fx = load("anthropic_answer.json")
    out = o2a.answer(fx["anthropic"], "claude-sonnet-4-5", created=1700000000)
    assert out == fx["openai"]
    client = openai.OpenAI(api_key="k", base_url=serving(200, json.dumps(out).encode()))
    got = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert got.choices[0].finish_reason == "tool_calls"
    assert got.usage is not None and got.usage.prompt_tokens_details is not None
    assert got.usage.prompt_tokens_details.cached_tokens == 2000


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reasons(stop_reason: str, finish: str) -> None:
    msg = {"id": "msg_1", "content": [{"type": "text", "text": "hi"}], "stop_reason": stop_reason, "usage": {}}
    out = o2a.answer(msg, "m")
    assert out["choices"][0]["finish_reason"] == finish
    openai.types.chat.ChatCompletion.model_validate(out)


def test_stream_read_by_the_sdk(serving: Callable[..., str]) -> None:
    anthropic_events = load("anthropic_stream_tools.json")["events"]
    tr = o2a.StreamTranslator("claude-sonnet-4-5", include_usage=True)
    body = b"".join(replay(tr, anthropic_events))
    assert body.endswith(b"data: [DONE]\n\n")
    client = openai.OpenAI(api_key="k", base_url=serving(200, body, "text/event-stream"))
    chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Okay, let's check the weather for San Francisco, CA:"
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert json.loads(args) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 472 + 1500 + 28
    assert chunks[-1].usage.completion_tokens == 89
    assert tr.usage == Usage(2000, 89, 1500, 28)


def test_stream_without_include_usage_sends_no_usage_chunk() -> None:
    anthropic_events = load("anthropic_stream_tools.json")["events"]
    out = [e for e in events(replay(o2a.StreamTranslator("m", include_usage=False), anthropic_events))]
    assert out[-1].data == "[DONE]"
    assert all(e.json()["choices"] for e in out[:-1])


def test_stream_error_event_becomes_an_openai_error() -> None:
    tr = o2a.StreamTranslator("m", include_usage=False)
    err = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    out = events(tr.feed(err))
    assert out[-1].json() == {"error": {"message": "Overloaded", "type": "server_error", "code": "overloaded"}}
    assert tr.close() == []


@pytest.mark.parametrize(
    ("status", "kind", "expected_status", "type_", "code"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error", "invalid_request"),
        (401, "authentication_error", 401, "authentication_error", "invalid_api_key"),
        (403, "permission_error", 403, "permission_error", "not_authorized"),
        (404, "not_found_error", 404, "not_found_error", "not_found"),
        (413, "request_too_large", 413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", 500, "server_error", "upstream_error"),
        (529, "overloaded_error", 503, "server_error", "overloaded"),
    ],
)
def test_errors(
    status: int, kind: str, expected_status: int, type_: str, code: str, serving: Callable[..., str]
) -> None:
    vendor = {"type": "error", "error": {"type": kind, "message": "what went wrong"}}
    got_status, body = o2a.error(status, vendor)
    assert (got_status, body) == (
        expected_status,
        {"error": {"message": "what went wrong", "type": type_, "code": code}},
    )
    client = openai.OpenAI(api_key="k", base_url=serving(got_status, json.dumps(body).encode()), max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == expected_status
    assert err.value.code == code


# ------------------------------------------------------------------ round trips


def test_request_round_trip_through_both_directions() -> None:
    """An Anthropic request sent to an OpenAI vendor and back is the same request,
    for what both protocols can say."""
    body = {
        "model": "m",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": "P"}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "text", "text": "and?"},
                ],
            },
        ],
        "tools": [{"name": "w", "description": "weather", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "metadata": {"user_id": "u"},
        "stream": True,
    }
    back = o2a.request(a2o.request(body, "m"), "m")
    assert back == body


def test_stream_round_trip_keeps_text_tools_and_usage() -> None:
    chunks = load("openai_stream_tools.json")["chunks"]
    anthropic_events = [e.json() for e in events(replay(a2o.StreamTranslator("m"), chunks))]
    again = [e for e in events(replay(o2a.StreamTranslator("m", include_usage=True), anthropic_events))]
    parsed = [e.json() for e in again[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed if c["choices"])
    assert text == "Checking both."
    calls: dict[int, str] = {}
    for c in parsed:
        for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
            calls[tc["index"]] = calls.get(tc["index"], "") + tc["function"].get("arguments", "")
    assert calls == {0: '{"city": "Paris"}', 1: '{"zone": "Europe/Paris"}'}
    assert parsed[-1]["usage"] == Usage(2100, 38, 2048).to_openai()
