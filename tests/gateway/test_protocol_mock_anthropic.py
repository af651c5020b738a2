"""The mock Anthropic vendor answers the official ``anthropic`` SDK as Anthropic does:
whole and streamed messages, tool use, token counting, models, and errors."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import pytest
from mock_anthropic import AnthropicBehaviour, MockAnthropic

TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def mock() -> Iterator[MockAnthropic]:
    with MockAnthropic(api_keys=("good-key",)) as m:
        yield m


@pytest.fixture
def vendor(mock: MockAnthropic) -> MockAnthropic:
    mock.reset()
    return mock


@pytest.fixture
def client(vendor: MockAnthropic) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="good-key", base_url=vendor.base, max_retries=0, timeout=5)


def test_message(client: anthropic.Anthropic, vendor: MockAnthropic) -> None:
    vendor.behave(cache_read_input_tokens=5)
    msg = client.messages.create(model="claude-x", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert msg.content[0].type == "text" and "claude-x" in msg.content[0].text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.cache_read_input_tokens == 5
    rec = vendor.wait_for(1)[0]
    assert rec.path == "/v1/messages" and rec.json["max_tokens"] == 20
    assert rec.headers["anthropic-version"]


def test_tool_use_when_asked(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="m",
        max_tokens=20,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "any"},
    )
    assert msg.stop_reason == "tool_use"
    block = msg.content[-1]
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "sample"}


def test_stream_with_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="m",
        max_tokens=20,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=[TOOL],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        text = "".join(stream.text_stream)
        msg = stream.get_final_message()
    assert text == "tok0 tok1 tok2 "
    assert msg.content[-1].type == "tool_use" and msg.content[-1].input == {"city": "sample"}
    assert msg.usage.output_tokens == 7 and msg.usage.input_tokens == 11


def test_count_tokens_and_models(client: anthropic.Anthropic) -> None:
    count = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "Hello there"}])
    assert count.input_tokens > 0
    assert [m.id for m in client.models.list()] == ["claude-mock-1"]


@pytest.mark.parametrize(
    ("status", "exc"),
    [(429, anthropic.RateLimitError), (529, anthropic.InternalServerError), (500, anthropic.InternalServerError)],
)
def test_failures_in_anthropic_shape(
    client: anthropic.Anthropic, vendor: MockAnthropic, status: int, exc: type[Exception]
) -> None:
    vendor.behave(status=status)
    with pytest.raises(exc) as err:
        client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert isinstance(err.value, anthropic.APIStatusError) and err.value.status_code == status


def test_bad_key_and_missing_version(vendor: MockAnthropic) -> None:
    bad = anthropic.Anthropic(api_key="wrong", base_url=vendor.base, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    body = {"model": "m", "max_tokens": 5, "messages": []}
    res = httpx.post(f"{vendor.url}/messages", json=body, headers={"x-api-key": "good-key", "anthropic-version": "1"})
    assert res.status_code == 200 and res.json()["type"] == "message"
    vendor.reject_keys["good-key"] = 403
    res = httpx.post(f"{vendor.url}/messages", json=body, headers={"x-api-key": "good-key", "anthropic-version": "1"})
    assert res.status_code == 403 and res.json()["error"]["type"] == "permission_error"
    vendor.reject_keys.clear()
    res = httpx.post(f"{vendor.url}/messages", json=body, headers={"x-api-key": "good-key"})
    assert res.status_code == 400
    assert res.json()["error"]["type"] == "invalid_request_error"


def test_silent_stream_is_left_by_the_client(vendor: MockAnthropic) -> None:
    vendor.queue(AnthropicBehaviour(silent=True))
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-api-key": "good-key", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{vendor.url}/messages", json=body, headers=headers, timeout=0.5) as res:
        lines = res.iter_lines()
        assert next(lines) == "event: message_start"
        with pytest.raises(httpx.ReadTimeout):
            for _ in lines:
                pass
    vendor.wait_until_cancelled(vendor.requests[0])
