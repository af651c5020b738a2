"""The compiled snapshot: paths, grants, most generous limits, prices, env credentials."""

from __future__ import annotations

import pytest

from proxy.errors import GatewayError
from proxy.routes import CompiledKey, compile_snapshot, op_for
from store.keys import hash_key
from store.spec import (
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)


def config() -> Config:
    return Config(
        model_keys=[ModelKeySpec("lit", "sk-literal-123"), ModelKeySpec("env", "env:AIGW_UNIT_KEY")],
        model_services=[
            ModelServiceSpec(
                "s",
                address="http://v.example/v1/",
                keys=["lit", "env"],
                default_model="hy-turbo",
                prices={"hy-turbo": Price(1, 2), "*": Price(5, 6), "hy-*": Price(3, 4)},
            )
        ],
        model_apis=[
            ModelApiSpec("a", routes=["/v1/chat/completions", "/v1/completions"], base_path="/hy", services=["s"])
        ],
        consumers=[ConsumerSpec("c"), ConsumerSpec("d", enabled=False)],
        consumer_groups=[
            ConsumerGroupSpec("g1", consumers=["c"], model_apis=["a"], requests_per_minute=5, tokens_per_minute=0),
            ConsumerGroupSpec(
                "g2", consumers=["c", "d"], model_apis=["a"], requests_per_minute=50, tokens_per_minute=100
            ),
        ],
    )


def test_paths_grants_and_generous_limits() -> None:
    snap = compile_snapshot(config(), [(hash_key("sk-aigw-c"), "c")], 7)
    assert set(snap.routes) == {"/hy/v1/chat/completions", "/hy/v1/completions", "/hy/v1/models"}
    assert snap.routes["/hy/v1/chat/completions"].op == "/chat/completions"
    assert snap.routes["/hy/v1/models"].models_list
    assert snap.consumers_by_hash[hash_key("sk-aigw-c")].name == "c"
    assert snap.grants["c"] == {"a"} and snap.grants["d"] == {"a"}
    limits = snap.limits[("c", "a")]
    assert (limits.requests_per_minute, limits.tokens_per_minute) == (50, 0)  # 0 = unlimited wins
    assert snap.services["s"].address == "http://v.example/v1"
    assert op_for("/v1/embeddings") == "/embeddings"


def test_price_lookup_exact_then_glob() -> None:
    svc = compile_snapshot(config(), [], 1).services["s"]
    assert svc.price_for("hy-turbo") == Price(1, 2)
    assert svc.price_for("hy-lite") == Price(3, 4)
    assert svc.price_for("other") == Price(5, 6)


def test_env_credential_resolved_at_request_time(monkeypatch: pytest.MonkeyPatch) -> None:
    key = compile_snapshot(config(), [], 1).services["s"].keys[1]
    assert key == CompiledKey("env", "", "AIGW_UNIT_KEY")
    monkeypatch.delenv("AIGW_UNIT_KEY", raising=False)
    with pytest.raises(GatewayError) as exc:
        key.resolve()
    assert exc.value.status == 502 and "'env'" in exc.value.message
    monkeypatch.setenv("AIGW_UNIT_KEY", "sk-from-env-999")
    assert key.resolve() == "sk-from-env-999"
    literal = compile_snapshot(config(), [], 1).services["s"].keys[0]
    assert "sk-literal-123" not in repr(literal) and literal.resolve() == "sk-literal-123"


def test_headers_named_by_connection_are_not_relayed() -> None:
    from proxy.heads import relayed_head

    vendor = [
        (b"Connection", b"x-hop-secret, keep-alive"),
        (b"X-Hop-Secret", b"s"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Set-Cookie", b"a=b"),
        (b"X-Vendor-Trace", b"t-1"),
        (b"Content-Type", b"application/json"),
        (b"x-ratelimit-limit-requests", b"999"),
    ]
    vendor = [(k.lower(), v) for k, v in vendor]  # as the vendor client parses them
    lines = relayed_head(vendor, "rid-1", b"x-ratelimit-limit-requests: 5\r\n").decode().split("\r\n")[:-1]
    out = dict(line.split(": ", 1) for line in lines)
    assert {k.lower() for k in out} == {"x-vendor-trace", "content-type", "x-request-id", "x-ratelimit-limit-requests"}
    assert out["x-request-id"] == "rid-1"
    assert out["x-ratelimit-limit-requests"] == "5", "the gateway's limits replace the vendor's"
