"""The resilience fields: a key's ``max_concurrency``; a service's queue, breaker, probe and
first-byte settings — their defaults, rules, storage, and way through export and import."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from store_helpers import accepted, base_config, refused

from store import config_io, repo, usage
from store.db import Store, open_store
from store.spec import Config, ModelKeySpec, ModelServiceSpec
from store.usage import insert_records
from store.validation import validate_config
from tui.cli import main as aigw_main


def test_defaults_keep_todays_behaviour() -> None:
    cfg = accepted(base_config())
    k, s = cfg.model_keys[0], cfg.model_services[0]
    assert k.max_concurrency == 0
    assert (s.queue_timeout_s, s.circuit_failures, s.circuit_cooldown_s) == (10.0, 5, 30.0)
    assert (s.probe_interval_s, s.first_byte_timeout_s) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("queue_timeout_s", -1.0, "at least 0"),
        ("queue_timeout_s", 10_000.0, "at most 3600"),
        ("circuit_failures", -1, "at least 0"),
        ("circuit_failures", 2.5, "not a whole number"),
        ("circuit_cooldown_s", 0.0, "greater than 0"),
        ("probe_interval_s", -0.5, "at least 0"),
        ("first_byte_timeout_s", -1.0, "at least 0"),
        ("first_byte_timeout_s", 500.0, "at most timeout_s (120)"),
    ],
)
def test_service_fields_refused_with_one_line_naming_the_field(field: str, value: object, text: str) -> None:
    cfg = base_config()
    setattr(cfg.model_services[0], field, value)
    err = refused(cfg, "model_services", "s1", field, text)
    assert str(err).startswith(f"model_services[s1].{field}: ") and "\n" not in str(err)


@pytest.mark.parametrize(("value", "text"), [(-1, "at least 0"), (1.5, "not a whole number"), (10**9, "at most")])
def test_max_concurrency_refused(value: object, text: str) -> None:
    cfg = base_config()
    cfg.model_keys[0].max_concurrency = value  # type: ignore[assignment]
    name = cfg.model_keys[0].name
    err = refused(cfg, "model_keys", name, "max_concurrency", text)
    assert str(err).startswith(f"model_keys[{name}].max_concurrency: ")


def _tuned(cfg: Config) -> Config:
    cfg.model_keys[0].max_concurrency = 5
    s = cfg.model_services[0]
    s.queue_timeout_s, s.circuit_failures, s.circuit_cooldown_s = 0.0, 0, 12.5
    s.probe_interval_s, s.first_byte_timeout_s = 15.0, 8.0
    return cfg


def test_round_trip_through_export_and_import() -> None:
    cfg = _tuned(base_config())
    validate_config(cfg)
    text = config_io.dumps(cfg)
    for line in ("max_concurrency = 5", "queue_timeout_s = 0.0", "circuit_failures = 0", "first_byte_timeout_s = 8.0"):
        assert line in text
    back = config_io.parse(text).config
    s = back.model_services[0]
    assert back.model_keys[0].max_concurrency == 5
    assert (s.queue_timeout_s, s.circuit_failures, s.circuit_cooldown_s, s.probe_interval_s) == (0.0, 0, 12.5, 15.0)
    assert s.first_byte_timeout_s == 8.0


def test_a_wrong_type_in_toml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[model_keys]]\nname = "k"\ncredential = "sk-x"\nmax_concurrency = "many"\n')
    assert aigw_main(["--db", str(tmp_path / "aigw.db"), "import", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model_keys[k].max_concurrency: must be a whole number" in err


def test_stored_and_loaded(store: Store) -> None:
    cfg = _tuned(base_config())
    with store.session() as s:
        repo.save(s, "model_keys", cfg.model_keys[0])
        repo.save(s, "model_services", cfg.model_services[0])
        loaded = repo.load_config(s)
    key = repo.find(loaded, "model_keys", cfg.model_keys[0].name)
    got = repo.find(loaded, "model_services", "s1")
    assert key.max_concurrency == 5
    assert (got.queue_timeout_s, got.circuit_failures, got.circuit_cooldown_s) == (0.0, 0, 12.5)
    assert (got.probe_interval_s, got.first_byte_timeout_s) == (15.0, 8.0)


def test_an_older_database_gets_the_columns_with_their_defaults(tmp_path: Path) -> None:
    db = tmp_path / "data" / "aigw.db"
    st = open_store(str(db))
    with st.session() as s:
        repo.apply_config(
            s,
            Config(
                model_keys=[ModelKeySpec(name="k", credential="sk-x")],
                model_services=[ModelServiceSpec(name="s", vendor="openai", keys=["k"], default_model="m")],
            ),
            has_gateway=False,
            prune=False,
            dry_run=False,
        )
        s.commit()
        insert_records(s, [{"ts": 1.0, "request_id": "old"}])
    st.dispose()
    con = sqlite3.connect(db)
    con.execute('ALTER TABLE model_keys DROP COLUMN "max_concurrency"')
    for col in (
        "queue_timeout_s",
        "circuit_failures",
        "circuit_cooldown_s",
        "probe_interval_s",
        "first_byte_timeout_s",
    ):
        con.execute(f'ALTER TABLE model_services DROP COLUMN "{col}"')
    con.execute('ALTER TABLE request_records DROP COLUMN "attempts"')
    con.commit()
    con.close()
    st = open_store(str(db))
    try:
        with st.session() as s:
            cfg = repo.load_config(s)
            (old,) = usage.recent(s, 5)
        assert cfg.model_keys[0].max_concurrency == 0
        svc = cfg.model_services[0]
        assert (svc.queue_timeout_s, svc.circuit_failures, svc.circuit_cooldown_s) == (10.0, 5, 30.0)
        assert old.request_id == "old" and old.attempts == []
    finally:
        st.dispose()
