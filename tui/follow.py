"""The admin ``/events`` stream: one reader for ``aigw logs --follow`` and the console's Traffic pane.

Reading ``/events`` (not the database) is what makes both work for any gateway sharing
this store — started by the console or by ``aigw serve`` elsewhere — and see a record
the moment its request completes. Both reconnect by themselves when the gateway restarts.
:class:`MergedFollow` runs the same loop once per gateway of the store and merges what
they send, each record once.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from store import repo, usage
from store.admin_token import read_token
from store.db import Store
from store.spec import loopback_url

from .data.traffic_feed import SeenRecords
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


#: The key of the console's own gateway among :class:`MergedFollow`'s sources (others: node ids).
OWN = ""
#: A source's reason before its first connection has opened or failed.
CONNECTING = "connecting…"


@dataclass(frozen=True)
class SourceState:
    """Where one followed gateway's stream stands."""

    key: str
    base: str
    connected: bool
    reason: str = ""


class _Follower:
    """One source of a :class:`MergedFollow`: :func:`follow_loop` with its own stop and wake."""

    def __init__(self, key: str, target: Callable[[], tuple[str, str | None]], merged: MergedFollow) -> None:
        self.key = key
        self.target = target
        self.merged = merged
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._source: EventSource | None = None
        self._lock = threading.Lock()

    def run(self) -> None:
        merged = self.merged
        follow_loop(
            self.target,
            merged._record,
            on_open=lambda base: merged._state(self, base, True, ""),
            on_away=lambda base, reason: merged._state(self, base, False, reason),
            stopped=self.stop.is_set,
            wait=self._wait,
            on_source=self._set_source,
            refused_retry_s=merged.refused_retry_s,
        )

    def _wait(self, delay: float) -> None:
        self.wake.wait(delay)
        self.wake.clear()

    def _set_source(self, src: EventSource | None) -> None:
        with self._lock:
            self._source = src
        if src is not None and self.stop.is_set():
            src.close()  # closed while connecting

    def close(self) -> None:
        self.stop.set()
        self.wake.set()
        with self._lock:
            src = self._source
        if src is not None:
            src.close()


class MergedFollow:
    """Follows ``/events`` of several gateways at once and merges their records.

    One :func:`follow_loop` per source (``spawn(run, name)`` runs each in a thread of the
    caller's choosing), so each reconnects alone and one unreachable gateway never holds
    up the others. A record that arrives twice (one gateway reached at two addresses) is
    passed on once. ``on_change(states)`` is called, from any thread, whenever a source
    opens, goes away, appears or is dropped.
    """

    def __init__(
        self,
        on_record: Callable[[dict[str, Any]], None],
        on_change: Callable[[list[SourceState]], None],
        *,
        spawn: Callable[[Callable[[], None], str], None],
        token: Callable[[], str | None],
        refused_retry_s: float | None = None,
    ) -> None:
        self.on_record = on_record
        self.on_change = on_change
        self.spawn = spawn
        self.token = token
        self.refused_retry_s = refused_retry_s
        self.seen = SeenRecords()
        self._followers: dict[str, _Follower] = {}
        self._bases: dict[str, str] = {}
        self._states: dict[str, SourceState] = {}
        self._lock = threading.Lock()
        self._closed = False

    def follow_own(self, target: Callable[[], tuple[str, str | None]]) -> None:
        """The console's own gateway: ``target`` is read again before each connection (its
        address may change), and it is followed even while nothing answers there."""
        self._start(OWN, target, "")

    def set_nodes(self, follow: Mapping[str, str], unreachable: Mapping[str, str]) -> None:
        """The other gateways now: ``follow`` maps a node id to its admin URL (followed from
        now on), ``unreachable`` a node id to why it cannot be; every other source is dropped."""
        changed = False
        with self._lock:
            if self._closed:
                return
            for key in [k for k in self._followers if k != OWN and self._bases.get(k) != follow.get(k)]:
                self._followers.pop(key).close()
                self._bases.pop(key, None)
                self._states.pop(key, None)
                changed = True
            for key in [k for k in self._states if k != OWN and k not in follow and k not in unreachable]:
                del self._states[key]
                changed = True
            for key, reason in unreachable.items():
                state = SourceState(key, "", False, reason)
                if self._states.get(key) != state:
                    self._states[key] = state
                    changed = True
        for key, url in follow.items():
            if key not in self._followers:
                self._start(key, lambda url=url: (url, self.token()), url)  # type: ignore[misc]
                changed = True
        if changed:
            self._changed()

    def wake(self, key: str = OWN) -> None:
        """Try ``key`` again now instead of at its next retry."""
        with self._lock:
            follower = self._followers.get(key)
        if follower is not None:
            follower.wake.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            followers = list(self._followers.values())
            self._followers.clear()
        for follower in followers:
            follower.close()

    def states(self) -> list[SourceState]:
        """The console's own gateway first, then the nodes by id."""
        with self._lock:
            return sorted(self._states.values(), key=lambda st: (st.key != OWN, st.key))

    # ------------------------------------------------------------- called by the followers

    def _start(self, key: str, target: Callable[[], tuple[str, str | None]], base: str) -> None:
        with self._lock:
            if self._closed or key in self._followers:
                return
            follower = self._followers[key] = _Follower(key, target, self)
            self._bases[key] = base
            self._states[key] = SourceState(key, base, False, CONNECTING)
        self.spawn(follower.run, f"events {key or 'own gateway'}")

    def _record(self, rec: dict[str, Any]) -> None:
        if self.seen.first_time(rec):
            self.on_record(rec)

    def _state(self, follower: _Follower, base: str, connected: bool, reason: str) -> None:
        with self._lock:
            if self._followers.get(follower.key) is not follower:
                return  # dropped meanwhile: say nothing more about it
            old = self._states.get(follower.key)
            state = SourceState(follower.key, base or (old.base if old else ""), connected, reason)
            if old == state:
                return
            self._states[follower.key] = state
        self._changed()

    def _changed(self) -> None:
        self.on_change(self.states())


