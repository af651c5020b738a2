"""The admin ``/events`` stream: one reader for ``aigw logs --follow`` and the console's Traffic pane.

Reading ``/events`` (not the database) is what makes both work for any gateway sharing
this store — started by the console or by ``aigw serve`` elsewhere — and see a record
the moment its request completes. Both reconnect by themselves when the gateway restarts.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from store import repo, usage
from store.admin_token import read_token
from store.db import Store

from .printable import printable_json

RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5.0
#: Longer than the gateway's record batch interval (0.3 s): what finished before we
#: connected is in the store by then.
CATCH_UP_WAIT_S = 0.6
#: Catch-up looks this far back for requests that started earlier but finished later.
LONGEST_REQUEST_S = 900.0
CATCH_UP_MAX = 5000
SEEN_MAX = 20_000


class TokenRefused(Exception):
    """The gateway at the admin address did not accept this store's admin token."""


def admin_base(admin_listen: str) -> str:
    """``host:port`` of the admin listener → a URL to reach it (a wildcard host means loopback)."""
    host, _, port = admin_listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def store_admin_base(store: Store) -> str:
    with store.session() as s:
        return admin_base(repo.load_config(s).gateway.admin_listen)


def parse_event_line(line: str) -> dict[str, Any] | None:
    """The record of one SSE ``data:`` line; ``None`` for comments, other fields and junk."""
    if not line.startswith("data:"):
        return None
    try:
        rec = json.loads(line[5:].strip())
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


class EventSource:
    """One ``/events`` connection. :meth:`close` may be called from another thread: it
    shuts the socket down, which wakes a read blocked in :meth:`records` at once."""

    def __init__(self, base: str, token: str, *, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.base = base
        self._token = token
        # Plain http to the admin listener: no TLS, so skip loading the CA bundle, which
        # costs ~0.2 s of CPU per client — paid on every reconnect attempt otherwise.
        self._client = httpx.Client(timeout=httpx.Timeout(connect_timeout, read=None), verify=False)
        self._resp: httpx.Response | None = None
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def records(self, on_open: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
        """Yield each record until the connection ends (gateway stopped) or :meth:`close`.

        ``on_open`` runs once the gateway accepted the stream (before any record).
        """
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "text/event-stream"}
        try:
            req = self._client.build_request("GET", f"{self.base}/events", headers=headers)
            self._resp = resp = self._client.send(req, stream=True)
            if self._closed.is_set():
                return
            if resp.status_code in (401, 403):
                raise TokenRefused(
                    f"the gateway at {self.base} refused this store's admin token (is it another store's gateway?)"
                )
            resp.raise_for_status()
            if on_open is not None:
                on_open()
            for line in resp.iter_lines():
                rec = parse_event_line(line)
                if rec is not None:
                    yield rec
        except httpx.HTTPError:
            if not self._closed.is_set():
                raise
        finally:
            with contextlib.suppress(Exception):
                if self._resp is not None:
                    self._resp.close()
            with contextlib.suppress(Exception):
                self._client.close()

    def close(self) -> None:
        self._closed.set()
        resp = self._resp
        stream = resp.extensions.get("network_stream") if resp is not None else None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def iter_events(base: str, token: str) -> Iterator[dict[str, Any]]:
    """Yield each record dict of one ``/events`` connection until it ends."""
    yield from EventSource(base, token).records()


def record_key(rec: dict[str, Any]) -> tuple[str, float]:
    """Identifies a record across the store and the stream (request ids may repeat)."""
    return (str(rec.get("request_id", "")), round(float(rec.get("ts") or 0.0), 3))


class _Printer:
    """Prints each record once: the listing, the catch-up from the store and the stream overlap."""

    def __init__(self, as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
        self.as_json = as_json
        self.line = line
        self._seen: set[tuple[str, float]] = set()
        self._order: deque[tuple[str, float]] = deque()

    def mark(self, rec: dict[str, Any]) -> bool:
        key = record_key(rec)
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > SEEN_MAX:
            self._seen.discard(self._order.popleft())
        return True

    def emit(self, rec: dict[str, Any]) -> None:
        if self.mark(rec):
            print(printable_json(rec) if self.as_json else self.line(rec), flush=True)


def _finished_since(store: Store, cutoff: float) -> list[dict[str, Any]]:
    """Stored records of requests that finished after ``cutoff``, oldest first."""
    with store.session() as s:
        rows = [usage.record_dict(r) for r in usage.recent(s, CATCH_UP_MAX, since=cutoff - LONGEST_REQUEST_S)]
    return [r for r in rows if r["ts"] + (r["latency_ms"] or 0) / 1000 >= cutoff]


def follow_events(
    store: Store,
    *,
    as_json: bool,
    line: Callable[[dict[str, Any]], str],
    max_seconds: float | None = None,
    listed: list[dict[str, Any]] | None = None,
    listed_at: float | None = None,
) -> int:
    """Print records as requests finish, until interrupted (or ``max_seconds``).

    ``listed`` are the records already printed (read from the store at ``listed_at``).
    On every (re)connect the store is read once more for requests that finished while
    nobody was listening, so a gateway restart or the gap between the listing and the
    stream loses nothing; duplicates are skipped. Says so on stderr while the gateway
    is away.
    """
    started = time.monotonic()
    printer = _Printer(as_json, line)
    for rec in listed or ():
        printer.mark(rec)
    state: dict[str, Any] = {
        "away": False,
        "first": True,
        "base": store_admin_base(store),
        "cutoff": (listed_at or time.time()) - 1.0,
    }

    def opened() -> None:
        if state["first"]:
            print(f"aigw: following requests at {state['base']} (ctrl+c to stop)", file=sys.stderr, flush=True)
        elif state["away"]:
            print(f"aigw: connected to {state['base']}", file=sys.stderr, flush=True)
        state["first"] = state["away"] = False
        time.sleep(CATCH_UP_WAIT_S)  # let the gateway store what finished before we connected
        for rec in _finished_since(store, state["cutoff"]):
            printer.emit(rec)

    while max_seconds is None or time.monotonic() - started < max_seconds:
        state["base"] = base = store_admin_base(store)  # re-read: the admin address may change
        token = read_token(store.data_dir)
        try:
            if not token:
                raise httpx.ConnectError("no admin token yet")
            for rec in EventSource(base, token).records(opened):
                printer.emit(rec)
        except TokenRefused as exc:
            print(f"aigw: error: {exc}", file=sys.stderr)
            return 2
        except (httpx.HTTPError, OSError):
            pass
        state["cutoff"] = time.time() - 1.0
        if not state["away"]:
            print(f"aigw: waiting for the gateway at {base} …", file=sys.stderr, flush=True)
            state["away"] = True
        time.sleep(RETRY_S)
    return 0
