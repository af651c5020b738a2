"""Where the store lives and how connections are opened.

SQLite by default (``platformdirs.user_data_dir("aigw")/aigw.db``), shared safely by
the console and the gateway process: WAL, a busy timeout and foreign keys on every
connection. Any SQLAlchemy URL works too, so several gateways can share PostgreSQL.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, SQLModel, create_engine

from . import models, schema_fingerprint
from .errors import StoreError

ENV_DB = "AIGW_DB"
BUSY_TIMEOUT_MS = 10_000


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("aigw"))


@dataclass(frozen=True)
class Location:
    """A resolved ``--db``: the SQLAlchemy URL, the data directory and the SQLite file."""

    url: str
    data_dir: Path
    sqlite_path: Path | None

    def describe(self) -> str:
        if self.sqlite_path is not None:
            return str(self.sqlite_path)
        return _redact_url(self.url)


def _redact_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # pragma: no cover - only for display
        return url.split("@")[-1]


def resolve(db: str | None = None) -> Location:
    """``--db`` beats ``AIGW_DB`` beats the default file. ``…://…`` is a SQLAlchemy URL."""
    raw = db or os.environ.get(ENV_DB) or ""
    if "://" in raw:
        if raw.startswith("sqlite:///"):
            path = Path(raw.removeprefix("sqlite:///")).expanduser().resolve()
            return Location(f"sqlite:///{path}", path.parent, path)
        return Location(raw, default_data_dir(), None)
    path = Path(raw).expanduser().resolve() if raw else default_data_dir() / "aigw.db"
    return Location(f"sqlite:///{path}", path.parent, path)


def ensure_private_dir(path: Path, *, tighten: bool) -> None:
    """Create ``path`` 0700. ``tighten`` also fixes an existing folder we own (the default one)."""
    existed = path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed or tighten:
        try:
            if stat.S_IMODE(path.stat().st_mode) != 0o700:
                path.chmod(0o700)
        except OSError:
            pass


def private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 if it does not exist; tighten it if it does.

    An existing file is not opened: closing any descriptor of a file drops every POSIX
    lock the process holds on it, so opening the store a second time in one process
    released the locks of its open SQLite connections. Another process closing its last
    connection then took itself for the last one and deleted the WAL under them, which
    corrupts the database.
    """
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


class Store:
    """The engine plus where it lives. Pass one around; open short sessions from it."""

    def __init__(self, location: Location, engine: Engine) -> None:
        self.location = location
        self.engine = engine

    @property
    def data_dir(self) -> Path:
        return self.location.data_dir

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(db: str | None = None, *, create: bool = True) -> Store:
    """Open (and on first use create) the store. Raises :class:`StoreError` with a clear message."""
    loc = resolve(db)
    try:
        if loc.sqlite_path is not None:
            ensure_private_dir(loc.data_dir, tighten=loc.data_dir == default_data_dir())
            if not loc.sqlite_path.exists() and not create:
                raise StoreError(f"database {loc.sqlite_path} does not exist")
            if loc.sqlite_path.is_dir():
                raise StoreError(f"database path {loc.sqlite_path} is a directory")
            private_file(loc.sqlite_path)
            engine = create_engine(
                loc.url,
                connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(loc.url, pool_pre_ping=True)  # a bad URL fails before any mkdir
            ensure_private_dir(loc.data_dir, tighten=True)
        store = Store(loc, engine)
        _migrate(store)
        return store
    except StoreError:
        raise
    except OSError as exc:
        raise StoreError(f"cannot open database {loc.describe()}: {exc.strerror or exc}") from None
    except SQLAlchemyError as exc:
        # DBAPI errors carry the driver's own message, without SQLAlchemy's statement dump.
        orig = getattr(exc, "orig", None)
        msg = str(orig or exc).splitlines()[0]
        raise StoreError(f"cannot open database {loc.describe()}: {msg}") from None
    except Exception as exc:  # a bad URL, a missing driver
        raise StoreError(f"cannot open database {loc.describe()}: {exc}") from None


def _migrate(store: Store) -> None:
    """Create tables and the schema-version row; refuse a database from a newer aigw.

    A database whose stored schema fingerprint is this aigw's is current: one query says
    so, and the full migration (``create_all``, an inspection of every table) is skipped.
    """
    found = _probe(store.engine)
    if found is not None and found.version is not None:
        _refuse_newer(store, found.version)
        if int(found.version) == models.SCHEMA_VERSION and found.stored == _fingerprint(found.cookie):
            return
    SQLModel.metadata.create_all(store.engine)
    with store.session() as s:
        row = s.get(models.Meta, "schema_version")
        if row is None:
            s.add(models.Meta(key="schema_version", value=str(models.SCHEMA_VERSION)))
            if s.get(models.Meta, "revision") is None:
                s.add(models.Meta(key="revision", value="0"))
            if s.get(models.GatewaySettings, 1) is None:
                s.add(models.GatewaySettings(id=1))
            s.commit()
        else:
            _refuse_newer(store, row.value)
        # Future: elif int(row.value) < SCHEMA_VERSION: run the steps in order, then bump.
    _add_missing_columns(store.engine)
    _record_fingerprint(store.engine)


def _refuse_newer(store: Store, version: str) -> None:
    if int(version) > models.SCHEMA_VERSION:
        raise StoreError(
            f"database {store.location.describe()} has schema version {version}; this aigw "
            f"knows {models.SCHEMA_VERSION} — upgrade aigw"
        )


@dataclass(frozen=True)
class _Found:
    """What the probe read: the stored version and fingerprint, and SQLite's schema cookie."""

    version: str | None
    stored: str | None
    cookie: int | None


