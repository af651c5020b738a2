"""The official ``anthropic`` SDK reads what the Anthropic-to-OpenAI translation answers:
its types validate every event, its client parses answers, streams and errors served by
a real HTTP server. The golden shapes alone are in ``tests/protocols``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from pydantic import TypeAdapter
from translations import events, load, replay

from proxy.protocols import anthropic_to_openai as a2o
from proxy.protocols.usage import Usage

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(anthropic.types.RawMessageStreamEvent)


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
