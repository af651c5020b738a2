"""The response cache's settings (a model API's ``cache_*``, ``[gateway] cache_max_mb``) and
the records of hits: rules, export and import, storage, quota use and usage totals."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from store_helpers import accepted, base_config, refused

from store import config_io, repo, usage
from store.db import Store, open_store
from store.spec import ModelApiSpec
from store.usage import insert_records


def test_defaults_keep_the_cache_off() -> None:
    a = ModelApiSpec("a")
    assert (a.cache_ttl_s, a.cache_key, a.cache_scope) == (0, "full", "consumer")
    assert base_config().gateway.cache_max_mb == 64


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("cache_ttl_s", -1, "at least 0"),
        ("cache_ttl_s", 30 * 24 * 3600 + 1, "at most 2.592e+06"),
        ("cache_ttl_s", 1.5, "not a whole number"),
        ("cache_key", "body", "'body' is not one of: full, last_user_message"),
        ("cache_scope", "global", "'global' is not one of: consumer, api"),
    ],
)
def test_api_cache_fields_refused_in_one_line(field: str, value: object, text: str) -> None:
    cfg = base_config()
    setattr(cfg.model_apis[0], field, value)
    err = refused(cfg, "model_apis", "a1", field, text)
    assert str(err).startswith(f"model_apis[a1].{field}: ") and "\n" not in str(err)


@pytest.mark.parametrize(("value", "text"), [(-1, "at least 0"), (70000, "at most 65536"), (True, "not a number")])
def test_cache_max_mb_refused(value: object, text: str) -> None:
    cfg = base_config()
    cfg.gateway.cache_max_mb = value  # type: ignore[assignment]
    refused(cfg, "gateway", "", "cache_max_mb", text)


def test_cache_settings_accepted_and_round_trip() -> None:
    cfg = base_config()
    a = cfg.model_apis[0]
    a.cache_ttl_s, a.cache_key, a.cache_scope = 3600, "last_user_message", "api"
    cfg.gateway.cache_max_mb = 0
    text = config_io.dumps(accepted(cfg))
    assert "cache_ttl_s = 3600" in text and 'cache_key = "last_user_message"' in text
    assert 'cache_scope = "api"' in text and "cache_max_mb = 0" in text
    back = config_io.parse(text).config
    b = back.model_apis[0]
    assert (b.cache_ttl_s, b.cache_key, b.cache_scope, back.gateway.cache_max_mb) == (
        3600,
        "last_user_message",
        "api",
        0,
    )


def test_default_cache_settings_are_left_out_of_an_export() -> None:
    doc = config_io.to_document(accepted(base_config()))
    assert not any(k.startswith("cache_") for k in doc["model_apis"][0])
    assert doc["gateway"]["cache_max_mb"] == 64


def test_toml_types_checked() -> None:
    text = '[[model_apis]]\nname = "a"\nbase_path = "/a"\nservices = ["s"]\ncache_ttl_s = "60"\n'
    with pytest.raises(Exception, match=r"model_apis\[a\]\.cache_ttl_s: must be a whole number"):
        config_io.parse(text)


def test_stored_and_loaded(store: Store) -> None:
    cfg = base_config()
    a = cfg.model_apis[0]
    a.cache_ttl_s, a.cache_key, a.cache_scope = 60, "last_user_message", "api"
    cfg.gateway.cache_max_mb = 8
    with store.session() as s:
        repo.apply_config(s, cfg, has_gateway=True, prune=False, dry_run=False)
        got = repo.load_config(s)
    b = got.model_apis[0]
    assert (b.cache_ttl_s, b.cache_key, b.cache_scope, got.gateway.cache_max_mb) == (60, "last_user_message", "api", 8)
    got.gateway.cache_max_mb = 16
    with store.session() as s:
        repo.save_gateway(s, got.gateway)
        assert repo.load_config(s).gateway.cache_max_mb == 16


def _records(now: float) -> list[dict[str, object]]:
    base = {"request_id": "r", "consumer": "c1", "api": "a1", "model": "m1", "status": 200}
    return [
        {**base, "ts": now, "service": "s1", "prompt_tokens": 10, "completion_tokens": 5, "cost": 0.5, "cache": "miss"},
        {
            **base,
            "ts": now,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "cost": 0.0,
            "cache": "hit",
            "cost_saved": 0.5,
        },
        {**base, "ts": now, "status": 429, "error": "rate limited"},  # refused: no service, no hit
    ]


def test_quota_use_counts_a_hit_as_a_request_and_charges_none_of_its_tokens(store: Store) -> None:
    now = time.time()
    with store.session() as s:
        insert_records(s, _records(now))
        since = now - 60
        assert usage.quota_used(s, "c1", "requests", since) == 2
        assert usage.quota_used(s, "c1", "tokens", since) == 15
        assert usage.quota_used(s, "c1", "cost", since) == pytest.approx(0.5)


def test_totals_count_saved_tokens_and_cost_apart(store: Store) -> None:
    with store.session() as s:
        insert_records(s, _records(time.time()))
        (row,) = usage.totals(s, "consumer")
    assert row["requests"] == 3 and row["cache_hits"] == 1
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (10, 5, 15)
    assert row["saved_tokens"] == 15
    assert row["cost"] == pytest.approx(0.5) and row["cost_saved"] == pytest.approx(0.5)


def test_an_older_database_gets_the_cache_columns_with_their_defaults(tmp_path: Path) -> None:
    db = tmp_path / "data" / "aigw.db"
    st = open_store(str(db))
    with st.session() as s:
        repo.apply_config(s, base_config(), has_gateway=True, prune=False, dry_run=False)
        insert_records(s, [{"ts": time.time(), "request_id": "old", "consumer": "c1", "status": 200}])
    st.dispose()
    con = sqlite3.connect(db)  # what an aigw without the response cache left
    for table, column in (
        ("request_records", "cache"),
        ("request_records", "cost_saved"),
        ("model_apis", "cache_ttl_s"),
        ("model_apis", "cache_key"),
        ("model_apis", "cache_scope"),
        ("gateway_settings", "cache_max_mb"),
    ):
        con.execute(f'ALTER TABLE {table} DROP COLUMN "{column}"')
    con.commit()
    con.close()
    st = open_store(str(db))
    try:
        with st.session() as s:
            cfg = repo.load_config(s)
            (rec,) = usage.recent(s, 5)
        a = cfg.model_apis[0]
        assert (a.cache_ttl_s, a.cache_key, a.cache_scope, cfg.gateway.cache_max_mb) == (0, "full", "consumer", 64)
        assert (rec.cache, rec.cost_saved) == ("", 0.0)
    finally:
        st.dispose()
