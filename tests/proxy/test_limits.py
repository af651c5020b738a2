"""Traffic control through a real ``aigw serve``: bursts, streamed tokens, quotas, changes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_config import limits_toml, new_key
from helpers import GatewayProcess
from mock_vendor import MockVendor

from tui.cli import main as aigw_main

MSG = [{"role": "user", "content": "hi"}]
CONSUMERS = ("burst", "toky", "quota-app", "changing")


class Lim:
    def __init__(self, db: Path, keys: dict[str, str]) -> None:
        self.db = db
        self.keys = keys
        self.proc = GatewayProcess(db).start()

    def chat(self, api: str, consumer: str, **body: object) -> httpx.Response:
        return httpx.post(f"{self.proc.url}/{api}/v1/chat/completions",
                          json={"messages": MSG, **body}, timeout=30,
                          headers={"Authorization": f"Bearer {self.keys[consumer]}"})


@pytest.fixture(scope="module")
def lim(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lim]:
    tmp = tmp_path_factory.mktemp("lim")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    cfg = tmp / "limits.toml"
    cfg.write_text(limits_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    g = Lim(db, keys)
    try:
        yield g
    finally:
        g.proc.stop()


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


async def _burst(lim: Lim, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        return await asyncio.gather(*(
            c.post(f"{lim.proc.url}/lim/v1/chat/completions", json={"messages": MSG},
                   headers={"Authorization": f"Bearer {lim.keys['burst']}"}) for _ in range(n)))


def test_burst_of_50_lets_exactly_10_through(lim: Lim, vendor: MockVendor) -> None:
    responses = asyncio.run(_burst(lim, 50))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) == 10 and len(refused) == 40 and len(vendor.requests) == 10
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"10"}
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in ok) == list(range(10))
    for r in refused:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert r.headers["x-ratelimit-reset-requests"].endswith("s")


def test_admin_limits_shows_current_use(lim: Lim) -> None:
    url = lim.proc.admin_url + "/limits"
    assert httpx.get(url, timeout=5).status_code == 401
    data = httpx.get(url, timeout=5, headers={"Authorization": f"Bearer {lim.proc.token}"}).json()
    burst = data["consumers"]["burst"]
    assert burst["apis"]["lim"]["requests_per_minute"] == {"limit": 10, "used": 10}
    assert burst["quota"] is None
    quota = data["consumers"]["quota-app"]["quota"]
    assert quota["limit"] == 40 and quota["unit"] == "tokens" and quota["period"] == "day"
    assert quota["used"] == 0 and quota["resets_at"] > time.time()


def test_tokens_per_minute_counts_streamed_answers(lim: Lim, vendor: MockVendor) -> None:
    first = lim.chat("tok", "toky", stream=True)
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-tokens"] == "30"
    second = lim.chat("tok", "toky", stream=True)  # 18 of 30 used by the first stream
    assert second.status_code == 200 and second.headers["x-ratelimit-remaining-tokens"] == "12"
    third = lim.chat("tok", "toky", stream=True)
    assert third.status_code == 429, third.text
    assert third.headers["x-ratelimit-remaining-tokens"] == "0"
    assert "tokens per minute" in third.json()["error"]["message"]
    assert len(vendor.requests) == 2


def test_limits_changed_while_serving(lim: Lim, tmp_path: Path) -> None:
    assert lim.chat("chg", "changing").status_code == 200
    assert lim.chat("chg", "changing").status_code == 429
    f = tmp_path / "more.toml"
    f.write_text('[[consumer_groups]]\nname = "g-changing"\nconsumers = ["changing"]\n'
                 'model_apis = ["chg"]\nrequests_per_minute = 100\n')
    assert aigw_main(["--db", str(lim.db), "import", str(f)]) == 0
    deadline = time.monotonic() + 2.0
    while (status := lim.chat("chg", "changing").status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status == 200


def test_quota_holds_across_a_restart(lim: Lim) -> None:
    for _ in range(3):  # 18 tokens each: 0, 18, 36 used before each → all under 40
        assert lim.chat("q", "quota-app").status_code == 200
    over = lim.chat("q", "quota-app")
    assert over.status_code == 429
    err = over.json()["error"]
    assert err["code"] == "insufficient_quota" and "resets at" in err["message"]
    assert int(over.headers["Retry-After"]) <= 86400
    assert lim.proc.stop() == 0
    lim.proc = GatewayProcess(lim.db).start()
    again = lim.chat("q", "quota-app")
    assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota"
