"""The request path's pure pieces: response heads, usage and cost, the attempt result,
and the rule homes every part of aigw calls (time, loopback, errors, the record)."""

from __future__ import annotations

import dataclasses

import pytest
from test_routes_unit import config

from proxy import usage as usage_mod
from proxy.context import Outcome, Usage
from proxy.errors import rate_limited
from proxy.heads import error_head, json_head, relayed_head
from proxy.relay import last_boundary
from proxy.routes import compile_snapshot
from proxy.usage import StreamUsage, cost_of, estimate_prompt, extract_usage, usage_of_answer
from store import usage
from store.spec import loopback_url
from store.times import iso_utc
from store.usage import insert_records

# ---------------------------------------------------------------- heads


def _lines(head: bytes) -> list[str]:
    assert head.endswith(b"\r\n")
    return head.decode().split("\r\n")[:-1]


def test_json_head() -> None:
    assert _lines(json_head("r-1", b"x-ratelimit-limit-requests: 5\r\n")) == [
        "content-type: application/json",
        "x-request-id: r-1",
        "x-ratelimit-limit-requests: 5",
    ]


def test_error_head_carries_the_errors_own_headers_lower_case() -> None:
    err = rate_limited("slow down", 1.2)
    assert _lines(error_head("r-2", err.headers)) == [
        "content-type: application/json",
        "x-request-id: r-2",
        "retry-after: 2",
    ]


def test_relayed_head_drops_framing_cookies_and_the_vendors_id() -> None:
    vendor = [
        (b"content-type", b"text/event-stream"),
        (b"content-length", b"10"),
        (b"transfer-encoding", b"chunked"),
        (b"set-cookie", b"a=b"),
        (b"x-request-id", b"vendor-id"),
        (b"server", b"nginx"),
        (b"openai-processing-ms", b"12"),
    ]
    assert _lines(relayed_head(vendor, "r-3")) == [
        "content-type: text/event-stream",
        "openai-processing-ms: 12",
        "x-request-id: r-3",
    ]


# ---------------------------------------------------------------- usage and cost


def test_extract_usage_reads_both_protocols() -> None:
    assert extract_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4)
    assert extract_usage({"usage": {"input_tokens": 5, "output_tokens": 6}}) == Usage(5, 6)
    assert extract_usage({"usage": {"prompt_tokens": 5, "total_tokens": 9}}) == Usage(5, 4)
    assert extract_usage({"usage": None}) is None and extract_usage([1]) is None
    assert extract_usage({"usage": {"prompt_tokens": "3"}}) is None


def test_answer_without_usage_is_estimated() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40}]}
    u = usage_of_answer(body, b'{"choices": [{"message": {"content": "' + b"y" * 20 + b'"}}]}')
    assert u == Usage(10, 5, estimated=True)
    assert estimate_prompt({"messages": [[[{"content": "abcd"}]]]}) == 1


def test_stream_usage_keeps_the_last_and_strips_the_chunk_nobody_asked_for() -> None:
    scan = StreamUsage(strip=True)
    content = b'data: {"choices": [{"delta": {"content": "hi"}}], "usage": null}\n\n'
    usage_event = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}\n\n'
    assert scan.feed(content) == content
    assert scan.feed(usage_event + b"data: [DONE]\n\n") == b"data: [DONE]\n\n"
    assert scan.result(None) == Usage(2, 3)
    kept = StreamUsage(strip=False)
    assert kept.feed(usage_event) == usage_event


def test_stream_without_usage_is_estimated_from_the_relayed_text() -> None:
    scan = StreamUsage(strip=True)
    scan.feed(b'data: {"choices": [{"delta": {"content": "abcdefgh"}}]}\r\n\r\n')
    assert scan.result({"prompt": "abcd"}) == Usage(1, 2, estimated=True)


