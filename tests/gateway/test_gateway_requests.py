"""The request path through a real ``aigw serve``: clients, policies, relaying."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from gateway_config import CRED, ENV_VALUE, Gw
from helpers import record_for
from mock_vendor import Behaviour, MockVendor

from store.db import Store

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "Hello, please introduce yourself."}]


@pytest.fixture(scope="module")
def client(gw: Gw) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=30) as c:
        yield c


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def rid() -> str:
    return "test-" + uuid.uuid4().hex


def post(
    client: httpx.Client,
    gw: Gw,
    path: str,
    body: Any = None,
    *,
    key: str | None = None,
    request_id: str | None = None,
    **kw: Any,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gw.app_key}", **kw.pop("headers", {})}
    if request_id:
        headers["x-request-id"] = request_id
    if body is None and "content" not in kw:
        body = {"model": "hunyuan-turbos-latest", "messages": MSG, "stream": False}
    return (
        client.post(path, json=body, headers=headers, **kw)
        if body is not None
        else client.post(path, headers=headers, **kw)
    )


def sdk(gw: Gw, base: str = "/hunyuan", key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}{base}/v1", api_key=key or gw.app_key, max_retries=0, timeout=30)


def key_of(rec: Any) -> str:
    """Which model key (by name) the vendor was called with."""
    cred = rec.authorization.removeprefix("Bearer ")
    return next((n for n, c in CRED.items() if c == cred), cred)


# ------------------------------------------------------------------ clients


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_the_cloud_guides_curl_verbatim(gw: Gw, vendor: MockVendor, records_store: Store) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "-X",
            "POST",
            f"{gw.url}/hunyuan/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"Authorization: Bearer {gw.app_key}",
            "-d",
            '{\n"model": "hunyuan-turbos-latest",\n"messages": [\n{"role": "user", "content": '
            '"Hello, please introduce yourself."}\n],\n"stream": false\n}',
        ],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "x-request-id:" in head.lower()
    answer = orjson.loads(body)
    assert answer["choices"][0]["message"]["content"] == "Hello from mock (hunyuan-turbos-latest)."
    (seen,) = vendor.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.authorization == f"Bearer {CRED['k1']}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_expect_100_continue_and_other_expectations(gw: Gw, client: httpx.Client) -> None:
    big = orjson.dumps({"messages": [{"role": "user", "content": "x" * 4000}]}).decode()
    out = subprocess.run(  # curl sends "Expect: 100-continue" for bodies over 1 KiB
        [
            "curl",
            "-sS",
            "-i",
            "-X",
            "POST",
            f"{gw.url}/hunyuan/v1/chat/completions",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Expect: 100-continue",
            "-H",
            f"Authorization: Bearer {gw.app_key}",
            "-d",
            big,
        ],
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout.decode()
    assert "HTTP/1.1 100 Continue" in out and "HTTP/1.1 200" in out
    r = post(client, gw, "/hunyuan" + CHAT, headers={"Expect": "something-else"})
    err = _error(r, 417)
    assert err["code"] == "expectation_failed"


def test_openai_sdk_chat_and_record(gw: Gw, vendor: MockVendor, records_store: Store) -> None:
    c = sdk(gw)
    raw = c.chat.completions.with_raw_response.create(model="anything", messages=MSG)  # type: ignore[arg-type]
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from mock (hunyuan-turbos-latest)."
    assert answer.usage is not None and answer.usage.total_tokens == 18
    rec = record_for(records_store, raw.headers["x-request-id"])
    assert rec["consumer"] == "app" and rec["api"] == "hunyuan-api" and rec["service"] == "main"
    assert rec["model"] == "hunyuan-turbos-latest" and rec["key_name"] == "k1"
    assert rec["status"] == 200 and rec["stream"] is False and rec["estimated"] is False
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["total_tokens"]) == (11, 7, 18)
    assert rec["cost"] == pytest.approx((11 * 0.8 + 7 * 2.0) / 1e6)
    assert rec["ttfb_ms"] is not None and rec["latency_ms"] >= rec["ttfb_ms"] > 0
    assert rec["path"] == "/hunyuan/v1/chat/completions" and rec["method"] == "POST"


def test_openai_sdk_stream_hides_usage_chunk_it_did_not_ask_for(
    gw: Gw, vendor: MockVendor, records_store: Store
) -> None:
    stream = sdk(gw).chat.completions.create(model="x", messages=MSG, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "tok0 tok1 tok2 "
    assert all(ch.choices for ch in chunks), "the usage-only chunk reached a client that did not ask"
    assert all(ch.usage is None for ch in chunks)
    (seen,) = vendor.requests
    assert seen.json["stream_options"] == {"include_usage": True}
    rid_ = stream.response.headers["x-request-id"]
    rec = record_for(records_store, rid_)
    assert rec["stream"] is True and rec["status"] == 200 and rec["estimated"] is False
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (11, 7)


def test_stream_usage_delivered_when_client_asked(gw: Gw, vendor: MockVendor) -> None:
    stream = sdk(gw).chat.completions.create(
        model="x", messages=MSG, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[arg-type]
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 18


def test_cumulative_usage_takes_the_last_not_the_sum(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.behave(usage="cumulative", chunks=5, prompt_tokens=20, completion_tokens=9)
    r_id = rid()
    body = {"model": "m", "messages": MSG, "stream": True}
    r = post(client, gw, "/hunyuan" + CHAT, body, request_id=r_id)
    assert r.status_code == 200 and r.text.count("data: ") == 7
    rec = record_for(records_store, r_id)
    assert (rec["prompt_tokens"], rec["completion_tokens"], rec["estimated"]) == (20, 9, False)


def test_no_usage_from_vendor_is_estimated(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.behave(usage="none", chunks=8)
    ids = rid(), rid()
    r = post(client, gw, "/hunyuan" + CHAT, {"model": "m", "messages": MSG, "stream": True}, request_id=ids[0])
    assert r.status_code == 200 and "[DONE]" in r.text
    r = post(client, gw, "/hunyuan" + CHAT, request_id=ids[1])
    assert r.status_code == 200 and "usage" not in r.json()
    for i in ids:
        rec = record_for(records_store, i)
        assert rec["estimated"] is True
        assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0


def test_models_list(gw: Gw) -> None:
    assert [m.id for m in sdk(gw, "/bymodel").models.list()] == ["beta-1", "alpha-1"]
    assert [m.id for m in sdk(gw, "/plist").models.list()] == ["allowed-a"]
    assert [m.id for m in sdk(gw).models.list()] == ["hunyuan-turbos-latest"]
    assert sdk(gw, "/bymodel").models.retrieve("alpha-1").owned_by == "svc-a"
    assert sdk(gw, "/plist").models.retrieve("fam-9").id == "fam-9"  # a glob it serves
    with pytest.raises(openai.NotFoundError):
        sdk(gw, "/plist").models.retrieve("other")
    with pytest.raises(openai.AuthenticationError):
        sdk(gw, key="sk-aigw-nope-0000000000000000000000").models.list()
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, "/hunyuan", key=gw.lonely_key).models.list()


def test_embeddings(gw: Gw, vendor: MockVendor) -> None:
    res = sdk(gw, "/emb").embeddings.create(model="e", input=["a", "b"])
    assert len(res.data) == 2 and res.data[0].embedding == [0.1, 0.2, 0.3]
    assert vendor.requests[0].path == "/v1/embeddings"


def test_extra_body_passes_through(gw: Gw, vendor: MockVendor) -> None:
    sdk(gw).chat.completions.create(
        model="x",
        messages=MSG,  # type: ignore[arg-type]
        extra_body={"enable_enhancement": True, "x_vendor": {"a": 1}},
    )
    body = vendor.requests[0].json
    assert body["enable_enhancement"] is True and body["x_vendor"] == {"a": 1}


def test_body_untouched_when_nothing_changes(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    raw = b'{"model":  "m-default" ,"messages": [], "odd_field": [1, 2.50, "\\u00e9"]}'
    r = client.post(
        "/poll" + CHAT,
        content=raw,
        headers={"Authorization": f"Bearer {gw.app_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 200
    assert vendor.requests[0].body == raw


def test_sdk_exceptions_for_401_and_403(gw: Gw) -> None:
    with pytest.raises(openai.AuthenticationError) as e401:
        sdk(gw, key="sk-aigw-unknown-key-000000000000000000").chat.completions.create(model="x", messages=MSG)  # type: ignore[arg-type]
    assert e401.value.status_code == 401 and "not valid" in str(e401.value)
    with pytest.raises(openai.AuthenticationError, match="disabled"):
        sdk(gw, key=gw.off_key).chat.completions.create(model="x", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError, match="not authorized"):
        sdk(gw, key=gw.lonely_key).chat.completions.create(model="x", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.PermissionDeniedError):
        sdk(gw, "/secret").chat.completions.create(model="x", messages=MSG)  # type: ignore[arg-type]


def test_other_key_headers_accepted(gw: Gw, client: httpx.Client) -> None:
    for h in ("x-api-key", "api-key"):
        r = client.post("/hunyuan" + CHAT, json={"messages": MSG}, headers={h: gw.app_key})
        assert r.status_code == 200, (h, r.text)


# ------------------------------------------------------------------ policies


def test_polling_cycles_keys_in_order(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    for _ in range(6):
        assert post(client, gw, "/poll" + CHAT, {"messages": MSG}).status_code == 200
    seq = [key_of(r) for r in vendor.requests]
    assert sorted(seq[:3]) == ["k1", "k2", "k3"]
    assert seq[3:] == seq[:3]
    order = ["k1", "k2", "k3"]
    start = order.index(seq[0])
    assert seq[:3] == order[start:] + order[:start]


def test_random_uses_every_key(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    for _ in range(40):
        assert post(client, gw, "/rand" + CHAT).status_code == 200
    counts = Counter(key_of(r) for r in vendor.requests)
    assert set(counts) == {"k1", "k2"} and min(counts.values()) >= 5  # P(fail) < 1e-6


def test_failover_on_rejected_key_then_cool_down(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.reject_keys[CRED["k1"]] = 401
    r_id = rid()
    r = post(client, gw, "/fail" + CHAT, request_id=r_id)
    assert r.status_code == 200
    assert [key_of(x) for x in vendor.requests] == ["k1", "k2"]
    assert record_for(records_store, r_id)["key_name"] == "k2"
    vendor.reject_keys.clear()
    assert post(client, gw, "/fail" + CHAT).status_code == 200
    assert key_of(vendor.requests[-1]) == "k2", "the rejected key should be cooling down"


def test_specified_vs_passthrough(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    post(client, gw, "/hunyuan" + CHAT, {"model": "mine", "messages": MSG})
    post(client, gw, "/poll" + CHAT, {"model": "mine", "messages": MSG})
    post(client, gw, "/poll" + CHAT, {"messages": MSG})
    assert [r.json["model"] for r in vendor.requests] == ["hunyuan-turbos-latest", "mine", "m-default"]


def test_models_list_and_unlisted_model(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    assert post(client, gw, "/plist" + CHAT, {"model": "fam-7", "messages": MSG}).status_code == 200
    r = post(client, gw, "/plist" + CHAT, {"model": "other", "messages": MSG})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found" and "allowed-a" in err["message"]
    assert post(client, gw, "/pdef" + CHAT, {"model": "other", "messages": MSG}).status_code == 200
    assert [x.json["model"] for x in vendor.requests] == ["fam-7", "allowed-a"]


def test_multi_by_model(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    """/bymodel lists the catch-all (svc-b, empty models) first: it still only gets the rest."""
    post(client, gw, "/bymodel" + CHAT, {"model": "alpha-9", "messages": MSG})
    post(client, gw, "/bymodel" + CHAT, {"model": "zeta", "messages": MSG})
    assert [(key_of(x), x.json["model"]) for x in vendor.requests] == [("k1", "alpha-9"), ("k2", "zeta")]
    r = post(client, gw, "/strict" + CHAT, {"model": "zzz", "messages": MSG})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "gamma" in r.json()["error"]["message"]


def test_multi_by_weight(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    n = 200
    for _ in range(n):
        assert post(client, gw, "/weight" + CHAT, {"messages": MSG}).status_code == 200
    counts = Counter(key_of(r) for r in vendor.requests)
    # weights 80/20: expected 160 for w1 (sd ≈ 5.7); ±35 is > 6 sd.
    assert 125 <= counts["k1"] <= 195 and counts["k1"] + counts["k2"] == n


def test_fallback_on_500(gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store) -> None:
    vendor.queue(Behaviour(status=500))
    r_id = rid()
    r = post(client, gw, "/fb" + CHAT, request_id=r_id)
    assert r.status_code == 200
    assert [key_of(x) for x in vendor.requests] == ["k1", "k3"]
    assert record_for(records_store, r_id)["service"] == "backup"


def test_fallback_on_connect_error(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    r = post(client, gw, "/fbdown" + CHAT)
    assert r.status_code == 200
    assert [key_of(x) for x in vendor.requests] == ["k3"]


def test_fallback_on_timeout(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    vendor.queue(Behaviour(delay=3.5))
    r = post(client, gw, "/fbslow" + CHAT)
    assert r.status_code == 200
    assert [key_of(x) for x in vendor.requests] == ["k1", "k3"]


# ------------------------------------------------------------------ forwarding


def test_path_mapping(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    post(client, gw, "/hunyuan" + CHAT)
    post(client, gw, "/hunyuan/v1/completions", {"prompt": "hi"})
    post(client, gw, "/raw" + CHAT)
    assert [x.path for x in vendor.requests] == ["/v1/chat/completions", "/v1/completions", "/raw/chat/completions"]


def test_header_hygiene(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    vendor.behave(headers={"Set-Cookie": "session=vendor", "X-Vendor-Trace": "abc"})
    r = client.post(
        "/hunyuan" + CHAT,
        json={"messages": MSG},
        headers={
            "Authorization": f"Bearer {gw.app_key}",
            "x-api-key": gw.app_key,
            "api-key": gw.app_key,
            "Cookie": "a=b",
            "x-request-id": "my-trace-1",
            "X-Custom": "dropped",
            "OpenAI-Beta": "kept",
        },
    )
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "my-trace-1"
    assert "set-cookie" not in r.headers and r.headers["x-vendor-trace"] == "abc"
    seen = vendor.requests[0]
    assert gw.app_key not in repr(seen.headers) and gw.app_key not in seen.body.decode()
    # only the protocols' own request headers reach the vendor (an allowlist)
    sent = {k.lower(): v for k, v in seen.headers.items()}
    assert "cookie" not in sent and "x-custom" not in sent and sent["openai-beta"] == "kept"
    assert seen.authorization == f"Bearer {CRED['k1']}"
    assert {k.lower(): v for k, v in seen.headers.items()}["x-request-id"] == "my-trace-1"
    generated = post(client, gw, "/hunyuan" + CHAT).headers["x-request-id"]
    assert len(generated) >= 16 and generated != "my-trace-1"


def test_env_credential_read_at_request_time(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    assert post(client, gw, "/env" + CHAT).status_code == 200
    assert vendor.requests[0].authorization == f"Bearer {ENV_VALUE}"


# ------------------------------------------------------------------ failures


def _error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("x-request-id")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "code"} and err["message"]
    for secret in (*CRED.values(), ENV_VALUE):
        assert secret not in r.text
    return err  # type: ignore[no-any-return]


def test_400s(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    h = {"Authorization": f"Bearer {gw.app_key}", "Content-Type": "application/json"}
    assert _error(client.post("/hunyuan" + CHAT, content=b"{nope", headers=h), 400)["code"] == "invalid_json"
    assert _error(client.post("/hunyuan" + CHAT, content=b"[1, 2]", headers=h), 400)["code"] == "invalid_body"
    assert _error(client.post("/hunyuan" + CHAT, content=b"", headers=h), 400)
    assert "model" in _error(post(client, gw, "/hunyuan" + CHAT, {"model": 3}), 400)["message"]
    assert "stream" in _error(post(client, gw, "/hunyuan" + CHAT, {"stream": "yes"}), 400)["message"]
    assert vendor.requests == []


def test_deeply_nested_body_rewritten_and_estimated(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    """Deeper than orjson writes (255) yet valid JSON: forwarded, and tokens estimated."""
    vendor.behave(usage="none")
    deep: Any = "deep text"
    for _ in range(400):
        deep = [{"content": deep}]
    r_id = rid()
    r = post(client, gw, "/hunyuan" + CHAT, {"model": "other", "messages": deep}, request_id=r_id)
    assert r.status_code == 200, r.text
    assert vendor.requests[0].json["model"] == "hunyuan-turbos-latest"
    rec = record_for(records_store, r_id)
    assert rec["estimated"] is True and rec["prompt_tokens"] == 3  # "deep text" ≈ 9 chars


def test_401_403_404_405(gw: Gw, client: httpx.Client) -> None:
    assert _error(client.post("/hunyuan" + CHAT, json={}), 401)["code"] == "missing_api_key"
    _error(post(client, gw, "/hunyuan" + CHAT, key="sk-aigw-wrong-key-0000000000000000000"), 401)
    _error(post(client, gw, "/hunyuan" + CHAT, key=gw.off_key), 401)
    _error(post(client, gw, "/secret" + CHAT), 403)
    _error(post(client, gw, "/nowhere" + CHAT), 404)
    _error(post(client, gw, "/hunyuan/v1/embeddings"), 404)
    _error(client.get("/hunyuan" + CHAT, headers={"Authorization": f"Bearer {gw.app_key}"}), 405)


def test_413_body_too_large(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    big = b'{"messages": "' + b"x" * (8 * 1024 * 1024 + 10) + b'"}'
    r = client.post("/hunyuan" + CHAT, content=big, headers={"Authorization": f"Bearer {gw.app_key}"})
    assert _error(r, 413)["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"messages": "'
        for _ in range(9):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    r = client.post("/hunyuan" + CHAT, content=chunks(), headers={"Authorization": f"Bearer {gw.app_key}"})
    _error(r, 413)
    assert vendor.requests == []


def test_502_vendor_down_and_env_missing(gw: Gw, client: httpx.Client, records_store: Store) -> None:
    r_id = rid()
    err = _error(post(client, gw, "/down" + CHAT, request_id=r_id), 502)
    assert "down" in err["message"]
    rec = record_for(records_store, r_id)
    assert rec["status"] == 502 and rec["service"] == "down" and rec["error"]
    err = _error(post(client, gw, "/missing" + CHAT), 502)
    assert "kmissing" in err["message"] and "AIGW_TEST_MISSING_KEY" in err["message"]


def test_vendor_closing_without_answer_is_retried_once(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    vendor.queue(Behaviour(close=True))
    assert post(client, gw, "/hunyuan" + CHAT).status_code == 200
    assert len(vendor.requests) == 2
    vendor.reset()
    vendor.queue(Behaviour(close=True), Behaviour(close=True))
    err = _error(post(client, gw, "/hunyuan" + CHAT), 502)
    assert err["code"] == "upstream_error" and len(vendor.requests) == 2


def test_504_slow_vendor(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    vendor.queue(Behaviour(delay=3.5))
    assert _error(post(client, gw, "/slow" + CHAT), 504)["code"] == "upstream_timeout"


def test_vendor_errors_relayed(gw: Gw, client: httpx.Client, vendor: MockVendor) -> None:
    vendor.queue(
        Behaviour(status=400, body={"error": {"message": "bad temperature", "type": "x", "code": "vendor_code"}})
    )
    r = post(client, gw, "/hunyuan" + CHAT)
    assert r.status_code == 400 and r.json()["error"]["code"] == "vendor_code"
    vendor.queue(Behaviour(status=503, body="overloaded", content_type="text/plain"))
    r = post(client, gw, "/hunyuan" + CHAT)
    assert r.status_code == 503 and r.text == "overloaded" and r.headers.get("x-request-id")


def test_stream_broken_midway_ends_with_error_event(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.queue(Behaviour(chunks=6, break_after=2))
    r_id = rid()
    r = post(client, gw, "/hunyuan" + CHAT, {"messages": MSG, "stream": True}, request_id=r_id)
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert len(events) == 3 and "tok1" in events[1]
    assert events[-1].startswith("event: error\ndata: ")
    assert "error" in orjson.loads(events[-1].split("data: ", 1)[1])
    assert record_for(records_store, r_id)["status"] == 502


def test_stream_idle_past_timeout_ends_with_error_event(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.queue(Behaviour(chunks=3, chunk_delay=3.5))
    r_id = rid()
    r = post(client, gw, "/slow" + CHAT, {"messages": MSG, "stream": True}, request_id=r_id)
    assert r.status_code == 200 and "event: error" in r.text and "upstream_timeout" in r.text
    assert record_for(records_store, r_id)["status"] == 504


def test_client_disconnect_cancels_vendor_call(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.queue(Behaviour(endless=True, chunk_delay=0.05))
    r_id = rid()
    with client.stream(
        "POST",
        "/hunyuan" + CHAT,
        json={"messages": MSG, "stream": True},
        headers={"Authorization": f"Bearer {gw.app_key}", "x-request-id": r_id},
    ) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]
        assert got[0].startswith("data: ")
    vendor.wait_until(lambda: bool(vendor.requests) and vendor.requests[0].cancelled, timeout=10)
    rec = record_for(records_store, r_id)
    assert rec["status"] == 499


def test_client_timeout_cancels_a_waiting_vendor_call(
    gw: Gw, client: httpx.Client, vendor: MockVendor, records_store: Store
) -> None:
    vendor.queue(Behaviour(delay=5))
    r_id = rid()
    with pytest.raises(httpx.ReadTimeout):
        post(client, gw, "/hunyuan" + CHAT, request_id=r_id, timeout=0.7)
    vendor.wait_until(lambda: bool(vendor.requests) and vendor.requests[0].cancelled, timeout=4)
    assert record_for(records_store, r_id)["status"] == 499


def test_no_secret_in_records(gw: Gw, records_store: Store) -> None:
    from store import usage

    with records_store.session() as s:
        dump = orjson.dumps([usage.record_dict(r) for r in usage.recent(s, 5000)]).decode()
    assert dump.count('"request_id"') > 10
    for secret in (*CRED.values(), ENV_VALUE, gw.app_key, gw.off_key, gw.lonely_key):
        assert secret not in dump
    assert os.environ.get("AIGW_TEST_VENDOR_KEY") is None
