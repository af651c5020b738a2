"""Opening a current database skips the migration; any sign that it is not current runs it.

The sign is the schema fingerprint stored in ``meta``: the digest of the models (and, on
SQLite, the file's schema cookie, which every schema change moves). A stale or missing
fingerprint runs the whole migration, which adds what the models have and the file lacks.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import PostgresServer, postgres_server
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from store import db as store_db
from store import repo
from store.db import open_store
from store.errors import StoreError
from store.models import SCHEMA_VERSION
from store.schema_fingerprint import KEY, fingerprint

__all__ = ["postgres_server"]  # the fixture, used by name


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine sends while the test runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", note)


def _refuse_migration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the full migration runs from here on."""

    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the full migration ran on a current database")

    monkeypatch.setattr(SQLModel.metadata, "create_all", refuse)
    monkeypatch.setattr(store_db, "_add_missing_columns", refuse)


@pytest.fixture
def db(db_path: Path, store_template: Path) -> Path:
    """A current store file: a copy of one ``open_store`` made (making one costs ~30 ms)."""
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(store_template, db_path)
    return db_path


def _meta(db: Path) -> dict[str, str]:
    con = sqlite3.connect(db)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def _set_fingerprint(db: Path, digest: str) -> None:
    """Store ``digest`` with the file's current schema cookie: as if the models had been these."""
    con = sqlite3.connect(db)
    try:
        (cookie,) = con.execute("PRAGMA schema_version").fetchone()
        con.execute("UPDATE meta SET value = ? WHERE key = ?", (f"{digest}:{cookie}", KEY))
        con.commit()
    finally:
        con.close()


def _columns(db: Path, table: str) -> set[str]:
    con = sqlite3.connect(db)
    try:
        return {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
    finally:
        con.close()


def test_a_new_database_stores_the_fingerprint(store_template: Path) -> None:
    digest, _, cookie = _meta(store_template)[KEY].partition(":")
    assert digest == fingerprint() and int(cookie) > 0


def test_a_current_database_skips_the_migration(
    db: Path, statements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _refuse_migration(monkeypatch)
    st = open_store(str(db))
    try:
        assert [s.split()[0].upper() for s in statements] == ["SELECT", "PRAGMA"]
        with st.session() as s:
            assert repo.load_config(s).gateway.listen == "127.0.0.1:8080"
    finally:
        st.dispose()


def test_a_changed_fingerprint_runs_the_migration_and_adds_the_missing_columns(db: Path) -> None:
    con = sqlite3.connect(db)  # the models of this aigw have a column the file lacks
    con.execute('ALTER TABLE model_services DROP COLUMN "proxy"')
    con.commit()
    con.close()

    _set_fingerprint(db, fingerprint())  # the file claims to be current: it is trusted
    open_store(str(db)).dispose()
    assert "proxy" not in _columns(db, "model_services")

    _set_fingerprint(db, "0" * 64)  # made by an aigw whose models differed
    open_store(str(db)).dispose()
    assert "proxy" in _columns(db, "model_services")
    digest, _, _ = _meta(db)[KEY].partition(":")
    assert digest == fingerprint()


def test_a_schema_changed_by_hand_runs_the_migration(db: Path) -> None:
    """The fingerprint row untouched, but the schema cookie moved on: not trusted."""
    con = sqlite3.connect(db)
    con.execute('ALTER TABLE model_keys DROP COLUMN "max_concurrency"')
    con.commit()
    con.close()
    open_store(str(db)).dispose()
    assert "max_concurrency" in _columns(db, "model_keys")


def test_a_database_without_a_fingerprint_is_migrated(db: Path) -> None:
    """What an aigw from before fingerprints left."""
    con = sqlite3.connect(db)
    con.execute("DELETE FROM meta WHERE key = ?", (KEY,))
    con.commit()
    con.close()
    open_store(str(db)).dispose()
    assert _meta(db)[KEY].startswith(fingerprint() + ":")


@pytest.mark.parametrize("fingerprinted", [True, False], ids=["fast-path", "full-path"])
def test_a_newer_schema_version_is_refused_on_both_paths(db: Path, fingerprinted: bool) -> None:
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    if not fingerprinted:
        con.execute("DELETE FROM meta WHERE key = ?", (KEY,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="upgrade aigw"):
        open_store(str(db))


@pytest.mark.gateway  # a real PostgreSQL beside the test: seconds to start
def test_postgresql_migrates_once_then_skips(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres_server.create_database("fingerprint")
    st = open_store(url)  # no meta table: the probe fails in its own transaction, the migration runs
    st.dispose()
    _refuse_migration(monkeypatch)
    st = open_store(url)
    try:
        with st.session() as s:
            assert repo.get_meta(s, KEY) == fingerprint()
            repo.set_meta(s, KEY, "0" * 64)  # as an aigw with other models left it
            s.commit()
    finally:
        st.dispose()
    monkeypatch.undo()
    st = open_store(url)
    try:
        with st.session() as s:
            assert repo.get_meta(s, KEY) == fingerprint()
    finally:
        st.dispose()
