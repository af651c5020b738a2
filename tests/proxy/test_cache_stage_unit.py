"""The response cache's wiring pieces: what a reload drops, the settings in the snapshot,
and the cache's lines in ``/metrics``."""

from __future__ import annotations

import asyncio
import copy

from proxy.cache_stage import drop_changed
from proxy.metrics import Metrics
from proxy.response_cache import CacheStats, MemoryCache, answer_of
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
    assert 'aigw_request_duration_seconds_count{api="a"} 3' in text
    assert "cache" in RECORD_FIELDS and "cost_saved" in RECORD_FIELDS