def test_streams_over_the_keep_budget_fold_their_events_into_the_same_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many streams in flight: events kept for an estimate are counted early and dropped,
    and the estimate is the one the kept events would have given at the end."""
    event = b'data: {"choices": [{"delta": {"content": "abcdefgh"}}], "usage": null}\n\n'
    before = StreamUsage.held_total
    roomy = StreamUsage(strip=True)
    for _ in range(40):
        roomy.feed(event)
    assert len(roomy.kept) == 40 and StreamUsage.held_total == before + 40 * len(event)
    monkeypatch.setattr(usage_mod, "KEEP_BUDGET", 0)
    monkeypatch.setattr(usage_mod, "FOLD_MIN", 3 * len(event))
    tight = StreamUsage(strip=True)
    for _ in range(40):
        tight.feed(event)
    assert len(tight.kept) < 3  # held bytes stay bounded, however long the stream
    assert tight.result({"prompt": "abcd"}) == roomy.result({"prompt": "abcd"}) == Usage(1, 80, estimated=True)
    assert StreamUsage.held_total == before  # ended streams give their bytes back


def test_a_stream_whose_vendor_reports_usage_drops_what_it_kept() -> None:
    before = StreamUsage.held_total
    scan = StreamUsage(strip=False)
    scan.feed(b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n')
    assert StreamUsage.held_total > before
    scan.feed(b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}\n\n')
    assert scan.kept == [] and StreamUsage.held_total == before
    assert scan.result(None) == Usage(2, 3)


def test_cost_uses_the_exact_model_then_the_most_specific_glob() -> None:
    svc = compile_snapshot(config(), [], 1).services["s"]
    assert cost_of(svc, "hy-turbo", Usage(1_000_000, 1_000_000)) == 3.0
    assert cost_of(svc, "hy-other", Usage(1_000_000, 0)) == 3.0
    assert cost_of(svc, "gpt", Usage(0, 1_000_000)) == 6.0
    assert cost_of(svc, "hy-turbo", None) == 0.0 and cost_of(None, "hy-turbo", Usage(1, 1)) == 0.0


def test_last_boundary_searches_only_from_where_it_is_told() -> None:
    assert last_boundary(b"data: a\n\ndata: b") == 9
    assert last_boundary(b"data: a\r\n\r\ndata: b") == 11
    assert last_boundary(b"data: a\n\ndata: b", start=9) == -1
    assert last_boundary(b"no boundary") == -1


# ---------------------------------------------------------------- the attempt result


def test_outcome_is_one_frozen_value() -> None:
    o = Outcome(False, 503, "http_503", retryable=True)
    assert not o.answered and o.retryable and not o.key_rejected
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.status = 200  # type: ignore[misc]
    assert Outcome(True, 200).reason == ""


# ---------------------------------------------------------------- rule homes


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        (":8080", "http://127.0.0.1:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("::1:9000", "http://[::1]:9000"),
        ("localhost:81", "http://localhost:81"),
        ("10.0.0.2:81", "http://10.0.0.2:81"),
    ],
)
def test_loopback_url(listen: str, url: str) -> None:
    assert loopback_url(listen) == url


def test_iso_utc() -> None:
    assert iso_utc(0.25) == "1970-01-01T00:00:00.250Z"
    assert iso_utc(3600, "seconds") == "1970-01-01T01:00:00Z"


def test_is_error_matches_what_usage_totals_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from store.db import open_store

    statuses = [200, 204, 302, 400, 404, 429, 499, 500, 502, 0]
    st = open_store(str(tmp_path / "aigw.db"))
    try:
        with st.session() as s:
            insert_records(s, [{"ts": 1.0, "request_id": f"r{i}", "status": c} for i, c in enumerate(statuses)])
            (row,) = usage.totals(s, "consumer")
    finally:
        st.dispose()
    assert row["errors"] == sum(usage.is_error(c) for c in statuses) == 7


def test_record_row_and_dict_are_one_shape() -> None:
    row = tuple(range(len(usage.RECORD_FIELDS)))
    d = usage.row_dict(row)
    assert list(d) == [*usage.RECORD_FIELDS, "time"] and d["time"] == iso_utc(d["ts"])


# ---------------------------------------------------------------- the stages


def test_every_stage_takes_state_request_and_context() -> None:
    """One signature for every stage: what a stage needs beyond the request comes from the state."""
    import ast
    from pathlib import Path

    import proxy

    # Read from the sources: the compiled request path keeps no Python signatures.
    stages = {
        node.name: [a.arg for a in node.args.args]
        for module in ("pipeline", "cache_stage")
        for node in ast.parse((Path(proxy.__file__).parent / f"{module}.py").read_text()).body
        if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and node.name.startswith("stage_")
    }
    assert {"stage_cache_lookup", "stage_cache_store", "stage_relay", "stage_traffic_control"} <= set(stages)
    for name, params in stages.items():
        assert params == ["state", "request", "ctx"], name
