"""The official ``openai`` SDK reads what the OpenAI-to-Anthropic translation answers:
its types validate answers, its client parses answers, streams and errors served by a
real HTTP server. The golden shapes alone are in ``tests/protocols``."""

from __future__ import annotations

import json
from collections.abc import Callable

import openai
import pytest
from translations import load, replay

from proxy.protocols import openai_to_anthropic as o2a
from proxy.protocols.usage import Usage


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
