"""Limits shared through a real Redis by two ``aigw serve`` processes on one store.

Bursts spread over both gateways are admitted exactly the limit's number of times; a
flushed Redis keeps a spent quota (restored from the records); a stopped Redis makes
each gateway count alone (or refuse, when told to) and a restarted one is used again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess, gateways_on_one_redis, wait_for
from mock_vendor import MockVendor
from servers import RedisServer, redis_server

from store import repo
from store.db import open_store
from tui.cli import main as aigw_main

__all__ = ["redis_server"]  # the fixture, used by name

MSG = [{"role": "user", "content": "hi"}]
RPM = 5
QUOTA = 7
CONSUMERS = ("burst", "rq", "tq", "free", "toky")
TPM = 30


def shared_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    return (
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\n\n'
        '[[model_apis]]\nname = "lim"\nbase_path = "/lim"\nservices = ["main"]\n\n'
        f'[[consumers]]\nname = "burst"\napi_keys = ["{keys["burst"]}"]\n\n'
        f'[[consumers]]\nname = "rq"\napi_keys = ["{keys["rq"]}"]\n'
        f'quota = {QUOTA}\nquota_unit = "requests"\nquota_period = "week"\n\n'
        f'[[consumers]]\nname = "tq"\napi_keys = ["{keys["tq"]}"]\n'
        'quota = 1000000\nquota_unit = "tokens"\nquota_period = "day"\n\n'
        f'[[consumers]]\nname = "free"\napi_keys = ["{keys["free"]}"]\n\n'
        '[[consumer_groups]]\nname = "g-burst"\nconsumers = ["burst"]\nmodel_apis = ["lim"]\n'
        f"requests_per_minute = {RPM}\n\n"
        f'[[consumers]]\nname = "toky"\napi_keys = ["{keys["toky"]}"]\n\n'
        '[[consumer_groups]]\nname = "g-rest"\nconsumers = ["rq", "tq", "free"]\nmodel_apis = ["lim"]\n\n'
        '[[consumer_groups]]\nname = "g-toky"\nconsumers = ["toky"]\nmodel_apis = ["lim"]\n'
        f"tokens_per_minute = {TPM}\n"
    )


@dataclass
class Pair:
    db: Path
    keys: dict[str, str]
    gws: tuple[GatewayProcess, GatewayProcess]
    redis: RedisServer

    def chat(self, i: int, consumer: str) -> httpx.Response:
        return httpx.post(
            f"{self.gws[i].url}/lim/v1/chat/completions",
            json={"messages": MSG},
            timeout=30,
            headers={"Authorization": f"Bearer {self.keys[consumer]}"},
        )

    async def burst(self, consumer: str, n: int) -> list[httpx.Response]:
        """``n`` concurrent requests, alternating between the two gateways."""
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=n)) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"{self.gws[i % 2].url}/lim/v1/chat/completions",
                        json={"messages": MSG},
                        headers={"Authorization": f"Bearer {self.keys[consumer]}"},
                    )
                    for i in range(n)
                )
            )

    def health(self, i: int) -> dict[str, object]:
        return httpx.get(f"{self.gws[i].admin_url}/healthz", timeout=5).json()  # type: ignore[no-any-return]

    def shared_metric(self, i: int) -> str:
        text = httpx.get(f"{self.gws[i].admin_url}/metrics", timeout=5).text
        return next(line for line in text.splitlines() if line.startswith("aigw_limits_shared "))

    def records(self, consumer: str, status: int) -> int:
        st = open_store(str(self.db))
        try:
            with st.session() as s:
                from store import usage

                return sum(1 for r in usage.recent(s, 10_000) if r.consumer == consumer and r.status == status)
        finally:
            st.dispose()


@pytest.fixture(scope="module")
def pair(vendor: MockVendor, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("shared")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    cfg = tmp / "shared.toml"
    cfg.write_text(shared_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    with gateways_on_one_redis(db, redis_server.url) as gws:
        yield Pair(db, keys, gws, redis_server)


def test_healthz_and_metric_say_the_limits_are_shared(pair: Pair) -> None:
    for i in (0, 1):
        limits = pair.health(i)["limits"]
        assert limits == {
            "backend": "redis",
            "shared": True,
            "redis": pair.redis.url,
            "redis_failure": "local",
        }
        assert pair.shared_metric(i) == "aigw_limits_shared 1"


async def test_rpm_burst_across_two_gateways_is_admitted_exactly_rpm_times(pair: Pair, vendor: MockVendor) -> None:
    vendor.reset()
    answers = await pair.burst("burst", 3 * RPM)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * RPM + [429] * (2 * RPM)
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == str(RPM)
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(vendor.requests) == RPM


async def test_requests_quota_burst_then_flushall_keeps_it_spent(pair: Pair) -> None:
    answers = await pair.burst("rq", 3 * QUOTA)
    assert sorted(r.status_code for r in answers) == [200] * QUOTA + [429] * (2 * QUOTA)
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} == {"insufficient_quota"}
    # Every admitted request is in the store (both gateways write their records), then
    # Redis forgets everything: the quota is counted again from the records.
    wait_for(lambda: pair.records("rq", 200) == QUOTA, 15, interval=0.1, what="the quota's records")
    assert pair.redis.command("FLUSHALL") == "+OK"
    for i in (0, 1):
        r = pair.chat(i, "rq")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "insufficient_quota"


def test_tokens_used_through_one_gateway_count_at_the_other(pair: Pair) -> None:
    """18 tokens an answer (the mock's usage), 30 a minute: two answers, then refused on both."""

    def settled() -> bool:
        return _hget(pair.redis, "aigw:{toky}:tpm-held:lim", "r") in ("", "0")

    for i in (0, 1):
        r = pair.chat(i, "toky")
        assert r.status_code == 200, r.text
        wait_for(settled, 10, interval=0.02, what="the reservation released in Redis")
    for i in (0, 1):
        r = pair.chat(i, "toky")
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert f"reached {TPM} tokens per minute" in r.json()["error"]["message"]
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"


def test_scripts_flushed_from_redis_are_loaded_again(pair: Pair) -> None:
    assert pair.redis.command("SCRIPT", "FLUSH") == "+OK"
    for i in (0, 1):  # EVALSHA answers NOSCRIPT once; the client loads the script and goes on
        r = pair.chat(i, "tq")
        assert r.status_code == 200, r.text
    assert all(pair.health(i)["limits"]["shared"] is True for i in (0, 1))  # type: ignore[index]


def test_tokens_quota_reserves_and_settles_in_redis(pair: Pair) -> None:
    """After a flush the counter is loaded by the first request's check: that request counts too."""
    # Every earlier request of the consumer settled and in the records, so the load is exact.
    wait_for(lambda: _settled_all(pair) and pair.records("tq", 200) == _served(pair, "tq"), 10, interval=0.1)
    assert pair.redis.command("FLUSHALL") == "+OK"
    before = pair.records("tq", 200) * 18
    assert pair.chat(0, "tq").status_code == 200
    assert pair.chat(1, "tq").status_code == 200

    def counted() -> bool:
        keys = [k for k in _keys(pair.redis, "aigw:{tq}:quota:*") if not k.endswith(":due")]
        return (
            len(keys) == 1
            and float(_hget(pair.redis, keys[0], "u")) > 0
            and _hget(pair.redis, keys[0], "r")
            in (
                "0",
                "",
            )
        )

    wait_for(counted, 10, interval=0.05, what="the tokens quota settled in Redis")
    # Each gateway's /limits reports the shared use: what Redis holds, both gateways' tokens.
    key = next(k for k in _keys(pair.redis, "aigw:{tq}:quota:*") if not k.endswith(":due"))
    shared = float(_hget(pair.redis, key, "u"))
    assert shared == before + 2 * 18
    for gw in pair.gws:
        got = httpx.get(f"{gw.admin_url}/limits", headers={"Authorization": f"Bearer {gw.token}"}, timeout=10)
        assert got.json()["consumers"]["tq"]["quota"]["used"] == shared


def test_redis_stopped_counts_locally_then_comes_back(pair: Pair) -> None:
    pair.redis.stop()
    try:
        # Served all the same, counted in each process; health and metric say so.
        assert pair.chat(0, "free").status_code == 200
        for i in (0, 1):
            r = pair.chat(i, "burst")
            assert r.status_code in (200, 429)

            def alone(i: int = i) -> bool:
                limits = pair.health(i)["limits"]
                return isinstance(limits, dict) and limits["shared"] is False

            wait_for(alone, 10, interval=0.1, what="healthz to say the limits are local")
            assert pair.shared_metric(i) == "aigw_limits_shared 0"
            assert "Redis unreachable" in str(pair.health(i)["limits"])
    finally:
        pair.redis.start()
    for i in (0, 1):
        pair.chat(i, "burst")  # a limited request notices nothing: the probe brings it back

        def back(i: int = i) -> bool:
            return pair.health(i)["limits"]["shared"] is True  # type: ignore[index]

        wait_for(back, 8, interval=0.1, what="the gateway to use Redis again")
        assert pair.shared_metric(i) == "aigw_limits_shared 1"
    assert "cannot reach Redis" in pair.gws[0].output() + _log(pair)
    assert "answers again" in _log(pair)


def _set_failure(pair: Pair, mode: str) -> None:
    st = open_store(str(pair.db))
    try:
        with st.session() as s:
            gw = repo.load_config(s).gateway
            gw.redis_failure = mode
            repo.save_gateway(s, gw)
    finally:
        st.dispose()


def test_refuse_mode_answers_503_while_redis_is_down(pair: Pair) -> None:
    _set_failure(pair, "refuse")
    wait_for(lambda: all(pair.health(i)["limits"]["redis_failure"] == "refuse" for i in (0, 1)), 10)  # type: ignore[index]
    pair.redis.stop()
    try:
        for i in (0, 1):
            r = pair.chat(i, "burst")
            if r.status_code != 503:  # the first one may be the one that finds Redis gone
                r = pair.chat(i, "burst")
            assert r.status_code == 503, r.text
            err = r.json()["error"]
            assert err["code"] == "limits_unavailable"
            assert "redis_failure" in err["message"]
            assert r.headers["retry-after"] == "1"
            # A consumer without limits needs no counts: still served.
            assert pair.chat(i, "free").status_code == 200
    finally:
        pair.redis.start()
        _set_failure(pair, "local")
    wait_for(lambda: all(pair.health(i)["limits"]["shared"] for i in (0, 1)), 8, what="Redis used again")  # type: ignore[index]


def _served(pair: Pair, consumer: str) -> int:
    """Answers 200 to ``consumer`` by both gateways, from their metrics."""
    total = 0
    for i in (0, 1):
        text = httpx.get(f"{pair.gws[i].admin_url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("aigw_requests_total{") and f'consumer="{consumer}",status="200"' in line:
                total += int(line.rsplit(" ", 1)[1])
    return total


def _settled_all(pair: Pair) -> bool:
    """No reservation held in Redis for the tokens-quota consumer (every request settled)."""
    keys = [k for k in _keys(pair.redis, "aigw:{tq}:quota:*") if not k.endswith(":due")]
    return all(_hget(pair.redis, k, "r") in ("", "0") for k in keys)


def _log(pair: Pair) -> str:
    path = pair.db.parent / "gateway.log"
    return path.read_text(errors="replace") if path.exists() else ""


def _keys(redis: RedisServer, pattern: str) -> list[str]:
    import redis as redis_py

    with redis_py.Redis.from_url(redis.url, decode_responses=True) as r:
        return list(r.keys(pattern))


def _hget(redis: RedisServer, key: str, field: str) -> str:
    import redis as redis_py

    with redis_py.Redis.from_url(redis.url, decode_responses=True) as r:
        return str(r.hget(key, field) or "")


async def test_workers_with_redis_then_a_killed_supervisor_takes_its_workers(
    vendor: MockVendor, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Workers of one supervisor count in Redis too; killed with SIGKILL, it leaves no worker serving."""
    import os
    import signal

    db = tmp_path / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    cfg = tmp_path / "shared.toml"
    cfg.write_text(shared_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    assert redis_server.command("FLUSHALL") == "+OK"
    gw = GatewayProcess(db, args=["--workers", "2", "--redis-url", redis_server.url]).start(timeout=60)
    try:
        health = httpx.get(f"{gw.admin_url}/healthz", timeout=10).json()
        assert health["limits"]["backend"] == "redis" and health["limits"]["shared"] is True
        pids = [w["pid"] for w in health["workers"]]
        async with httpx.AsyncClient(timeout=30) as c:
            answers = await asyncio.gather(
                *(
                    c.post(
                        f"{gw.url}/lim/v1/chat/completions",
                        json={"messages": MSG},
                        headers={"Authorization": f"Bearer {keys['burst']}", "Connection": "close"},
                    )
                    for _ in range(3 * RPM)
                )
            )
        assert sorted(r.status_code for r in answers) == [200] * RPM + [429] * (2 * RPM)
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)

        def gone() -> bool:
            alive = []
            for pid in pids:
                try:
                    os.kill(pid, 0)
                    alive.append(pid)
                except ProcessLookupError:
                    pass
            return not alive

        wait_for(gone, 30, interval=0.1, what="the orphaned workers to stop")
    finally:
        gw.stop()
