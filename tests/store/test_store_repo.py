"""store.repo and store.db on real SQLite: references, renames, keys, the revision, files."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import Session
from store_helpers import base_config

from store import repo
from store.db import Store, open_store
from store.errors import NotFoundError, ReferencedError, StoreError
from store.keys import KEY_PREFIX, hash_key
from store.models import SCHEMA_VERSION
from store.spec import (
    ConsumerGroupSpec,
    ConsumerSpec,
    GatewaySpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
)


@pytest.fixture
def session(store: Store) -> Iterator[Session]:
    with store.session() as s:
        yield s


@pytest.fixture(scope="module")
def _filled_store_file(tmp_path_factory: pytest.TempPathFactory, _empty_store_file: Path) -> Path:
    """The base configuration saved entity by entity (the console's path), once per module:
    saving it costs ~100 ms, copying the file ~1."""
    path = tmp_path_factory.mktemp("filled") / "aigw.db"
    shutil.copyfile(_empty_store_file, path)
    st = open_store(str(path))
    with st.session() as s:
        cfg = base_config()
        for table in ("model_keys", "model_services", "model_apis", "consumers", "consumer_groups"):
            for spec in getattr(cfg, table):
                repo.save(s, table, spec)
    st.dispose()  # the last connection's close checkpoints the WAL into the file
    return path


@pytest.fixture
def store_template(request: pytest.FixtureRequest, _empty_store_file: Path) -> Path:
    """A test that asks for ``filled`` gets a copy of the filled store, the others an empty one."""
    if "filled" in request.fixturenames:
        return Path(request.getfixturevalue("_filled_store_file"))
    return _empty_store_file


@pytest.fixture
def filled(session: Session) -> Session:
    """A session on the base configuration (the store started as ``_filled_store_file``)."""
    return session


def db_bytes(store: Store) -> bytes:
    """Every byte SQLite keeps for this store: the file, the WAL and the shared memory."""
    path = store.location.sqlite_path
    assert path is not None
    out = b""
    for suffix in ("", "-wal", "-shm", "-journal"):
        f = Path(str(path) + suffix)
        if f.exists():
            out += f.read_bytes()
    return out


def checkpoint(path: Path) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


# ---------------------------------------------------------------- save / load


def test_save_and_load_round_trip(filled: Session) -> None:
    cfg = repo.load_config(filled)
    assert [k.name for k in cfg.model_keys] == ["k1", "k2"]
    s2 = repo.find(cfg, "model_services", "s2")
    assert s2.keys == ["k2", "k1"]  # order kept
    assert s2.address.startswith("https://api.hunyuan")  # preset filled
    assert repo.find(cfg, "model_services", "s1").prices["m1"].output == 2.0
    assert repo.find(cfg, "consumer_groups", "g1").model_apis == ["a1"]


def test_save_refuses_duplicate_and_invalid(filled: Session) -> None:
    rev = repo.get_revision(filled)
    with pytest.raises(StoreError, match=r"model_keys\[k1\]\.name: .*already exists"):
        repo.save(filled, "model_keys", ModelKeySpec("k1", "x-other"))
    with pytest.raises(StoreError) as info:
        repo.save(
            filled, "model_services", ModelServiceSpec("s9", address="http://h/v1", keys=["ghost"], default_model="m")
        )
    assert (info.value.errors[0].table, info.value.errors[0].entry, info.value.errors[0].field) == (
        "model_services",
        "s9",
        "keys",
    )
    assert repo.get_revision(filled) == rev
    assert repo.find(repo.load_config(filled), "model_services", "s9") is None


def test_update_missing_entity(filled: Session) -> None:
    with pytest.raises(NotFoundError):
        repo.save(filled, "model_keys", ModelKeySpec("zz", "x-abc"), original="zz")
    with pytest.raises(NotFoundError):
        repo.delete_entity(filled, "consumers", "ghost")


def test_update_keeps_credential_when_none(filled: Session) -> None:
    repo.save(filled, "model_keys", ModelKeySpec("k1", None, description="d"), original="k1")
    k1 = repo.get(filled, "model_keys", "k1")
    assert (k1.credential, k1.description) == ("sk-vendor-literal-1", "d")


# ---------------------------------------------------------------- deletion refusals

REFS = [
    # (table, name, who uses it, how to drop the reference)
    ("model_keys", "k1", "model service 's1'", None),
    ("model_services", "s1", "model API 'a1'", None),
    ("model_apis", "a1", "consumer group 'g1'", None),
    ("consumers", "c1", "consumer group 'g1'", None),
]


@pytest.mark.parametrize(("table", "name", "who", "_"), REFS)
def test_delete_referenced_refused(filled: Session, table: str, name: str, who: str, _: None) -> None:
    before = repo.get_revision(filled)
    with pytest.raises(ReferencedError) as info:
        repo.delete_entity(filled, table, name)
    assert who in str(info.value)
    assert f"{table}[{name}]" in str(info.value)
    assert repo.find(repo.load_config(filled), table, name) is not None
    assert repo.get_revision(filled) == before


def test_delete_key_names_every_service(filled: Session) -> None:
    with pytest.raises(ReferencedError) as info:
        repo.delete_entity(filled, "model_keys", "k1")
    assert "'s1'" in str(info.value) and "'s2'" in str(info.value)


def test_delete_after_dropping_references(filled: Session) -> None:
    s = filled
    g = repo.get(s, "consumer_groups", "g1")
    g.consumers, g.model_apis = [], []
    repo.save(s, "consumer_groups", g, original="g1")
    repo.delete_entity(s, "consumers", "c1")
    repo.delete_entity(s, "model_apis", "a1")
    repo.delete_entity(s, "model_services", "s1")
    with pytest.raises(ReferencedError, match="'s2'"):
        repo.delete_entity(s, "model_keys", "k1")
    s2 = repo.get(s, "model_services", "s2")
    s2.keys = ["k2"]
    repo.save(s, "model_services", s2, original="s2")
    repo.delete_entity(s, "model_keys", "k1")
    repo.delete_entity(s, "consumer_groups", "g1")
    cfg = repo.load_config(s)
    assert [k.name for k in cfg.model_keys] == ["k2"]
    assert [x.name for x in cfg.model_services] == ["s2"]
    assert cfg.model_apis == [] and cfg.consumers == [] and cfg.consumer_groups == []


def test_delete_service_used_only_as_fallback_refused(filled: Session) -> None:
    repo.save(filled, "model_apis", ModelApiSpec("a2", base_path="/a2", services=["s1"], fallback_services=["s2"]))
    with pytest.raises(ReferencedError, match="model API 'a2'"):
        repo.delete_entity(filled, "model_services", "s2")
    a2 = repo.get(filled, "model_apis", "a2")
    a2.fallback_services = []
    repo.save(filled, "model_apis", a2, original="a2")
    repo.delete_entity(filled, "model_services", "s2")


def test_delete_consumer_removes_its_keys(filled: Session) -> None:
    repo.save(filled, "consumers", ConsumerSpec("lonely"))
    key = repo.create_consumer_key(filled, "lonely")
    repo.delete_entity(filled, "consumers", "lonely")
    assert repo.consumer_for_key(filled, key) is None
    assert all(n != "lonely" for _, n in repo.all_consumer_keys(filled))


# ---------------------------------------------------------------- renames


def test_renames_keep_references(filled: Session) -> None:
    s = filled
    key = repo.create_consumer_key(s, "c1")
    repo.save(s, "model_apis", ModelApiSpec("a2", base_path="/a2", services=["s2"], fallback_services=["s1"]))
    k1 = repo.get(s, "model_keys", "k1")
    k1.name = "key-one"
    repo.save(s, "model_keys", k1, original="k1")
    s1 = repo.get(s, "model_services", "s1")
    s1.name = "svc-one"
    repo.save(s, "model_services", s1, original="s1")
    a1 = repo.get(s, "model_apis", "a1")
    a1.name = "api-one"
    repo.save(s, "model_apis", a1, original="a1")
    c1 = repo.get(s, "consumers", "c1")
    c1.name = "app-one"
    repo.save(s, "consumers", c1, original="c1")

    cfg = repo.load_config(s)
    assert repo.find(cfg, "model_services", "svc-one").keys == ["key-one"]
    assert repo.find(cfg, "model_services", "s2").keys == ["k2", "key-one"]
    assert repo.find(cfg, "model_apis", "api-one").services == ["svc-one"]
    assert repo.find(cfg, "model_apis", "a2").fallback_services == ["svc-one"]
    g1 = repo.find(cfg, "consumer_groups", "g1")
    assert (g1.consumers, g1.model_apis) == (["app-one"], ["api-one"])
    assert repo.consumer_for_key(s, key) == "app-one"
    assert repo.find(cfg, "model_keys", "key-one").credential == "sk-vendor-literal-1"
    # old names are gone; the renamed ones are still protected
    assert repo.find(cfg, "model_keys", "k1") is None
    with pytest.raises(ReferencedError, match="consumer group 'g1'"):
        repo.delete_entity(s, "consumers", "app-one")


def test_rename_onto_existing_name_refused(filled: Session) -> None:
    k1 = repo.get(filled, "model_keys", "k1")
    k1.name = "k2"
    with pytest.raises(StoreError, match="already exists"):
        repo.save(filled, "model_keys", k1, original="k1")


# ---------------------------------------------------------------- consumer keys

KEY_RE = re.compile(r"^sk-aigw-[A-Za-z0-9_-]{32,}$")


def test_generated_key_shape_and_storage(store: Store, filled: Session) -> None:
    keys = [repo.create_consumer_key(filled, "c1") for _ in range(3)]
    assert len(set(keys)) == 3
    for k in keys:
        assert KEY_RE.match(k), k
        assert k.startswith(KEY_PREFIX)
    rows = repo.list_consumer_keys(filled, "c1")
    assert sorted(r.key_hash for r in rows) == sorted(hash_key(k) for k in keys)
    for r in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", r.key_hash)
        assert len(r.prefix) <= 16
        assert r.prefix.startswith("sk-aigw-")
        assert not any(k in r.prefix.rstrip("…") and len(r.prefix.rstrip("…")) >= len(k) for k in keys)
    for k in keys:
        assert repo.consumer_for_key(filled, k) == "c1"
    assert repo.consumer_for_key(filled, keys[0] + "x") is None
    assert repo.consumer_for_key(filled, "sk-aigw-" + "A" * 43) is None
    assert {(hash_key(k), "c1") for k in keys} <= set(repo.all_consumer_keys(filled))


def test_plain_key_never_in_database_file(store: Store, filled: Session) -> None:
    key = repo.create_consumer_key(filled, "c1")
    secret_part = key.removeprefix(KEY_PREFIX).encode()
    assert secret_part not in db_bytes(store)  # in the WAL, before a checkpoint
    filled.close()
    store.dispose()
    assert store.location.sqlite_path is not None
    checkpoint(store.location.sqlite_path)
    data = db_bytes(store)
    assert hash_key(key).encode() in data  # the test reads the right file
    assert key.encode() not in data
    assert secret_part not in data
    assert secret_part[:24] not in data


def test_revoke_key(filled: Session) -> None:
    key = repo.create_consumer_key(filled, "c1")
    other = repo.create_consumer_key(filled, "c1")
    row = next(r for r in repo.list_consumer_keys(filled, "c1") if r.key_hash == hash_key(key))
    assert row.id is not None
    repo.revoke_consumer_key(filled, "c1", row.id)
    assert repo.consumer_for_key(filled, key) is None
    assert repo.consumer_for_key(filled, other) == "c1"
    with pytest.raises(NotFoundError):
        repo.revoke_consumer_key(filled, "c1", row.id)
    repo.save(filled, "consumers", ConsumerSpec("c2"))
    other_row = repo.list_consumer_keys(filled, "c1")[0]
    assert other_row.id is not None
    with pytest.raises(NotFoundError):  # a key of another consumer
        repo.revoke_consumer_key(filled, "c2", other_row.id)


def test_save_consumer_keeps_keys_unless_told(filled: Session) -> None:
    key = repo.create_consumer_key(filled, "c1")
    c1 = repo.get(filled, "consumers", "c1")
    c1.api_key_hashes, c1.quota = None, 5
    repo.save(filled, "consumers", c1, original="c1")
    assert repo.consumer_for_key(filled, key) == "c1"


def test_save_consumer_with_plain_keys_adds_them(filled: Session) -> None:
    made = repo.create_consumer_key(filled, "c1")
    extra = "sk-aigw-" + "E" * 43
    c1 = repo.get(filled, "consumers", "c1")
    c1.api_key_hashes, c1.api_keys = None, [extra]
    repo.save(filled, "consumers", c1, original="c1")
    assert repo.consumer_for_key(filled, made) == "c1"
    assert repo.consumer_for_key(filled, extra) == "c1"
    # an explicit list of digests is the whole set: the generated key goes
    c1 = repo.get(filled, "consumers", "c1")
    c1.api_key_hashes, c1.api_keys = ["sha256:" + hash_key(extra)], []
    repo.save(filled, "consumers", c1, original="c1")
    assert repo.consumer_for_key(filled, made) is None
    assert repo.consumer_for_key(filled, extra) == "c1"


# ---------------------------------------------------------------- the revision


def test_every_change_bumps_revision(filled: Session) -> None:
    s = filled
    seen = [repo.get_revision(s)]

    def bumped() -> None:
        now = repo.get_revision(s)
        assert now == seen[-1] + 1, f"revision {seen[-1]} -> {now}"
        seen.append(now)

    repo.save(s, "model_keys", ModelKeySpec("k3", "env:K3"))
    bumped()
    repo.save(s, "model_keys", ModelKeySpec("k3", "env:K3B"), original="k3")
    bumped()
    repo.save(s, "model_keys", ModelKeySpec("k4", "env:K3B"), original="k3")  # rename
    bumped()
    repo.delete_entity(s, "model_keys", "k4")
    bumped()
    key = repo.create_consumer_key(s, "c1")
    bumped()
    kid = repo.list_consumer_keys(s, "c1")[0].id
    assert kid is not None and key
    repo.revoke_consumer_key(s, "c1", kid)
    bumped()
    repo.save_gateway(s, GatewaySpec(listen="127.0.0.1:9999", public_url="https://gw.example.com"))
    bumped()
    repo.save(s, "consumer_groups", ConsumerGroupSpec("g2", consumers=["c1"]))
    bumped()

    # refusals and console state do not bump
    with pytest.raises(StoreError):
        repo.save(s, "model_keys", ModelKeySpec("bad", ""))
    with pytest.raises(ReferencedError):
        repo.delete_entity(s, "consumers", "c1")
    with pytest.raises(StoreError):
        repo.save_gateway(s, GatewaySpec(listen="nope"))
    repo.set_meta(s, "quickstart", "done")
    assert repo.get_meta(s, "quickstart") == "done"
    assert repo.get_revision(s) == seen[-1]


def test_revision_visible_to_another_connection(store: Store, filled: Session, db_path: Path) -> None:
    other = open_store(str(db_path))
    try:
        with other.session() as s2:
            before = repo.get_revision(s2)
        repo.save(filled, "model_keys", ModelKeySpec("k9", "env:K9"))
        with other.session() as s2:
            assert repo.get_revision(s2) == before + 1
    finally:
        other.dispose()


def test_save_gateway_normalises_and_loads(filled: Session) -> None:
    gw = repo.save_gateway(filled, GatewaySpec("0.0.0.0:8000", "http://gw.local:8000/", "127.0.0.1:8001"))
    assert gw.public_url == "http://gw.local:8000"
    assert repo.load_config(filled).gateway == GatewaySpec("0.0.0.0:8000", "http://gw.local:8000", "127.0.0.1:8001")


# ---------------------------------------------------------------- files, modes, locations


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0 so that only the store's own chmod/mode makes files private."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_store_is_private(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "fresh" / "aigw.db"
    st = open_store(str(db))
    try:
        with st.session() as s:
            repo.save(s, "model_keys", ModelKeySpec("k", "env:K"))
        assert mode(db.parent) == 0o700
        assert mode(db) == 0o600
        extras = [Path(str(db) + x) for x in ("-wal", "-shm")]
        assert any(p.exists() for p in extras)  # WAL mode
        for p in extras:
            if p.exists():
                assert mode(p) == 0o600, p
    finally:
        st.dispose()


def test_existing_db_file_is_tightened(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "aigw.db"
    db.touch(mode=0o666)
    st = open_store(str(db))
    st.dispose()
    assert mode(db) == 0o600


def test_wal_busy_timeout_foreign_keys(store: Store) -> None:
    with store.engine.connect() as con:
        assert con.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert con.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert con.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_schema_version_row(store: Store, db_path: Path) -> None:
    store.dispose()
    con = sqlite3.connect(db_path)
    try:
        rows = dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()
    assert rows["schema_version"] == str(SCHEMA_VERSION)
    assert rows["revision"] == "0"


def test_newer_schema_refused(store: Store, db_path: Path) -> None:
    store.dispose()
    con = sqlite3.connect(db_path)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(StoreError) as info:
        open_store(str(db_path))
    text = str(info.value)
    assert "schema version" in text and str(SCHEMA_VERSION + 1) in text and "\n" not in text


def test_reopen_keeps_data_and_revision(store: Store, db_path: Path) -> None:
    with store.session() as s:
        repo.save(s, "model_keys", ModelKeySpec("k", "env:K"))
    store.dispose()
    again = open_store(str(db_path))
    try:
        with again.session() as s:
            assert repo.get_revision(s) == 1
            assert repo.get(s, "model_keys", "k").credential == "env:K"
    finally:
        again.dispose()


def test_aigw_db_env_and_sqlite_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    via_env = tmp_path / "env" / "a.db"
    monkeypatch.setenv("AIGW_DB", str(via_env))
    st = open_store(None)
    assert st.location.sqlite_path == via_env.resolve()
    assert st.data_dir == via_env.parent.resolve()
    st.dispose()
    assert via_env.exists()

    via_url = tmp_path / "url" / "b.db"
    st = open_store(f"sqlite:///{via_url}")  # an explicit --db beats AIGW_DB
    assert st.location.sqlite_path == via_url.resolve()
    st.dispose()
    assert via_url.exists()


def test_db_path_is_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(str(tmp_path))


def test_db_file_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite at all, just text " * 200)
    with pytest.raises(StoreError, match="cannot open database"):
        open_store(str(bad))


def test_max_connections_saved_exported_and_imported(filled: Session) -> None:
    from store import config_io

    repo.save_gateway(filled, GatewaySpec("0.0.0.0:8000", "", "127.0.0.1:8001", max_connections=250))
    assert repo.load_config(filled).gateway.max_connections == 250
    text = config_io.dumps(repo.load_config(filled))
    assert "max_connections = 250" in text
    parsed = config_io.parse(text.replace("max_connections = 250", "max_connections = 300"))
    assert parsed.config.gateway.max_connections == 300
