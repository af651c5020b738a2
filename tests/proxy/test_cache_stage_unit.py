"""The response cache's wiring pieces: what a reload drops, the digest of an API's
definition every node puts in its keys, the settings in the snapshot, and the cache's
lines in ``/metrics``."""

from __future__ import annotations

import asyncio
import copy

from proxy.cache_stage import drop_changed
from proxy.metrics import Metrics
from proxy.response_cache import CacheStats, MemoryCache, answer_of, cache_key, config_digest
from proxy.routes import Api, compile_snapshot
from store.spec import Config, ModelApiSpec, ModelKeySpec, ModelServiceSpec, Price
from store.usage import RECORD_FIELDS, record_row


def config() -> Config:
    return Config(
        model_keys=[ModelKeySpec("k", "sk-literal-123")],
        model_services=[
            ModelServiceSpec(
                "s", address="http://v.example/v1", keys=["k"], default_model="m", prices={"m": Price(1, 2)}
            )
        ],
        model_apis=[
            ModelApiSpec("a", routes=["/v1/chat/completions"], base_path="/a", services=["s"], cache_ttl_s=60),
            ModelApiSpec("b", routes=["/v1/chat/completions"], base_path="/b", services=["s"], cache_ttl_s=60),
            ModelApiSpec("off", routes=["/v1/chat/completions"], base_path="/off", services=["s"]),
        ],
    )


def apis(cfg: Config) -> dict[str, Api]:
    return compile_snapshot(cfg, [], 1).apis


def test_the_snapshot_carries_the_cache_settings() -> None:
    cfg = config()
    cfg.model_apis[1].cache_key, cfg.model_apis[1].cache_scope = "last_user_message", "api"
    got = apis(cfg)
    assert (got["a"].cache_ttl_s, got["a"].cache_key, got["a"].cache_scope) == (60.0, "full", "consumer")
    assert (got["b"].cache_key, got["b"].cache_scope) == ("last_user_message", "api")
    assert got["off"].cache_ttl_s == 0 and got["a"].routes == ("/v1/chat/completions",)


def _filled() -> MemoryCache:
    cache = MemoryCache(1 << 20)
    entry = answer_of(200, [], b"{}", prompt_tokens=1, completion_tokens=1, ttl_s=60, now=1e12)
    assert entry is not None
    for api in ("a", "b"):
        for i in range(2):
            asyncio.run(cache.put(f"{api}{i}", api, entry))
    return cache


def _drop(cache: MemoryCache, old: Config, new: Config) -> int:
    return asyncio.run(drop_changed(cache, apis(old), apis(new)))


def test_an_unchanged_configuration_keeps_every_entry() -> None:
    cache = _filled()
    assert _drop(cache, config(), config()) == 0
    assert asyncio.run(cache.stats()).entries == 4


def test_a_changed_service_route_or_setting_drops_that_apis_entries() -> None:
    changes = [
        (lambda c: setattr(c.model_services[0], "default_model", "m2"), 4),  # both APIs use the service
        (lambda c: setattr(c.model_apis[0], "routes", ["/v1/completions"]), 2),
        (lambda c: setattr(c.model_apis[0], "cache_scope", "api"), 2),
        (lambda c: setattr(c.model_apis[0], "cache_ttl_s", 0), 2),
    ]
    for change, expected in changes:
        cache = _filled()
        new = copy.deepcopy(config())
        change(new)
        assert _drop(cache, config(), new) == expected
        assert asyncio.run(cache.stats()).entries == 4 - expected


def test_a_deleted_api_loses_its_entries_a_description_keeps_them() -> None:
    cache = _filled()
    new = config()
    new.model_apis = [a for a in new.model_apis if a.name != "b"]
    new.model_apis[0].description = "words only"
    assert _drop(cache, config(), new) == 2
    assert asyncio.run(cache.get("a0")) is not None and asyncio.run(cache.get("b0")) is None


TOKEN = "admin-token-shared-by-every-node"


