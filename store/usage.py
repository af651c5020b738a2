"""Request records: written in batches by the gateway, read by ``aigw logs``/``usage`` and the console.

Quota use is counted from these records (not kept in a counter of its own), so a
restart restores it exactly: the gateway asks :func:`quota_used` on start.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
import sqlite3
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import JSON, Connection, Engine, case, func, insert, or_
from sqlalchemy import select as select_columns
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from .models import RequestRecord
from .times import iso_utc

RECORD_FIELDS: tuple[str, ...] = tuple(name for name in RequestRecord.model_fields if name != "id")
GROUPS = ("consumer", "api", "model", "service")
#: ``RequestRecord.cache`` of an answer served from the response cache.
CACHE_HIT = "hit"


_DEFAULTS: tuple[Any, ...] = tuple(
    RequestRecord.model_fields[k].get_default(call_default_factory=True) for k in RECORD_FIELDS
)
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def record_row(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record as the row the inserts take (``RECORD_FIELDS`` order)."""
    try:
        return _ROW(rec)  # type: ignore[no-any-return]
    except KeyError:  # a partial record: the missing fields take their defaults
        return tuple(rec.get(k, d) for k, d in zip(RECORD_FIELDS, _DEFAULTS, strict=True))


_ROW = operator.itemgetter(*RECORD_FIELDS)
#: Columns held as JSON (``attempts``): the rows carry lists, the driver takes their text.
_JSON_AT = tuple(i for i, k in enumerate(RECORD_FIELDS) if isinstance(RequestRecord.__table__.c[k].type, JSON))  # type: ignore[attr-defined]


def _driver_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row as the driver takes it: JSON columns as text (orjson: the writer thread does
    this for every record, and the stdlib's encoder costs several times as much)."""
    out = list(row)
    for i in _JSON_AT:
        out[i] = orjson.dumps(out[i]).decode()
    return tuple(out)


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Multi-row ``INSERT … VALUES (…), (…)`` statements where the driver's parameter style
    allows (SQLite, psycopg); other drivers go through Core.

    Why not ``executemany``: the gateway's record writer is a thread that shares the GIL with
    the request path. SQLite's driver lets go of the GIL around every row's step, and a thread
    that let go waits up to the interpreter's switch interval (0.5 ms in ``aigw serve``) to
    get it back while the event loop is busy. Under full load on a machine with a second core
    that capped the writer at a few hundred rows a second, and the backlog grew until records
    were dropped.
    One statement carries up to 512 rows, so a batch changes hands a few times, not once a
    row; chunk sizes are powers of two so the driver's statement cache holds every shape.
    """
    mark = _PLACEHOLDER.get(conn.dialect.paramstyle)
    if mark is None:
        conn.execute(
            insert(RequestRecord.__table__),  # type: ignore[attr-defined]
            [dict(zip(RECORD_FIELDS, row, strict=True)) for row in rows],
        )
        return
    size = _rows_per_statement(conn)
    start, total = 0, len(rows)
    while start < total:
        while size > total - start:
            size //= 2
        chunk = [_driver_row(r) for r in rows[start : start + size]] if _JSON_AT else rows[start : start + size]
        conn.exec_driver_sql(_insert_sql(mark, size), tuple(itertools.chain.from_iterable(chunk)))
        start += size


#: Rows in one INSERT statement at most (a power of two): 512 x 19 columns stays under every
#: driver's parameter limit we meet, and larger statements gain nothing measurable.
MAX_ROWS_PER_STATEMENT = 512


def insert_records(session: Session, records: Iterable[Mapping[str, Any]]) -> int:
    """Store ready-made request records through the writer's one insert path (the
    screenshot demo's traffic, imports of history); missing fields take their defaults.
    Commits."""
    rows = [record_row(r) for r in records]
    if rows:
        _insert_rows(session.connection(), rows)
        session.commit()
    return len(rows)


def _rows_per_statement(conn: Connection) -> int:
    """The largest power of two ≤ ``MAX_ROWS_PER_STATEMENT`` whose parameters fit the driver."""
    limit = 65535  # PostgreSQL's wire protocol
    if conn.dialect.name == "sqlite":
        dbapi = conn.connection.dbapi_connection
        try:
            limit = dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[union-attr]
        except (AttributeError, sqlite3.Error):
            limit = 999  # the oldest SQLite default
    size = MAX_ROWS_PER_STATEMENT
    while size > 1 and size * len(RECORD_FIELDS) > limit:
        size //= 2
    return size


class RecordWriter:
    """Batch inserts of record rows on one connection of the store's own, kept open.

    Used by the gateway's writer thread: a batch is a few multi-row INSERTs (see
    :func:`_insert_rows`) and one commit, with no session or ORM work around it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            _insert_rows(self._conn, rows)
            self._conn.commit()
        except BaseException:
            self.close()  # a fresh connection next time: this one may be in a failed transaction
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()


@functools.cache
def _insert_sql(mark: str, nrows: int) -> str:
    table = RequestRecord.__tablename__
    values = "(" + ", ".join([mark] * len(RECORD_FIELDS)) + ")"
    return f"INSERT INTO {table} ({', '.join(RECORD_FIELDS)}) VALUES " + ", ".join([values] * nrows)


