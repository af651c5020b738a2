"""A store wired to the mock vendor, with prices and two consumers — for the traffic/usage tests."""

from __future__ import annotations

from pathlib import Path

import httpx
from helpers import GatewayProcess, free_port
from mock_vendor import MockVendor

from store import repo
from store.db import open_store
from store.spec import (
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)

MODEL = "hunyuan-turbos-latest"
#: Per 1M tokens, as a service's ``prices`` are given.
PRICE_IN, PRICE_OUT = 0.8, 2.0
#: What the mock vendor reports per request by default.
PROMPT, COMPLETION = 11, 7
CHAT = "/hunyuan/v1/chat/completions"


#: One client for every test request: creating an httpx.Client costs ~0.1 s (TLS setup).
CLIENT = httpx.Client(timeout=30)


def request_cost(prompt: int = PROMPT, completion: int = COMPLETION) -> float:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


def configure(db: Path, vendor: MockVendor) -> dict[str, str]:
    """Key → service (priced) → API → consumers ``app``, ``team`` (a daily token quota)
    and ``ops`` → group. Gateway settings on free ports. Returns the plain keys."""
    st = open_store(str(db))
    try:
        with st.session() as s:
            repo.save_gateway(
                s, GatewaySpec(listen=f"127.0.0.1:{free_port()}", admin_listen=f"127.0.0.1:{free_port()}")
            )
            repo.save(s, "model_keys", ModelKeySpec("k1", "sk-vendor-usage-secret-1"))
            repo.save(
                s,
                "model_services",
                ModelServiceSpec(
                    "main",
                    vendor="custom",
                    address=vendor.url,
                    keys=["k1"],
                    default_model=MODEL,
                    prices={MODEL: Price(input=PRICE_IN, output=PRICE_OUT)},
                ),
            )
            repo.save(s, "model_apis", ModelApiSpec("hunyuan-api", base_path="/hunyuan", services=["main"]))
            repo.save(s, "consumers", ConsumerSpec("app"))
            repo.save(s, "consumers", ConsumerSpec("team", quota=1000, quota_unit="tokens", quota_period="day"))
            repo.save(s, "consumers", ConsumerSpec("ops"))
            keys = {name: repo.create_consumer_key(s, name) for name in ("app", "team", "ops")}
            repo.save(
                s,
                "consumer_groups",
                ConsumerGroupSpec("apps", consumers=["app", "team", "ops"], model_apis=["hunyuan-api"]),
            )
    finally:
        st.dispose()
    return keys


def settings(db: Path) -> GatewaySpec:
    st = open_store(str(db))
    try:
        with st.session() as s:
            return repo.load_config(s).gateway
    finally:
        st.dispose()


def gateway_for(db: Path) -> GatewayProcess:
    """``aigw serve`` (not started) on the ports the store's settings name — where the
    console and ``aigw logs --follow`` look for it."""
    gw = GatewayProcess(db)
    cfg = settings(db)
    gw.port = int(cfg.listen.rpartition(":")[2])
    gw.admin_port = int(cfg.admin_listen.rpartition(":")[2])
    return gw


def chat(url: str, key: str, *, stream: bool = False, request_id: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if request_id:
        headers["x-request-id"] = request_id
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return CLIENT.post(url + CHAT, json=body, headers=headers)
