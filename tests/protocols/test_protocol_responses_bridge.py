"""Client speaks the Responses API, vendor speaks chat completions: the request it
becomes and what is refused. The official ``openai`` SDK (its types and its streaming
helper) reads the answers and streams in ``tests/gateway/test_sdk_reads_responses_bridge.py``."""

from __future__ import annotations

from typing import Any

import pytest
from translations import load

from proxy.protocols import responses_bridge as rb
from proxy.protocols.unsupported import UnsupportedParameter


def test_request_golden() -> None:
    fx = load("responses_request.json")
    assert rb.request(fx["responses"], "hunyuan-turbos-latest") == fx["chat"]


def test_string_input() -> None:
    out = rb.request({"model": "x", "input": "Hi", "instructions": "Be brief."}, "m")
    assert out == {
        "model": "m",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools"),
        ({"input": "x", "tools": [{"type": "computer_use_preview"}]}, "tools"),
        ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input.input_file"),
        ({"input": [{"type": "web_search_call", "id": "ws"}]}, "input.web_search_call"),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as err:
        rb.request(body, "m")
    assert err.value.param == param


def test_background_false_and_store_are_accepted() -> None:
    assert rb.request({"input": "x", "background": False, "store": True}, "m")["messages"] == [
        {"role": "user", "content": "x"}
    ]