def _digest(cfg: Config, api: str = "a", secret: str = TOKEN) -> str:
    return config_digest(apis(cfg)[api], secret)


def test_every_node_that_loaded_a_definition_keys_it_alike() -> None:
    """Two snapshots compiled apart (two nodes) agree; any change of the API's own makes another key."""
    assert _digest(config()) == _digest(config())
    assert _digest(config(), "a") != _digest(config(), "b")
    words = config()
    words.model_apis[0].description = "words only"
    assert _digest(words) == _digest(config())
    changes = [
        lambda c: setattr(c.model_services[0], "default_model", "m2"),
        lambda c: setattr(c.model_services[0], "prices", {"m": Price(1, 3)}),
        lambda c: setattr(c.model_keys[0], "credential", "sk-literal-456"),
        lambda c: setattr(c.model_apis[0], "routes", ["/v1/completions"]),
        lambda c: setattr(c.model_apis[0], "cache_key", "last_user_message"),
        lambda c: setattr(c.model_apis[0], "cache_ttl_s", 61),
    ]
    for change in changes:
        new = copy.deepcopy(config())
        change(new)
        assert _digest(new) != _digest(config())


def test_the_digest_is_keyed_and_shows_nothing_of_the_definition() -> None:
    d = _digest(config())
    assert d != _digest(config(), secret="another store's token")
    assert len(d) == 32 and "sk-literal" not in d and "v.example" not in d


def test_a_node_that_reloaded_and_one_that_did_not_never_share_an_answer() -> None:
    """Two nodes on one shared store, one still on the old definition: each finds only its own."""
    new = copy.deepcopy(config())
    new.model_services[0].address = "http://elsewhere.example/v1"
    shared = MemoryCache(1 << 20)
    made_new = answer_of(200, [], b'{"new":1}', prompt_tokens=1, completion_tokens=1, ttl_s=60, now=1e12)
    made_old = answer_of(200, [], b'{"old":1}', prompt_tokens=1, completion_tokens=1, ttl_s=60, now=1e12)
    assert made_new is not None and made_old is not None

    def key(cfg: Config) -> str:
        k = cache_key(
            api="a", scope="api", consumer="", model="m", mode="full", body={"m": 1}, stream=False, config=_digest(cfg)
        )
        assert k is not None
        return k

    asyncio.run(shared.put(key(new), "a", made_new))  # stored by the node that loaded the change
    assert asyncio.run(shared.get(key(config()), "a")) is None  # the other one, not yet: a miss
    asyncio.run(shared.put(key(config()), "a", made_old))
    assert asyncio.run(shared.get(key(new), "a")) is made_new  # its old answer is never served anew
    assert asyncio.run(shared.get(key(config()), "a")) is made_old


def _row(**fields: object) -> tuple[object, ...]:
    base: dict[str, object] = {"ts": 0.0, "request_id": "r", "api": "a", "consumer": "c", "status": 200}
    return record_row({**base, **fields})


def test_metrics_count_hits_apart_from_tokens_used() -> None:
    m = Metrics()
    m.observe(_row(cache="miss", prompt_tokens=3, completion_tokens=2))
    m.observe(_row(cache="hit", prompt_tokens=3, completion_tokens=2))
    m.observe(_row(prompt_tokens=1))
    text = m.render(revision=1, in_flight=0, cache=CacheStats(1, 1, 2, 900, 1000, 3, 0, 0))
    assert 'aigw_cache_hits_total{api="a"} 1' in text and 'aigw_cache_misses_total{api="a"} 1' in text
    assert 'aigw_tokens_total{api="a",consumer="c",type="prompt"} 4' in text  # the hit's are not used again
    assert "aigw_cache_bytes 900" in text and "aigw_cache_entries 2" in text
    assert "aigw_cache_evictions_total 3" in text and "aigw_cache_max_bytes 1000" in text
    assert "aigw_cache_errors_total 0" in text
    assert 'aigw_request_duration_seconds_count{api="a"} 3' in text
    assert "cache" in RECORD_FIELDS and "cost_saved" in RECORD_FIELDS
