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
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from store import repo
from store.admin_token import read_token
from store.db import Store

RETRY_S = 1.0
CONNECT_TIMEOUT_S = 5.0


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
        self._client = httpx.Client(timeout=httpx.Timeout(connect_timeout, read=None))
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
                raise TokenRefused(f"the gateway at {self.base} refused this store's admin token "
                                   "(is it another store's gateway?)")
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


def follow_events(store: Store, *, as_json: bool, line: Callable[[dict[str, Any]], str],
                  max_seconds: float | None = None) -> int:
    """Print records until interrupted (or ``max_seconds``); say so while the gateway is away."""
    started = time.monotonic()
    state = {"away": False, "base": store_admin_base(store)}

    def opened() -> None:
        if state["away"]:
            print(f"aigw: connected to {state['base']}", file=sys.stderr, flush=True)
            state["away"] = False

    while max_seconds is None or time.monotonic() - started < max_seconds:
        state["base"] = base = store_admin_base(store)  # re-read: the admin address may change
        token = read_token(store.data_dir)
        try:
            if not token:
                raise httpx.ConnectError("no admin token yet")
            for rec in EventSource(base, token).records(opened):
                print(json.dumps(rec, ensure_ascii=False) if as_json else line(rec), flush=True)
        except TokenRefused as exc:
            print(f"aigw: error: {exc}", file=sys.stderr)
            return 2
        except (httpx.HTTPError, OSError):
            pass
        if not state["away"]:
            print(f"aigw: waiting for the gateway at {base} …", file=sys.stderr, flush=True)
            state["away"] = True
        time.sleep(RETRY_S)
    return 0