def recent(session: Session, n: int = 50, *, since: float | None = None) -> list[RequestRecord]:
    """The newest ``n`` records, oldest first (as a log reads)."""
    q = select(RequestRecord).order_by(col(RequestRecord.ts).desc(), col(RequestRecord.id).desc())
    if since is not None:
        q = q.where(RequestRecord.ts >= since)
    rows = list(session.exec(q.limit(n)).all())
    rows.reverse()
    return rows


def totals(session: Session, by: str = "consumer", since: float | None = None) -> list[dict[str, Any]]:
    """Requests, tokens and cost per ``by`` value, sorted by cost then tokens.

    Tokens are those the vendors used: a response cache hit's are counted apart, as
    ``saved_tokens``, with what they would have cost (``cost_saved``).
    """
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}; use one of {', '.join(GROUPS)}")
    key = getattr(RequestRecord, by)
    hit = col(RequestRecord.cache) == CACHE_HIT
    pt_col, ct_col = RequestRecord.prompt_tokens, RequestRecord.completion_tokens
    # More columns than sqlmodel's ``select`` is typed for: SQLAlchemy's own, on the session's connection.
    q = select_columns(
        key,
        func.count(),
        func.coalesce(func.sum(case((hit, 0), else_=pt_col)), 0),
        func.coalesce(func.sum(case((hit, 0), else_=ct_col)), 0),
        func.coalesce(func.sum(RequestRecord.cost), 0.0),
        func.coalesce(func.sum(case((_ERROR, 1), else_=0)), 0),
        func.coalesce(func.sum(case((col(RequestRecord.estimated), 1), else_=0)), 0),
        func.coalesce(func.sum(case((hit, 1), else_=0)), 0),
        func.coalesce(func.sum(case((hit, pt_col + ct_col), else_=0)), 0),
        func.coalesce(func.sum(RequestRecord.cost_saved), 0.0),
    ).group_by(key)
    if since is not None:
        q = q.where(col(RequestRecord.ts) >= since)
    out: list[dict[str, Any]] = []
    for name, n, pt, ct, cost, errors, estimated, hits, saved, cost_saved in session.connection().execute(q).all():
        out.append(
            {
                by: name or "",
                "requests": int(n),
                "errors": int(errors),
                "prompt_tokens": int(pt),
                "completion_tokens": int(ct),
                "total_tokens": int(pt) + int(ct),
                "cost": round(float(cost), 10),
                "estimated_requests": int(estimated),
                "cache_hits": int(hits),
                "saved_tokens": int(saved),
                "cost_saved": round(float(cost_saved), 10),
            }
        )
    out.sort(key=lambda r: (-r["cost"], -r["total_tokens"], r[by]))
    return out


#: :func:`is_error` as SQL.
_ERROR = or_(col(RequestRecord.status) >= 400, col(RequestRecord.status) < 100)


def period_start(period: str, now: float | None = None) -> float:
    """Start of the current quota period in UTC: day, ISO week (Monday), month, or 0 for total."""
    dt = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.timestamp()
    if period == "week":
        return (day - timedelta(days=day.weekday())).timestamp()
    if period == "month":
        return day.replace(day=1).timestamp()
    return 0.0


def period_end(period: str, now: float | None = None) -> float | None:
    """When the current period's quota resets (``None`` for ``total``)."""
    start = datetime.fromtimestamp(period_start(period, now), UTC)
    if period == "day":
        return (start + timedelta(days=1)).timestamp()
    if period == "week":
        return (start + timedelta(days=7)).timestamp()
    if period == "month":
        nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return nxt.timestamp()
    return None


def quota_used(session: Session, consumer: str, unit: str, since: float, until: float | None = None) -> float:
    """What ``consumer`` has used since ``since`` (and before ``until``) in ``unit``.

    ``requests`` counts only requests forwarded to a vendor (``service`` set) or answered
    from the response cache: a request the gateway itself refused (401/403/429, bad body)
    uses no quota. A cache hit's tokens are recorded but never charged.
    """
    expr: ColumnElement[Any]
    if unit == "requests":
        expr = func.count()
    elif unit == "cost":
        expr = func.coalesce(func.sum(RequestRecord.cost), 0.0)
    else:
        expr = func.coalesce(func.sum(RequestRecord.prompt_tokens + RequestRecord.completion_tokens), 0)
    q = select(expr).where(RequestRecord.consumer == consumer, RequestRecord.ts >= since)
    if unit == "requests":
        q = q.where(or_(col(RequestRecord.service) != "", col(RequestRecord.cache) == CACHE_HIT))
    else:
        q = q.where(RequestRecord.cache != CACHE_HIT)
    if until is not None:
        q = q.where(RequestRecord.ts < until)
    return float(session.exec(q).one())


def record_dict(r: RequestRecord) -> dict[str, Any]:
    """A record as JSON-ready data, with an ISO ``time`` beside ``ts``."""
    return row_dict(tuple(getattr(r, k) for k in RECORD_FIELDS))


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """A record row (``RECORD_FIELDS`` order) as JSON-ready data, with an ISO ``time`` beside
    ``ts``: the one shape of a record for ``aigw logs``, ``/events`` and the console."""
    d = dict(zip(RECORD_FIELDS, row, strict=True))
    d["time"] = iso_utc(d["ts"])
    return d


def is_error(status: int) -> bool:
    """An answer that is not a success: 4xx, 5xx, the gateway's 499 (client went away),
    and 0 (no answer at all). The console's traffic pane and ``aigw usage`` both count this."""
    return status >= 400 or status < 100
