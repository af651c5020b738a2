"""The gateways running on one store (``nodes``) and the admin token they share.

Each ``aigw serve`` upserts its row at start and every few seconds, and deletes it on a
clean stop. A row not refreshed for :data:`STALE_S` is *stale*: its gateway died or lost
the database. For a store other than SQLite (several machines), the admin token lives in
the database too, so every node accepts the same one. :func:`admin_url` says how another
process (the console) reaches a node's admin listener, from this machine or another.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from . import models as m
from .spec import is_loopback, listen_url

#: A node not seen for this long is marked stale (it refreshes at least every 5 s).
STALE_S = 15.0
ADMIN_TOKEN_KEY = "admin_token"


@dataclass(frozen=True)
class NodeInfo:
    id: str
    host: str
    listen: str
    admin_listen: str
    workers: int
    version: str
    revision: int
    started_at: float
    last_seen: float
    stale: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def admin_url(node: NodeInfo, here: str) -> str | None:
    """The URL of ``node``'s admin listener seen from the machine named ``here``; ``None``
    when it listens on loopback on another machine (only that machine can reach it).

    A wildcard address means every address of the node's machine: loopback when that
    machine is this one, else its host name.
    """
    if node.host == here or not node.host:
        return listen_url(node.admin_listen)
    if is_loopback(node.admin_listen):
        return None
    return listen_url(node.admin_listen, node.host)


def heartbeat(session: Session, node: m.Node) -> None:
    """Insert or refresh ``node`` (its ``last_seen`` set to now)."""
    node.last_seen = time.time()
    row = session.get(m.Node, node.id)
    if row is None:
        session.add(m.Node(**node.model_dump()))
    else:
        for k, v in node.model_dump().items():
            setattr(row, k, v)
        session.add(row)
    session.commit()


def remove(session: Session, node_id: str) -> None:
    row = session.get(m.Node, node_id)
    if row is not None:
        session.delete(row)
        session.commit()


def list_nodes(session: Session, *, now: float | None = None) -> list[NodeInfo]:
    now = time.time() if now is None else now
    rows = session.exec(select(m.Node).order_by(col(m.Node.started_at))).all()
    return [
        NodeInfo(
            r.id,
            r.host,
            r.listen,
            r.admin_listen,
            r.workers,
            r.version,
            r.revision,
            r.started_at,
            r.last_seen,
            now - r.last_seen > STALE_S,
        )
        for r in rows
    ]


def stored_admin_token(session: Session) -> str | None:
    """The store's admin token if a node made one (never makes one: that is a gateway's job)."""
    row = session.get(m.Meta, ADMIN_TOKEN_KEY)
    return row.value if row is not None and row.value else None


def shared_admin_token(session: Session) -> str:
    """The store's admin token, made by the first node that asks (never printed)."""
    row = session.get(m.Meta, ADMIN_TOKEN_KEY)
    if row is not None and row.value:
        return row.value
    try:
        session.add(m.Meta(key=ADMIN_TOKEN_KEY, value="aigw-admin-" + secrets.token_urlsafe(32)))
        session.commit()
    except IntegrityError:  # another node made it first: theirs it is
        session.rollback()
    session.expire_all()
    row = session.get(m.Meta, ADMIN_TOKEN_KEY)
    assert row is not None
    return row.value
