"""Which pairs of protocols are translated, and the stream pipe fed as bytes arrive."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy.protocols import sse
from proxy.protocols.translation import NotTranslatable, Translation, translation_for


def _pick(api: str, op: str, vendor: str, responses: bool = False) -> Translation | None:
    return translation_for(api, op, vendor, responses, {"model": "m"}, "m", 4096)


@pytest.mark.parametrize(
    ("api", "op", "vendor", "responses"),
    [
        ("openai", "/chat/completions", "openai", False),
        ("openai", "/embeddings", "openai", False),
        ("openai", "/responses", "openai", True),
        ("anthropic", "/messages", "anthropic", False),
        ("anthropic", "/messages/count_tokens", "anthropic", False),
    ],
)
def test_same_protocol_pairs_pass_through(api: str, op: str, vendor: str, responses: bool) -> None:
    assert _pick(api, op, vendor, responses) is None


@pytest.mark.parametrize(
    ("api", "op", "vendor", "responses", "vendor_op"),
    [
        ("openai", "/chat/completions", "anthropic", False, "/messages"),
        ("anthropic", "/messages", "openai", False, "/chat/completions"),
        ("openai", "/responses", "openai", False, "/chat/completions"),
        ("openai", "/responses", "anthropic", False, "/messages"),
    ],
)
def test_other_pairs_are_translated_to_the_vendor_operation(
    api: str, op: str, vendor: str, responses: bool, vendor_op: str
) -> None:
    t = _pick(api, op, vendor, responses)
    assert t is not None and t.op == vendor_op


@pytest.mark.parametrize("op", ["/completions", "/embeddings"])
def test_operations_without_a_counterpart_are_refused(op: str) -> None:
    with pytest.raises(NotTranslatable):
        _pick("openai", op, "anthropic")


def _anthropic_stream() -> bytes:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {"id": "msg_1", "model": "m", "content": [], "usage": {"input_tokens": 9, "output_tokens": 1}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        {"type": "message_stop"},
    ]
    return b"".join(sse.encode(e, e["type"]) for e in events)


def _datas(out: bytes) -> list[Any]:
    return [e.json() for e in sse.SSEParser().feed(out) if e.data != "[DONE]"]


def test_a_chained_stream_fed_one_byte_at_a_time_gives_each_event_as_it_completes() -> None:
    """Responses client, Anthropic vendor: two translators chained, nothing held back."""
    t = translation_for("openai", "/responses", "anthropic", False, {"model": "m", "input": "hi"}, "m", 4096)
    assert t is not None
    pipe = t.stream()
    raw = _anthropic_stream()
    out = bytearray()
    text_seen_at: int | None = None
    for i in range(len(raw)):
        out += pipe.feed(raw[i : i + 1])
        if text_seen_at is None and b"response.output_text.delta" in out:
            text_seen_at = i
    out += pipe.close()
    # The first text delta went out as soon as its vendor event was complete, long before the end.
    first_delta_end = raw.index(b'"Hel"') + raw[raw.index(b'"Hel"') :].index(b"\n\n") + 1
    assert text_seen_at == first_delta_end
    events = _datas(bytes(out))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    assert events[-1]["response"]["usage"]["input_tokens"] == 9
    assert events[-1]["response"]["usage"]["output_tokens"] == 4
    assert pipe.usage is not None and (pipe.usage.input_tokens, pipe.usage.output_tokens) == (9, 4)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_translated_answer_and_error() -> None:
    t = translation_for("anthropic", "/messages", "openai", False, {"model": "m", "max_tokens": 5}, "m", 4096)
    assert t is not None
    chat = {
        "id": "c1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    data, usage = t.answer(json.dumps(chat).encode())
    assert json.loads(data)["content"] == [{"type": "text", "text": "hi"}]
    assert (usage.input_tokens, usage.output_tokens) == (3, 1)
    status, body = t.error(429, b'{"error": {"message": "slow down", "type": "rate_limit", "code": null}}')
    assert status == 429
    assert json.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    status, body = t.error(502, b"<html>bad gateway</html>")
    assert json.loads(body)["error"] == {"type": "api_error", "message": "<html>bad gateway</html>"}
    with pytest.raises(ValueError):
        t.answer(b"[1, 2]")
