"""Anthropic Messages and the Responses API through a real ``aigw serve``, in and out.

The official ``anthropic`` and ``openai`` SDKs are the clients; ``mock_vendor`` (OpenAI
chat completions) and ``mock_anthropic`` (Anthropic Messages) the vendors. Every pair
of protocols is checked for text, streams, tools, errors and the records it leaves.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from helpers import GatewayProcess, record_for
from mock_anthropic import MockAnthropic
from mock_vendor import Behaviour, MockVendor

from store.db import Store, open_store
from tui.cli import main as aigw_main

OPENAI_CRED = "sk-vendor-openai-PROTO-11aa"
ANTHROPIC_CRED = "sk-ant-vendor-PROTO-22bb"
APP_KEY = "sk-aigw-" + "p" * 40

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
WEATHER_FUNCTION = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _config(vendor: MockVendor, claude: MockAnthropic) -> str:
    def api(name: str, protocol: str, base: str, routes: list[str], service: str) -> str:
        rs = ", ".join(f'"{r}"' for r in routes)
        return (
            f'[[model_apis]]\nname = "{name}"\nprotocol = "{protocol}"\nbase_path = "{base}"\n'
            f'routes = [{rs}]\nservices = ["{service}"]\n\n'
        )

    return (
        f'[[model_keys]]\nname = "kv"\ncredential = "{OPENAI_CRED}"\n\n'
        f'[[model_keys]]\nname = "ka"\ncredential = "{ANTHROPIC_CRED}"\n\n'
        f'[[model_services]]\nname = "chat"\nvendor = "custom"\naddress = "{vendor.url}"\nkeys = ["kv"]\n'
        'model_policy = "passthrough"\ndefault_model = "mock-model"\n'
        "[model_services.prices.mock-model]\ninput = 1.0\noutput = 2.0\n\n"
        f'[[model_services]]\nname = "chat-resp"\nvendor = "custom"\naddress = "{vendor.url}"\nkeys = ["kv"]\n'
        'default_model = "mock-model"\nresponses = true\n\n'
        f'[[model_services]]\nname = "claude"\nvendor = "custom"\nprotocol = "anthropic"\naddress = "{claude.url}"\n'
        'keys = ["ka"]\nmodel_policy = "passthrough"\ndefault_model = "claude-mock-1"\ndefault_max_tokens = 1234\n\n'
        + api("msgs-to-chat", "anthropic", "/a2o", ["/v1/messages", "/v1/messages/count_tokens"], "chat")
        + api("msgs-to-claude", "anthropic", "/a2a", ["/v1/messages", "/v1/messages/count_tokens"], "claude")
        + api("chat-to-claude", "openai", "/o2a", ["/v1/chat/completions", "/v1/responses"], "claude")
        + api("resp-to-chat", "openai", "/o2o", ["/v1/chat/completions", "/v1/responses"], "chat")
        + api("resp-pass", "openai", "/rp", ["/v1/responses"], "chat-resp")
        + api("fallback", "openai", "/fb", ["/v1/chat/completions"], "claude")
        + 'fallback_services = ["chat"]\n\n'
        + f'[[consumers]]\nname = "app"\napi_keys = ["{APP_KEY}"]\n\n'
        '[[consumer_groups]]\nname = "g"\nconsumers = ["app"]\n'
        'model_apis = ["msgs-to-chat", "msgs-to-claude", "chat-to-claude", "resp-to-chat", "resp-pass", "fallback"]\n'
    )


@dataclass
class Env:
    gw: GatewayProcess
    vendor: MockVendor
    claude: MockAnthropic
    store: Store

    def anthropic_client(self, base: str, **kw: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.gw.url + base, api_key=kw.pop("api_key", APP_KEY), max_retries=0, **kw)

    def openai_client(self, base: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gw.url + base + "/v1", api_key=APP_KEY, max_retries=0)

    def record(self, request_id: str | None) -> dict[str, Any]:
        assert request_id
        return record_for(self.store, request_id)


@pytest.fixture(scope="module")
def env(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("proto")
    db = tmp / "data" / "aigw.db"
    with MockAnthropic(api_keys=(ANTHROPIC_CRED,)) as claude:
        cfg = tmp / "aigw.toml"
        cfg.write_text(_config(vendor, claude))
        assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
        gw = GatewayProcess(db).start()
        st = open_store(str(db))
        try:
            yield Env(gw, vendor, claude, st)
        finally:
            st.dispose()
            gw.stop()


@pytest.fixture
def e(env: Env, fresh_vendor: MockVendor) -> Env:
    env.claude.reset()
    return env


def _tool_call_stream() -> str:
    """An OpenAI vendor's stream of one tool call, arguments in two fragments, then usage."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "mock-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}}
    chunks: list[Any] = [
        chunk({"role": "assistant", "content": None, "tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "mock-model",
            "choices": [],
            "usage": {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30},
        },
        "[DONE]",
    ]
    return "".join(f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks)


# ---------------------------------------------------------------- Anthropic SDK → OpenAI vendor


def test_anthropic_sdk_to_openai_vendor_text_and_record(e: Env) -> None:
    client = e.anthropic_client("/a2o")
    raw = client.messages.with_raw_response.create(
        model="mock-model", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "hi"}]
    )
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from mock (mock-model)."
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (11, 7)
    sent = e.vendor.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {OPENAI_CRED}"
    assert sent.json["messages"][0] == {"role": "system", "content": "be brief"}
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    rec = e.record(raw.headers["x-request-id"])
    assert (rec["protocol"], rec["vendor_protocol"]) == ("anthropic", "openai")
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["estimated"]) == (11, 7, False)
    assert rec["cost"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1_000_000)


