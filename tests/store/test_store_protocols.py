"""Protocols in the store: a Model API's protocol and its routes, a Model Service's
protocol, ``default_max_tokens`` and ``responses``, the presets, export and import."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from store_helpers import accepted, base_config, refused

from store import config_io, repo
from store.db import Store, open_store
from store.errors import StoreError
from store.presets import PRESETS
from store.spec import ModelApiSpec, ModelServiceSpec


def test_api_protocols_default_routes() -> None:
    cfg = base_config()
    cfg.model_apis.append(ModelApiSpec("claude", protocol="anthropic", base_path="/claude", services=["s1"]))
    accepted(cfg)
    assert cfg.model_apis[0].routes == ["/v1/chat/completions"]
    assert cfg.model_apis[1].routes == ["/v1/messages"]


@pytest.mark.parametrize(
    ("protocol", "routes"),
    [
        ("openai", ["/v1/chat/completions", "/v1/completions", "/v1/responses"]),
        ("anthropic", ["/v1/messages", "/v1/messages/count_tokens"]),
    ],
)
def test_every_route_a_protocol_offers_is_accepted(protocol: str, routes: list[str]) -> None:
    cfg = base_config()
    cfg.model_apis[0].protocol = protocol
    cfg.model_apis[0].routes = routes
    accepted(cfg)


@pytest.mark.parametrize(("protocol", "route"), [("anthropic", "/v1/chat/completions"), ("openai", "/v1/messages")])
def test_a_route_the_protocol_does_not_offer_is_refused(protocol: str, route: str) -> None:
    cfg = base_config()
    cfg.model_apis[0].protocol = protocol
    cfg.model_apis[0].routes = [route]
    refused(cfg, "model_apis", "a1", "routes", f"not offered by protocol {protocol!r}")


def test_anthropic_api_offers_text_generation_only() -> None:
    cfg = base_config()
    cfg.model_apis[0].protocol = "anthropic"
    cfg.model_apis[0].scenario = "embeddings"
    refused(cfg, "model_apis", "a1", "scenario", "offers scenario text-generation only")


def test_unknown_protocol_is_refused() -> None:
    cfg = base_config()
    cfg.model_services[0].protocol = "gemini"
    refused(cfg, "model_services", "s1", "protocol", "openai, anthropic")


def test_apis_sharing_a_base_path_speak_one_protocol() -> None:
    cfg = base_config()
    cfg.model_apis.append(ModelApiSpec("claude", protocol="anthropic", base_path="/a1", services=["s1"]))
    refused(cfg, "model_apis", "claude", "base_path", "must speak one protocol")


def test_presets_fill_the_address_of_the_protocol() -> None:
    cfg = base_config()
    cfg.model_services += [
        ModelServiceSpec("hy", vendor="hunyuan", protocol="anthropic", keys=["k1"], default_model="m"),
        ModelServiceSpec("claude", vendor="anthropic", protocol="anthropic", keys=["k1"], default_model="m"),
    ]
    accepted(cfg)
    by_name = {s.name: s for s in cfg.model_services}
    assert by_name["hy"].address == "https://api.hunyuan.cloud.tencent.com/anthropic/v1"
    assert by_name["s2"].address == "https://api.hunyuan.cloud.tencent.com/v1"
    assert by_name["claude"].address == "https://api.anthropic.com/v1"
    assert PRESETS["hunyuan"].models_for("anthropic") == (
        "hunyuan-2.0-thinking-20251109",
        "hunyuan-2.0-instruct-20251111",
    )
    assert PRESETS["anthropic"].protocol == "anthropic" and PRESETS["anthropic"].models


def test_a_vendor_without_an_anthropic_address_needs_one() -> None:
    cfg = base_config()
    cfg.model_services.append(
        ModelServiceSpec("ds", vendor="deepseek", protocol="anthropic", keys=["k1"], default_model="m")
    )
    refused(cfg, "model_services", "ds", "address", "no preset Anthropic address")


@pytest.mark.parametrize("bad", [0, -1, 2.5, 10_000_001])
def test_default_max_tokens_is_a_positive_whole_number(bad: object) -> None:
    cfg = base_config()
    cfg.model_services[0].default_max_tokens = bad  # type: ignore[assignment]
    refused(cfg, "model_services", "s1", "default_max_tokens")


def test_responses_is_for_openai_services() -> None:
    cfg = base_config()
    cfg.model_services[0].protocol = "anthropic"
    cfg.model_services[0].responses = True
    refused(cfg, "model_services", "s1", "responses", "openai services only")


def test_responses_defaults_to_the_vendor() -> None:
    assert ModelServiceSpec("o", vendor="openai").serves_responses()
    assert not ModelServiceSpec("h", vendor="hunyuan").serves_responses()
    assert not ModelServiceSpec("o", vendor="openai", responses=False).serves_responses()
    assert ModelServiceSpec("c", vendor="custom", responses=True).serves_responses()


def test_export_round_trips_protocol_fields() -> None:
    cfg = base_config()
    s1 = cfg.model_services[0]
    s1.protocol, s1.default_max_tokens, s1.responses = "anthropic", 2048, False
    cfg.model_apis[0].protocol = "anthropic"
    cfg.model_apis[0].routes = ["/v1/messages", "/v1/messages/count_tokens"]
    accepted(cfg)
    text = config_io.dumps(cfg, include_secrets=True)
    doc = config_io.to_document(cfg)
    assert doc["model_services"][0]["default_max_tokens"] == 2048 and doc["model_services"][0]["responses"] is False
    # Unset: the vendor's default, left out so it stays the vendor's after an import.
    assert "responses" not in doc["model_services"][1] and "default_max_tokens" not in doc["model_services"][1]
    back = config_io.parse(text).config
    accepted(back)
    assert back.model_services == cfg.model_services
    assert back.model_apis == cfg.model_apis


def test_import_type_errors_name_the_field() -> None:
    text = '[[model_services]]\nname = "s"\nkeys = ["k"]\nresponses = "yes"\ndefault_max_tokens = "many"\n'
    with pytest.raises(StoreError) as info:
        config_io.parse(text)
    where = {e.field: e.message for e in info.value.errors}
    assert "true/false" in where["responses"] and "whole number" in where["default_max_tokens"]


def test_stored_and_loaded(store: Store) -> None:
    cfg = base_config()
    s1 = cfg.model_services[0]
    s1.protocol, s1.default_max_tokens, s1.responses = "anthropic", 999, None
    s2 = cfg.model_services[1]
    s2.responses = True
    with store.session() as s:
        repo.save(s, "model_keys", cfg.model_keys[0])
        repo.save(s, "model_keys", cfg.model_keys[1])
        repo.save(s, "model_services", s1)
        repo.save(s, "model_services", s2)
        loaded = repo.load_config(s)
    got = {x.name: x for x in loaded.model_services}
    assert (got["s1"].protocol, got["s1"].default_max_tokens, got["s1"].responses) == ("anthropic", 999, None)
    assert got["s2"].responses is True


def test_old_databases_get_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE request_records (id INTEGER PRIMARY KEY, ts FLOAT NOT NULL, request_id VARCHAR NOT NULL)")
    con.execute("INSERT INTO request_records (ts, request_id) VALUES (1.0, 'r1')")
    con.commit()
    con.close()
    st = open_store(str(db))
    st.dispose()
    con = sqlite3.connect(db)
    row = con.execute("SELECT protocol, vendor_protocol FROM request_records").fetchone()
    con.close()
    assert row == ("openai", "openai")
