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
from store.spec import loopback_url

from .data.traffic_feed import record_key
from .errors import user_message
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
    return loopback_url(admin_listen)


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


def follow_loop(
    target: Callable[[], tuple[str, str | None]],
    on_record: Callable[[dict[str, Any]], None],
    *,
    on_open: Callable[[str], None],
    on_away: Callable[[str, str], None],
    stopped: Callable[[], bool],
    wait: Callable[[float], None],
    on_source: Callable[[EventSource | None], None] | None = None,
    refused_retry_s: float | None = None,
) -> None:
    """Follow ``/events`` across gateway restarts: the one reconnect loop (``aigw logs
    --follow`` and the Traffic pane both run it).

    ``target()`` gives the admin base URL and token, read again before each connection
    (the address may change; a failure there is reported as away, with its reason).
    ``on_open(base)`` runs when a stream is accepted, ``on_away(base, reason)`` each time it
    is lost or cannot be opened, then ``wait(delay)``. A refused token raises
    :class:`TokenRefused` unless ``refused_retry_s`` says how long to wait before trying
    again. ``on_source`` is told the open connection (``None`` when it ends), so another
    thread can :meth:`EventSource.close` it.
    """
    while not stopped():
        try:
            base, token = target()
        except Exception as exc:  # the store is busy or gone: say so and keep trying
            on_away("", f"cannot read the gateway settings: {user_message(exc)}")
            wait(RETRY_S)
            continue
        delay = RETRY_S
        reason = f"no gateway at {base}"
        if token:
            src = EventSource(base, token)
            if on_source is not None:
                on_source(src)
            try:
                for rec in src.records(lambda base=base: on_open(base)):  # type: ignore[misc]
                    on_record(rec)
                    if stopped():
                        break
                reason = f"the gateway at {base} went away"
            except TokenRefused as exc:
                if refused_retry_s is None:
                    raise
                reason, delay = str(exc), refused_retry_s
            except (httpx.HTTPError, OSError):
                pass
            finally:
                if on_source is not None:
                    on_source(None)
        else:
            reason = f"no gateway at {base} (none has run for this store yet)"
        if stopped():
            break
        on_away(base, reason)
        wait(delay)


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

    def target() -> tuple[str, str | None]:
        state["base"] = base = store_admin_base(store)  # re-read: the admin address may change
        return base, read_token(store.data_dir)

    def opened(base: str) -> None:
        if state["first"]:
            print(f"aigw: following requests at {base} (ctrl+c to stop)", file=sys.stderr, flush=True)
        elif state["away"]:
            print(f"aigw: connected to {base}", file=sys.stderr, flush=True)
        state["first"] = state["away"] = False
        time.sleep(CATCH_UP_WAIT_S)  # let the gateway store what finished before we connected
        for rec in _finished_since(store, state["cutoff"]):
            printer.emit(rec)

    def away(base: str, reason: str) -> None:
        state["cutoff"] = time.time() - 1.0
        if not state["away"]:
            print(f"aigw: waiting for the gateway at {base or state['base']} …", file=sys.stderr, flush=True)
            state["away"] = True

    try:
        follow_loop(
            target,
            printer.emit,
            on_open=opened,
            on_away=away,
            stopped=lambda: max_seconds is not None and time.monotonic() - started >= max_seconds,
            wait=time.sleep,
        )
    except TokenRefused as exc:
        print(f"aigw: error: {exc}", file=sys.stderr)
        return 2
    return 0
