"""The store's nodes as the console sees them: which to follow, how to reach each, and the
request rate over all of them.

Every ``aigw serve`` on the store registers a node row (``store.nodes``); the console
follows the ``/events`` of each live one and sums their request counters, so Traffic and
the header cover the whole store, not only the gateway the console started. The rules
here are plain functions of the rows, so tests call them without any gateway.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from rich.text import Text

from store import nodes
from store.admin_token import read_token
from store.db import Store
from store.nodes import NodeInfo

from ..admin_client import AdminClient
from ..rate import RequestRate

#: How often the console lists the nodes again (a new node is followed within this).
RELIST_S = 3.0
#: A node whose ``/healthz`` did not answer is asked again after this long, not every poll.
HEALTH_RETRY_S = 5.0
#: Short: a node on another machine that does not answer must not hold the header's poll.
NODE_HEALTH_TIMEOUT_S = 1.0


def this_host() -> str:
    return socket.gethostname()


def clock() -> float:
    """This module's clock (the screenshots hold it at the demo's time)."""
    return time.time()


def list_nodes(store: Store, at: float | None = None) -> list[NodeInfo]:
    """The nodes, ``stale`` as of ``at`` (default: now)."""
    with store.session() as s:
        return nodes.list_nodes(s, now=clock() if at is None else at)


def admin_token(store: Store) -> str | None:
    """The token every node of the store accepts: the file in the data folder (a gateway
    on this machine wrote it), else the one kept in a shared database."""
    token = read_token(store.data_dir)
    if token or store.location.sqlite_path is not None:
        return token
    with store.session() as s:
        return nodes.stored_admin_token(s)


def short_id(node_id: str) -> str:
    """A node id short enough for a status line: host and pid, without the random tail."""
    head, sep, tail = node_id.rpartition("-")
    return head if sep and len(tail) == 6 else node_id


def unreachable_reason(node: NodeInfo) -> str:
    return f"its admin address {node.admin_listen} is loopback on {node.host}"


@dataclass(frozen=True)
class Targets:
    """What to follow: ``follow`` maps a node id to its admin URL; ``unreachable`` maps a
    node id that cannot be reached from here to why."""

    follow: dict[str, str] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


def follow_targets(found: Iterable[NodeInfo], own_base: str, here: str) -> Targets:
    """The live nodes to follow besides the console's own gateway at ``own_base``.

    A node reached at ``own_base`` is that gateway (already followed), and two rows reached
    at one URL are one listener: each URL is followed once. Stale nodes are not followed.
    """
    follow: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    seen = {own_base}
    for node in found:
        if node.stale:
            continue
        url = nodes.admin_url(node, here)
        if url is None:
            unreachable[node.id] = unreachable_reason(node)
        elif url not in seen:
            seen.add(url)
            follow[node.id] = url
    return Targets(follow, unreachable)


class ClusterRate:
    """The request rate summed over gateways, each one's from its own counter.

    Gateways are told apart by an identity (pid and start time from ``/healthz``), not by
    URL, so one gateway reached at two addresses counts once; one that is no longer
    observed stops counting.
    """

    def __init__(self) -> None:
        self._rates: dict[Hashable, RequestRate] = {}

    def observe(self, totals: Mapping[Hashable, int], now: float) -> float | None:
        """``None`` until some gateway has a rate (two samples of its counter)."""
        for gone in set(self._rates) - set(totals):
            del self._rates[gone]
        rates = [self._rates.setdefault(k, RequestRate()).observe(n, now) for k, n in totals.items()]
        known = [r for r in rates if r is not None]
        return sum(known) if known else None


@dataclass(frozen=True)
class ClusterView:
    """One poll of the gateways on the store: how many answered (the console's own
    included), and the rate over them."""

    answered: int = 0
    rate: float | None = None


class NodesWatch:
    """Polls the ``/healthz`` of every live node for the header's rate (blocking: call from
    a thread worker; calls from several threads take turns)."""

    def __init__(self, store: Store, *, here: str | None = None) -> None:
        self.store = store
        self.here = here or this_host()
        self._nodes: list[NodeInfo] = []
        self._listed_at: float | None = None
        self._clients: dict[str, AdminClient] = {}
        self._failed_at: dict[str, float] = {}
        self._rate = ClusterRate()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._close_clients()

    def _close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _client(self, url: str) -> AdminClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = AdminClient(
                "", self.store.data_dir, base_url=url, timeout=NODE_HEALTH_TIMEOUT_S
            )
        return client

    def observe(self, own: tuple[Hashable, int] | None, own_base: str) -> ClusterView:
        """``own`` is the console's gateway's identity and counter (``None`` when down)."""
        with self._lock:
            return self._observe(own, own_base)

    def _observe(self, own: tuple[Hashable, int] | None, own_base: str) -> ClusterView:
        mono = time.monotonic()
        if self._listed_at is None or mono - self._listed_at >= RELIST_S:
            with contextlib.suppress(Exception):  # the store is busy: keep the last list
                self._nodes = list_nodes(self.store)
            self._listed_at = mono
        targets = follow_targets(self._nodes, own_base, self.here)
        totals: dict[Hashable, int] = {}
        if own is not None:
            totals[own[0]] = own[1]
        for url in targets.follow.values():
            failed = self._failed_at.get(url)
            if failed is not None and mono - failed < HEALTH_RETRY_S:
                continue
            health = self._client(url).health()
            if health is None:
                self._failed_at[url] = mono
                continue
            self._failed_at.pop(url, None)
            totals[(health.pid, health.started_at)] = health.requests_total
        for url in set(self._clients) - set(targets.follow.values()):
            self._clients.pop(url).close()
            self._failed_at.pop(url, None)
        return ClusterView(answered=len(totals), rate=self._rate.observe(totals, mono))


# ----------------------------------------------------------------- Instance Info's table

#: State and last seen first: at 80 columns the table scrolls sideways, and they matter most.
NODE_COLUMNS = ("Node", "State", "Last seen", "Host", "Listen", "Admin", "Workers", "Version", "Revision", "Started")


def fmt_ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h ago"
    return f"{seconds // 86400:.0f}d ago"


def fmt_started(ts: float, now: float) -> str:
    """Local time; the date too when it was not today."""
    when, today = datetime.fromtimestamp(ts), datetime.fromtimestamp(now)
    return when.strftime("%H:%M:%S" if when.date() == today.date() else "%Y-%m-%d %H:%M")


def node_cells(node: NodeInfo, now: float) -> list[Text]:
    """One row of Instance Info's nodes table, in :data:`NODE_COLUMNS` order (every value is
    the node's own: plain text, never markup)."""
    return [
        Text(node.id),
        Text("stale", "bold yellow") if node.stale else Text("live", "green"),
        Text(fmt_ago(now - node.last_seen)),
        Text(node.host),
        Text(node.listen),
        Text(node.admin_listen),
        Text(str(node.workers), justify="right"),
        Text(node.version),
        Text(str(node.revision), justify="right"),
        Text(fmt_started(node.started_at, now)),
    ]