class _Printer:
    """Prints each record once: the listing, the catch-up from the store and the stream overlap."""

    def __init__(self, as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
        self.as_json = as_json
        self.line = line
        self._seen = SeenRecords()
        self._lock = threading.Lock()  # one line at a time: each node's stream prints from its thread

    def mark(self, rec: dict[str, Any]) -> bool:
        return self._seen.first_time(rec)

    def emit(self, rec: dict[str, Any]) -> None:
        if self.mark(rec):
            text = printable_json(rec) if self.as_json else self.line(rec)
            with self._lock:
                print(text, flush=True)


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
    is away. Every other live node of the store is followed too (:class:`_NodesFollow`),
    so one command shows the traffic of all the gateways sharing the store.
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

    def stopped() -> bool:
        return max_seconds is not None and time.monotonic() - started >= max_seconds

    others = _NodesFollow(store, printer, (listed_at or time.time()) - 1.0, lambda: state["base"])
    others.start(stopped)
    try:
        follow_loop(target, printer.emit, on_open=opened, on_away=away, stopped=stopped, wait=time.sleep)
    except TokenRefused as exc:
        print(f"aigw: error: {exc}", file=sys.stderr)
        return 2
    finally:
        others.close()
    return 0


class _NodesFollow:
    """The other live nodes of the store for ``aigw logs --follow``: their ``/events``
    merged into the same printer (each record once), the nodes listed again every few
    seconds, and on stderr when one is followed, lost or cannot be reached from here."""

    def __init__(self, store: Store, printer: _Printer, cutoff: float, own_base: Callable[[], str]) -> None:
        from .data import nodes as node_data  # the console's rules for which nodes to follow

        self._nodes = node_data
        self.store = store
        self.printer = printer
        self.own_base = own_base
        self._stop = threading.Event()
        self._said: dict[str, tuple[bool, str]] = {}
        #: Per node: the time after which its records may be missing (caught up on connect).
        self._cutoffs: dict[str, float] = {}
        self._start_cutoff = cutoff
        self._lock = threading.Lock()
        self.merged = MergedFollow(
            printer.emit,
            self._changed,
            spawn=lambda run, name: threading.Thread(target=run, name=name, daemon=True).start(),
            token=lambda: node_data.admin_token(store),
            refused_retry_s=RETRY_S * 5,
        )

    def start(self, stopped: Callable[[], bool]) -> None:
        threading.Thread(target=self._relist, args=(stopped,), name="aigw-nodes", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.merged.close()

    def _relist(self, stopped: Callable[[], bool]) -> None:
        while not self._stop.is_set() and not stopped():
            try:
                found = self._nodes.list_nodes(self.store)
                targets = self._nodes.follow_targets(found, self.own_base(), self._nodes.this_host())
            except Exception:  # the store is busy or gone: keep what we follow, try again
                targets = None
            if targets is not None:
                self.merged.set_nodes(targets.follow, targets.unreachable)
            self._stop.wait(self._nodes.RELIST_S)

    def _changed(self, states: list[SourceState]) -> None:
        catch_up: list[float] = []
        with self._lock:
            for st in states:
                if st.key == OWN or st.reason == CONNECTING:
                    continue
                said = (st.connected, st.reason)
                if self._said.get(st.key) == said:
                    continue
                self._said[st.key] = said
                name = self._nodes.short_id(st.key)
                if st.connected:
                    print(f"aigw: following node {name} at {st.base}", file=sys.stderr, flush=True)
                    catch_up.append(self._cutoffs.pop(st.key, self._start_cutoff))
                else:
                    self._cutoffs.setdefault(st.key, time.time() - 1.0)
                    print(f"aigw: node {name}: {st.reason}", file=sys.stderr, flush=True)
        for cutoff in catch_up:  # what it finished while nobody here listened
            time.sleep(CATCH_UP_WAIT_S)
            with contextlib.suppress(Exception):
                for rec in _finished_since(self.store, cutoff):
                    self.printer.emit(rec)
