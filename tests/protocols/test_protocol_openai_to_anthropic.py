"""Client speaks OpenAI chat, vendor speaks Anthropic: golden shapes from both API
references, and round trips through both directions. The official ``openai`` SDK reads
the translated answers in ``tests/gateway/test_sdk_reads_openai_to_anthropic.py``."""

from __future__ import annotations

from typing import Any

import pytest
from translations import events, load, replay

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
