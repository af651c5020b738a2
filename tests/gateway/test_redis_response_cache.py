"""The response cache shared through a real Redis by two ``aigw serve`` processes on one store.

A miss stored through one gateway is a hit through the other (streams too), scopes hold
across them, a configuration change or an admin clear drops the entries for both, hits
are charged as hits wherever they land, a supervisor's ``/cache/clear`` reaches its
workers, a stopped Redis turns every answer into a vendor answer until it is back, and
nothing in Redis holds a consumer key or a model key credential.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
from gateway_config import CRED, new_key
from helpers import GatewayProcess, gateways_on_one_redis, record_for, wait_for
from mock_vendor import MockVendor
from servers import RedisServer, redis_server

from store.db import Store, open_store
from store.keys import hash_key
from tui.cli import main as aigw_main

__all__ = ["redis_server"]  # the fixture, used by name

CONSUMERS = ("alice", "bob", "toky", "rpm-app")
#: The mock's default usage (prompt, completion) and the service's prices per 1M tokens.
PT, CT = 11, 7
PRICE_IN, PRICE_OUT = 2.0, 4.0


def api_toml(name: str, extra: str = "", ttl: int = 300) -> str:
    return (
        f'[[model_apis]]\nname = "{name}"\nbase_path = "/{name}"\nservices = ["main"]\ncache_ttl_s = {ttl}\n{extra}\n'
    )


def config_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    parts = [
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\nmodel_policy = "passthrough"\n'
        f"[model_services.prices.m]\ninput = {PRICE_IN}\noutput = {PRICE_OUT}\n\n",
        api_toml("cached"),
        api_toml("shared", 'cache_scope = "api"\n'),
        api_toml("tok"),
        api_toml("rpm"),
    ]
    parts += [f'[[consumers]]\nname = "{c}"\napi_keys = ["{keys[c]}"]\n\n' for c in CONSUMERS]
    parts.append(
        '[[consumer_groups]]\nname = "all"\nconsumers = ["alice", "bob"]\nmodel_apis = ["cached", "shared"]\n\n'
        '[[consumer_groups]]\nname = "g-toky"\nconsumers = ["toky"]\nmodel_apis = ["tok"]\ntokens_per_minute = 30\n\n'
        '[[consumer_groups]]\nname = "g-rpm"\nconsumers = ["rpm-app"]\nmodel_apis = ["rpm"]\n'
        "requests_per_minute = 4\n"
    )
    return "".join(parts)


@dataclass
class Pair:
    db: Path
    tmp: Path
    keys: dict[str, str]
    gws: tuple[GatewayProcess, GatewayProcess]
    redis: RedisServer
    vendor: MockVendor

    def post(self, i: int, api: str, body: dict[str, Any], consumer: str = "alice") -> httpx.Response:
        return httpx.post(
            f"{self.gws[i].url}/{api}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {self.keys[consumer]}"},
            timeout=20,
        )

    def stream(self, i: int, api: str, body: dict[str, Any], consumer: str = "alice") -> tuple[httpx.Response, bytes]:
        with httpx.stream(
            "POST",
            f"{self.gws[i].url}/{api}/v1/chat/completions",
            json={**body, "stream": True},
            headers={"Authorization": f"Bearer {self.keys[consumer]}"},
            timeout=20,
        ) as r:
            return r, r.read()

    def admin(self, i: int, path: str) -> httpx.Response:
        gw = self.gws[i]
        return httpx.post(f"{gw.admin_url}{path}", headers={"Authorization": f"Bearer {gw.token}"}, timeout=30)

    def metrics(self, i: int) -> dict[str, float]:
        text = httpx.get(f"{self.gws[i].admin_url}/metrics", timeout=10).text
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aigw_cache")
        }

    def health(self, i: int) -> dict[str, Any]:
        got: dict[str, Any] = httpx.get(f"{self.gws[i].admin_url}/healthz", timeout=10).json()
        return got

    def import_toml(self, text: str) -> None:
        cfg = self.tmp / f"change-{secrets.token_hex(4)}.toml"
        cfg.write_text(text)
        assert aigw_main(["--db", str(self.db), "import", str(cfg)]) == 0
        for gw in self.gws:
            gw.reload()

    def cache_keys(self) -> list[bytes]:
        with redis_py.Redis.from_url(self.redis.url) as r:
            return list(r.scan_iter(match="aigw:cache:*"))

    def log(self) -> str:
        path = self.db.parent / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def pair(vendor: MockVendor, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("rcache")
    db = tmp / "data" / "aigw.db"
    keys = {c: new_key(c) for c in CONSUMERS}
    cfg = tmp / "cache.toml"
    cfg.write_text(config_toml(vendor, keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    with gateways_on_one_redis(db, redis_server.url) as gws:
        yield Pair(db, tmp, keys, gws, redis_server, vendor)


@pytest.fixture(scope="module")
def records(pair: Pair) -> Iterator[Store]:
    st = open_store(str(pair.db))
    yield st
    st.dispose()


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def msgs() -> list[dict[str, str]]:
    """A conversation no other test asks (the cache outlives a test)."""
    return [{"role": "user", "content": f"question {secrets.token_hex(6)}"}]


def test_a_miss_through_one_gateway_is_a_hit_through_the_other(pair: Pair, records: Store) -> None:
    body = {"model": "m", "messages": msgs()}
    first = pair.post(0, "cached", body)
    second = pair.post(1, "cached", body)
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.json() == first.json()
    assert len(pair.vendor.requests) == 1

    # Recorded as any hit: the stored answer's tokens, no service, cost 0, its cost saved.
    hit = record_for(records, second.headers["x-request-id"])
    assert hit["cache"] == "hit" and hit["status"] == 200 and hit["service"] == ""
    assert (hit["prompt_tokens"], hit["completion_tokens"]) == (PT, CT)
    assert hit["cost"] == 0 and hit["model"] == "m"
    assert hit["cost_saved"] == pytest.approx((PT * PRICE_IN + CT * PRICE_OUT) / 1_000_000)
    assert record_for(records, first.headers["x-request-id"])["cache"] == "miss"


def test_a_stream_stored_through_one_is_replayed_through_the_other(pair: Pair) -> None:
    pair.vendor.behave(chunks=4)
    body = {"model": "m", "messages": msgs(), "stream_options": {"include_usage": True}}
    first, sent = pair.stream(0, "cached", body)
    second, replayed = pair.stream(1, "cached", body)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.headers["content-type"].startswith("text/event-stream")
    assert replayed == sent
    assert len([e for e in replayed.split(b"\n\n") if e]) == 4 + 1 + 1 + 1  # content, finish, usage, [DONE]
    assert len(pair.vendor.requests) == 1


def test_scopes_hold_across_gateways(pair: Pair) -> None:
    body = {"model": "m", "messages": msgs()}
    assert pair.post(0, "cached", body, "alice").headers["x-cache"] == "MISS"
    assert pair.post(1, "cached", body, "bob").headers["x-cache"] == "MISS"  # not alice's answer
    assert pair.post(0, "cached", body, "bob").headers["x-cache"] == "HIT"
    assert pair.post(1, "cached", body, "alice").headers["x-cache"] == "HIT"
    assert len(pair.vendor.requests) == 2

    pair.vendor.reset()
    assert pair.post(1, "shared", body, "alice").headers["x-cache"] == "MISS"
    assert pair.post(0, "shared", body, "bob").headers["x-cache"] == "HIT"
    assert len(pair.vendor.requests) == 1


def test_hits_on_either_gateway_charge_no_tokens(pair: Pair) -> None:
    """tokens_per_minute 30, counted in Redis: one answer uses 18, so a second charged
    answer would be refused; four hits on alternate gateways are not."""
    body = {"model": "m", "messages": msgs()}
    for i in range(5):
        r = pair.post(i % 2, "tok", body, "toky")
        assert r.status_code == 200, r.text
        assert r.headers["x-cache"] == ("MISS" if i == 0 else "HIT")
    assert len(pair.vendor.requests) == 1

    def used() -> int | None:
        gw = pair.gws[1]
        got = httpx.get(f"{gw.admin_url}/limits", headers={"Authorization": f"Bearer {gw.token}"}, timeout=10)
        tpm = got.json()["consumers"]["toky"]["apis"]["tok"]["tokens_per_minute"]
        return int(tpm["used"]) if tpm["reserved"] == 0 else None

    assert wait_for(used, 10, what="the reservations released") == PT + CT


def test_hits_on_either_gateway_count_as_requests_per_minute(pair: Pair) -> None:
    body = {"model": "m", "messages": msgs()}
    codes = [pair.post(i % 2, "rpm", body, "rpm-app").status_code for i in range(5)]
    assert codes == [200, 200, 200, 200, 429]
    assert len(pair.vendor.requests) == 1


def test_a_changed_api_loses_its_entries_on_both_gateways(pair: Pair) -> None:
    m, s = {"model": "m", "messages": msgs()}, {"model": "m", "messages": msgs()}
    assert pair.post(0, "cached", m).headers["x-cache"] == "MISS"
    assert pair.post(0, "shared", s).headers["x-cache"] == "MISS"
    assert pair.post(1, "cached", m).headers["x-cache"] == "HIT"
    pair.import_toml(api_toml("cached", ttl=600))
    # Neither gateway finds the answer made under the old definition ...
    assert pair.post(1, "cached", m).headers["x-cache"] == "MISS"
    # ... and the one made under the new definition is shared again.
    assert pair.post(0, "cached", m).headers["x-cache"] == "HIT"
    assert pair.post(1, "shared", s).headers["x-cache"] == "HIT"  # another API keeps its entries
    assert len(pair.vendor.requests) == 3


def test_an_admin_clear_drops_the_entries_for_both_gateways(pair: Pair) -> None:
    m, s = {"model": "m", "messages": msgs()}, {"model": "m", "messages": msgs()}
    pair.post(0, "cached", m)
    pair.post(0, "shared", s)
    missing = pair.admin(1, "/cache/clear?api=nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    cached_keys = [k for k in pair.cache_keys() if k.startswith(b"aigw:cache:cached:")]
    r = pair.admin(1, "/cache/clear?api=cached")
    assert r.status_code == 200 and r.json() == {"cleared": len(cached_keys)}
    assert pair.post(0, "cached", m).headers["x-cache"] == "MISS"  # cleared through the other gateway
    assert pair.post(1, "shared", s).headers["x-cache"] == "HIT"
    everything = len(pair.cache_keys())
    assert pair.admin(0, "/cache/clear").json() == {"cleared": everything}
    assert pair.cache_keys() == []
    assert pair.admin(1, "/cache/clear").json() == {"cleared": 0}
    assert pair.post(1, "shared", s).headers["x-cache"] == "MISS"


def test_metrics_count_this_gateways_part(pair: Pair) -> None:
    body = {"model": "m", "messages": msgs()}
    pair.post(0, "shared", body)
    pair.post(1, "shared", body)
    got = wait_for(lambda: (x := pair.metrics(1)).get('aigw_cache_hits_total{api="shared"}') and x, 10)
    assert got["aigw_cache_max_bytes"] == 0  # Redis's memory policy bounds it, not cache_max_mb
    stored = pair.metrics(0)
    assert stored["aigw_cache_entries"] >= 1 and stored["aigw_cache_bytes"] > 0
    assert stored["aigw_cache_errors_total"] == 0


def test_nothing_in_redis_holds_a_consumer_key_or_a_credential(pair: Pair) -> None:
    for consumer, api in (("alice", "cached"), ("bob", "shared")):
        pair.post(0, api, {"model": "m", "messages": msgs()}, consumer)
        pair.stream(1, api, {"model": "m", "messages": msgs()}, consumer)
    secrets_ = [
        *(k.encode() for k in pair.keys.values()),
        *(hash_key(k).encode() for k in pair.keys.values()),
        CRED["k1"].encode(),
    ]
    with redis_py.Redis.from_url(pair.redis.url) as r:
        keys = list(r.scan_iter())
        assert any(k.startswith(b"aigw:cache:") for k in keys)
        for key in keys:
            assert not any(s in key for s in secrets_), key
            value = _value_bytes(r, key)
            assert not any(s in value for s in secrets_), key


def _value_bytes(r: redis_py.Redis, key: bytes) -> bytes:
    """Everything a key holds, whatever its type (the limits keep hashes and sorted sets)."""
    kind = r.type(key)
    if kind == b"string":
        return bytes(r.get(key) or b"")
    if kind == b"hash":
        return b"".join(k + v for k, v in r.hgetall(key).items())
    if kind == b"zset":
        return b"".join(m for m, _ in r.zrange(key, 0, -1, withscores=True))
    if kind == b"set":
        return b"".join(r.smembers(key))
    if kind == b"list":
        return b"".join(r.lrange(key, 0, -1))
    raise AssertionError(f"{key!r} holds a {kind!r} this test does not read")


def test_a_stopped_redis_means_answers_from_the_vendor_then_hits_resume(pair: Pair) -> None:
    body = {"model": "m", "messages": msgs()}
    assert pair.post(0, "cached", body).headers["x-cache"] == "MISS"
    pair.redis.stop()
    try:
        for i in (0, 1, 0, 1):
            r = pair.post(i, "cached", body)
            assert r.status_code == 200, r.text
            assert r.headers["x-cache"] == "MISS"
        assert len(pair.vendor.requests) == 5
        assert pair.log().count("the response cache answers every request from the vendor") == 2  # once each
        wait_for(lambda: pair.metrics(0)["aigw_cache_errors_total"] >= 1, 10)
        for i in (0, 1):
            cache = pair.health(i)["cache"]
            assert cache["shared"] is False and "Redis unreachable" in cache["detail"]
    finally:
        pair.redis.start()  # empty: nothing was persisted

    # Each gateway's probe finds Redis again by itself (each in its own second).
    for i in (0, 1):
        wait_for(lambda i=i: pair.health(i)["cache"]["shared"], 15, interval=0.1, what=f"gateway {i} using Redis again")
        assert pair.health(i)["cache"] == {"backend": "redis", "shared": True, "redis": pair.redis.url}
    assert pair.log().count("the response cache is shared again") == 2
    for stored_by, hit_by in ((0, 1), (1, 0)):
        again = {"model": "m", "messages": msgs()}
        assert pair.post(stored_by, "cached", again).headers["x-cache"] == "MISS"
        assert pair.post(hit_by, "cached", again).headers["x-cache"] == "HIT"


def test_a_supervisors_clear_reaches_its_workers(pair: Pair) -> None:
    """Two workers on the same Redis: the clear through the supervisor drops every entry once."""
    workers = GatewayProcess(pair.db, args=["--workers", "2", "--redis-url", pair.redis.url]).start(timeout=60)
    try:
        body = {"model": "m", "messages": msgs()}
        r = httpx.post(
            f"{workers.url}/shared/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {pair.keys['alice']}"},
            timeout=20,
        )
        assert r.headers["x-cache"] == "MISS"
        assert pair.post(0, "shared", body, "bob").headers["x-cache"] == "HIT"  # stored by a worker
        health = httpx.get(f"{workers.admin_url}/healthz", timeout=10).json()
        assert health["cache"]["backend"] == "redis" and health["cache"]["shared"] is True
        headers = {"Authorization": f"Bearer {workers.token}"}
        assert httpx.post(f"{workers.admin_url}/cache/clear", timeout=10).status_code == 401
        missing = httpx.post(f"{workers.admin_url}/cache/clear?api=nope", headers=headers, timeout=30)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_api_not_found"
        there = len(pair.cache_keys())
        got = httpx.post(f"{workers.admin_url}/cache/clear", headers=headers, timeout=30)
        assert got.status_code == 200 and got.json() == {"cleared": there}
        assert pair.cache_keys() == []
        assert pair.post(1, "shared", body, "bob").headers["x-cache"] == "MISS"
    finally:
        workers.stop()


def test_a_supervisors_clear_reaches_workers_caching_in_memory(pair: Pair) -> None:
    """Without Redis each worker holds its own cache: the supervisor clears every one."""
    workers = GatewayProcess(pair.db, env={"AIGW_REDIS_URL": ""}, args=["--workers", "2"]).start(timeout=60)
    try:
        body = {"model": "m", "messages": msgs()}

        def post() -> httpx.Response:
            return httpx.post(
                f"{workers.url}/shared/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {pair.keys['alice']}", "Connection": "close"},
                timeout=20,
            )

        def served_by_both() -> bool:
            assert post().status_code == 200
            health = httpx.get(f"{workers.admin_url}/healthz", timeout=10).json()
            return all((w.get("requests_total") or 0) >= 1 for w in health["workers"])

        # New connections land on either worker; each stored the answer on its first one.
        wait_for(served_by_both, 30, interval=0.05, what="both workers to answer")
        got = httpx.post(
            f"{workers.admin_url}/cache/clear", headers={"Authorization": f"Bearer {workers.token}"}, timeout=30
        )
        assert got.status_code == 200 and got.json() == {"cleared": 2}  # one entry in each worker
        assert post().headers["x-cache"] == "MISS"
    finally:
        workers.stop()