def _probe(engine: Engine) -> _Found | None:
    """The stored schema version and fingerprint, or None when there is no ``meta`` table yet.

    In a connection of its own: on PostgreSQL a failed query aborts its transaction, and
    the migration that follows must not run in that one.
    """
    try:
        with engine.connect() as conn:
            query = text("SELECT key, value FROM meta WHERE key IN ('schema_version', :fp)")
            rows = {str(k): str(v) for k, v in conn.execute(query, {"fp": schema_fingerprint.KEY}).all()}
            cookie = _schema_cookie(conn)
    except SQLAlchemyError:
        return None
    return _Found(rows.get("schema_version"), rows.get(schema_fingerprint.KEY), cookie)


def _schema_cookie(conn: Connection) -> int | None:
    """SQLite's count of schema changes: any change made behind aigw's back (a column
    dropped by hand) changes it, so the stored fingerprint no longer matches."""
    if conn.dialect.name != "sqlite":
        return None
    return int(conn.exec_driver_sql("PRAGMA schema_version").scalar_one())


def _fingerprint(cookie: int | None) -> str:
    """What a current database stores: the models' digest, on SQLite with the schema cookie."""
    digest = schema_fingerprint.fingerprint()
    return digest if cookie is None else f"{digest}:{cookie}"


def _record_fingerprint(engine: Engine) -> None:
    """Store the fingerprint of the schema just migrated to; an upsert, since two processes
    may finish the same migration at once."""
    with engine.begin() as conn:
        value = _fingerprint(_schema_cookie(conn))
        conn.execute(
            text(
                "INSERT INTO meta (key, value) VALUES (:key, :value) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            ),
            {"key": schema_fingerprint.KEY, "value": value},
        )


def _column_default(column: Any) -> Any:
    """The value a new column takes in rows that existed before it (its model default)."""
    default = column.default
    if default is None:
        return None
    if default.is_callable:  # default_factory (lists, dicts): called with no context
        try:
            return default.arg(None)
        except TypeError:
            return default.arg()
    return default.arg


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a newer aigw knows to tables an older one made, with their defaults.

    Every field added since a table was first created has a default, so this is all an
    upgrade needs: ``create_all`` makes missing tables, never missing columns. Idempotent,
    and cheap (one inspection per table) on a database that is already current.
    """
    found = inspect(engine)
    existing_tables = set(found.get_table_names())
    steps: list[str] = []
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            value = _column_default(column)
            if isinstance(value, (list, dict)):
                value = json.dumps(value)
            if value is None:
                literal = "NULL"
            elif isinstance(value, bool):
                literal = "1" if value else "0"
                if engine.dialect.name == "postgresql":
                    literal = "true" if value else "false"
            elif isinstance(value, (int, float)):
                literal = repr(value)
            else:
                literal = "'" + str(value).replace("'", "''") + "'"
            null = "" if value is None else " NOT NULL"
            steps.append(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}{null} DEFAULT {literal}')
    if steps:
        with engine.begin() as conn:
            for step in steps:
                conn.execute(text(step))
    _reconcile_indexes(engine)


def _reconcile_indexes(engine: Engine) -> None:
    """Recreate indexes whose uniqueness changed since the table was made.

    ``model_apis.base_path`` was unique once; APIs may now share a base path when their
    routes differ, and an old unique index would refuse what validation allows.
    """
    found = inspect(engine)
    existing_tables = set(found.get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        have = {ix["name"]: bool(ix["unique"]) for ix in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name in have and have[index.name] != bool(index.unique):
                with engine.begin() as conn:
                    conn.execute(text(f'DROP INDEX "{index.name}"'))
                    index.create(conn)