def test_anthropic_sdk_to_openai_vendor_stream(e: Env) -> None:
    client = e.anthropic_client("/a2o")
    with client.messages.stream(
        model="mock-model", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        rid = stream.response.headers["x-request-id"]
    assert text == "tok0 tok1 tok2 "
    assert final.usage.output_tokens == 7 and final.stop_reason == "end_turn"
    assert e.vendor.requests[-1].json["stream_options"] == {"include_usage": True}
    rec = e.record(rid)
    assert rec["stream"] and rec["status"] == 200
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["protocol"]) == (11, 7, "anthropic")


def test_anthropic_sdk_to_openai_vendor_tools(e: Env) -> None:
    answer = {
        "id": "chatcmpl-t",
        "object": "chat.completion",
        "created": 0,
        "model": "mock-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35},
    }
    e.vendor.queue(Behaviour(body=answer), Behaviour(body=_tool_call_stream(), content_type="text/event-stream"))
    client = e.anthropic_client("/a2o")
    msg = client.messages.create(
        model="mock-model", max_tokens=50, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather?"}]
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[0]
    assert block.type == "tool_use" and block.input == {"city": "Paris"} and block.id == "call_9"
    assert e.vendor.requests[-1].json["tools"] == [WEATHER_FUNCTION]
    with client.messages.stream(
        model="mock-model", max_tokens=50, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    tool = final.content[0]
    assert tool.type == "tool_use" and tool.input == {"city": "Paris"}
    assert final.usage.output_tokens == 9 and final.stop_reason == "tool_use"


def test_anthropic_sdk_vendor_errors_in_anthropic_shape(e: Env) -> None:
    e.vendor.behave(status=429)
    client = e.anthropic_client("/a2o")
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model="mock-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "mock vendor error 429" in body["error"]["message"]
    assert caught.value.request_id == caught.value.response.headers["x-request-id"]


def test_anthropic_api_gateway_errors_in_anthropic_shape(e: Env) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        e.anthropic_client("/a2a", api_key="sk-aigw-not-a-key").messages.create(
            model="claude-mock-1", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert caught.value.response.headers["request-id"]
    # Bearer works as well as x-api-key, and a bad body is Anthropic's invalid_request_error.
    r = httpx.post(e.gw.url + "/a2a/v1/messages", headers={"Authorization": f"Bearer {APP_KEY}"}, content=b"[1]")
    assert r.status_code == 400
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    assert not e.claude.requests


def test_anthropic_models_listing(e: Env) -> None:
    page = e.anthropic_client("/a2a").models.list()
    assert [m.id for m in page.data] == ["claude-mock-1"]
    assert page.data[0].type == "model" and page.data[0].display_name == "claude-mock-1"
    raw = httpx.get(e.gw.url + "/a2a/v1/models", headers={"x-api-key": APP_KEY}).json()
    assert raw["has_more"] is False and raw["first_id"] == raw["last_id"] == "claude-mock-1"
    one = httpx.get(e.gw.url + "/a2a/v1/models/claude-mock-1", headers={"x-api-key": APP_KEY}).json()
    assert one["type"] == "model" and one["id"] == "claude-mock-1"


def test_count_tokens_on_openai_service_is_estimated(e: Env) -> None:
    client = e.anthropic_client("/a2o")
    count = client.messages.count_tokens(model="mock-model", messages=[{"role": "user", "content": "x" * 400}])
    assert count.input_tokens == 100
    assert not e.vendor.requests


# ---------------------------------------------------------------- Anthropic → Anthropic


def test_anthropic_passthrough(e: Env) -> None:
    e.claude.behave(cache_read_input_tokens=5, cache_creation_input_tokens=2)
    client = e.anthropic_client(
        "/a2a", default_headers={"anthropic-beta": "tools-2024-04-04", "anthropic-version": "2024-01-01"}
    )
    raw = client.messages.with_raw_response.create(
        model="claude-mock-1", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    msg = raw.parse()
    assert msg.content[0].text == "Hello from mock Anthropic (claude-mock-1)."  # type: ignore[union-attr]
    sent = e.claude.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_CRED
    assert "Authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2024-01-01"  # the client's
    assert sent.headers["anthropic-beta"] == "tools-2024-04-04"
    assert json.loads(sent.body) == {
        "model": "claude-mock-1",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    rec = e.record(raw.headers["x-request-id"])
    assert (rec["protocol"], rec["vendor_protocol"]) == ("anthropic", "anthropic")
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (11 + 5 + 2, 7)
    with client.messages.stream(
        model="claude-mock-1", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert "".join(stream.text_stream) == "tok0 tok1 tok2 "
        rid = stream.response.headers["x-request-id"]
    rec = e.record(rid)
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["stream"]) == (18, 7, True)
    count = client.messages.count_tokens(model="claude-mock-1", messages=[{"role": "user", "content": "hello"}])
    assert count.input_tokens >= 1 and e.claude.requests[-1].path == "/v1/messages/count_tokens"


# ---------------------------------------------------------------- OpenAI SDK → Anthropic vendor


def test_openai_sdk_to_anthropic_vendor_text_and_record(e: Env) -> None:
    client = e.openai_client("/o2a")
    raw = client.chat.completions.with_raw_response.create(
        model="claude-mock-1",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    )
    done = raw.parse()
    assert done.choices[0].message.content == "Hello from mock Anthropic (claude-mock-1)."
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (11, 7)
    sent = e.claude.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_CRED
    assert sent.headers["anthropic-version"] == "2023-06-01"  # the client named none
    assert sent.json["system"] == "be brief" and sent.json["max_tokens"] == 1234
    rec = e.record(raw.headers["x-request-id"])
    assert (rec["protocol"], rec["vendor_protocol"], rec["prompt_tokens"]) == ("openai", "anthropic", 11)


def test_openai_sdk_to_anthropic_vendor_stream_and_tools(e: Env) -> None:
    client = e.openai_client("/o2a")
    stream = client.chat.completions.create(
        model="claude-mock-1",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    e.claude.behave(tool_use=True)
    done = client.chat.completions.create(
        model="claude-mock-1", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_FUNCTION]
    )
    call = done.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sample"}
    with client.chat.completions.stream(
        model="claude-mock-1", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_FUNCTION]
    ) as s:
        final = s.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert json.loads(streamed.function.arguments) == {"city": "sample"}


def test_openai_sdk_anthropic_vendor_errors_in_openai_shape(e: Env) -> None:
    e.claude.behave(status=529)
    client = e.openai_client("/o2a")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="claude-mock-1", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.code == "overloaded" and "mock Anthropic error 529" in caught.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude-mock-1", messages=[{"role": "user", "content": "x"}], n=2)
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "n"


# ---------------------------------------------------------------- Responses API


def test_responses_bridged_to_chat_vendor(e: Env) -> None:
    client = e.openai_client("/o2o")
    resp = client.responses.create(model="mock-model", input="hi", instructions="be brief")
    assert resp.output_text == "Hello from mock (mock-model)."
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.output_tokens) == (11, 7)
    sent = e.vendor.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.json["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with client.responses.stream(model="mock-model", input="hi") as stream:
        deltas = [ev.delta for ev in stream if ev.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "tok0 tok1 tok2 " and final.output_text == "tok0 tok1 tok2 "
    assert final.usage is not None and final.usage.output_tokens == 7


def test_responses_function_call_and_unsupported_parameter(e: Env) -> None:
    e.vendor.queue(Behaviour(body=_tool_call_stream(), content_type="text/event-stream"))
    client = e.openai_client("/o2o")
    tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_FUNCTION["function"]["parameters"]}  # type: ignore[index]
    with client.responses.stream(model="mock-model", input="weather?", tools=[tool]) as stream:  # type: ignore[list-item]
        final = stream.get_final_response()
    call = final.output[0]
    assert (
        call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    )
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mock-model", input="hi", previous_response_id="resp_1")
    assert refused.value.code == "unsupported_parameter" and refused.value.param == "previous_response_id"


def test_responses_to_anthropic_vendor(e: Env) -> None:
    client = e.openai_client("/o2a")
    resp = client.responses.create(model="claude-mock-1", input="hi", max_output_tokens=77)
    assert resp.output_text == "Hello from mock Anthropic (claude-mock-1)."
    assert e.claude.requests[-1].json["max_tokens"] == 77
    with client.responses.with_streaming_response.create(model="claude-mock-1", input="hi", stream=True) as raw:
        rid = raw.headers["x-request-id"]
        events = [json.loads(line[6:]) for line in raw.iter_lines() if line.startswith("data: ")]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "tok0 tok1 tok2 "
    rec = e.record(rid)
    assert (rec["vendor_protocol"], rec["prompt_tokens"], rec["completion_tokens"]) == ("anthropic", 11, 7)


def test_responses_passthrough_when_the_service_serves_it(e: Env) -> None:
    body = {"model": "mock-model", "input": "hi", "previous_response_id": "resp_1"}
    r = httpx.post(e.gw.url + "/rp/v1/responses", headers={"Authorization": f"Bearer {APP_KEY}"}, json=body)
    assert r.status_code == 200
    sent = e.vendor.requests[-1]
    assert sent.path == "/v1/responses" and sent.json == body


def test_records_listed_with_protocols(e: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client = e.anthropic_client("/a2o")
    raw = client.messages.with_raw_response.create(
        model="mock-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    e.record(raw.headers["x-request-id"])
    capsys.readouterr()
    assert aigw_main(["--db", str(e.gw.db), "logs", "--json", "-n", "50"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = next(r for r in rows if r["request_id"] == raw.headers["x-request-id"])
    assert (mine["protocol"], mine["vendor_protocol"]) == ("anthropic", "openai")


def test_translated_stream_broken_midway_ends_with_an_anthropic_error_event(e: Env) -> None:
    e.vendor.behave(break_after=1)
    headers = {"x-api-key": APP_KEY, "anthropic-version": "2023-06-01"}
    body = {"model": "mock-model", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream("POST", e.gw.url + "/a2o/v1/messages", headers=headers, json=body, timeout=10) as r:
        rid = r.headers["request-id"]
        text = r.read().decode()
    assert "event: content_block_delta" in text  # what came before the break was relayed
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    err = json.loads(last.split("data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert "message_stop" not in text
    assert e.record(rid)["status"] == 502


def test_unsupported_parameter_is_refused_before_the_vendor(e: Env) -> None:
    r = httpx.post(
        e.gw.url + "/o2a/v1/chat/completions",
        headers={"Authorization": f"Bearer {APP_KEY}"},
        json={"model": "claude-mock-1", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
    )
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "this model does not return logprobs",
        "type": "invalid_request_error",
        "code": "unsupported_parameter",
        "param": "logprobs",
    }
    assert not e.claude.requests


def test_a_fallback_in_another_protocol_gets_its_own_translation(e: Env) -> None:
    """The Anthropic service is overloaded; its OpenAI fallback gets the client's body as it came."""
    e.claude.behave(status=529)
    client = e.openai_client("/fb")
    raw = client.chat.completions.with_raw_response.create(
        model="mock-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().choices[0].message.content == "Hello from mock (mock-model)."
    assert e.claude.requests[-1].json["max_tokens"] == 1234  # translated for the first attempt
    assert json.loads(e.vendor.requests[-1].body) == {
        "model": "mock-model",
        "messages": [{"role": "user", "content": "hi"}],
    }
    rec = e.record(raw.headers["x-request-id"])
    assert (rec["service"], rec["protocol"], rec["vendor_protocol"]) == ("chat", "openai", "openai")


def test_an_unknown_path_under_an_anthropic_api_is_an_anthropic_404(e: Env) -> None:
    r = httpx.post(e.gw.url + "/a2a/v1/messages/batches", headers={"x-api-key": APP_KEY}, json={})
    assert r.status_code == 404 and r.headers["request-id"] == r.headers["x-request-id"]
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "not_found_error"
    other = httpx.post(e.gw.url + "/nowhere/v1/messages", headers={"x-api-key": APP_KEY}, json={})
    assert other.status_code == 404 and other.json()["error"]["code"] == "not_found"
