"""The Traffic pane's data, apart from any widget: a bounded record buffer, the filter, per-second stats.

Kept free of Textual so the rules (what ``4xx`` matches, what counts as an error, how
a burst is folded into the sparklines) are plain functions tests can call directly.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from store.usage import is_error

#: Records kept in memory (the table shows them newest first).
MAX_RECORDS = 2000
#: Seconds of history behind the sparklines.
STATS_WINDOW_S = 300
#: Latency samples kept per second for the p50 (enough for a median; bounds memory at high rates).
SAMPLES_PER_SECOND = 1000
#: Fields a bare filter word is looked for in.
TEXT_FIELDS = ("consumer", "api", "model", "service", "request_id")
FILTER_FIELDS = {"consumer", "api", "model", "service", "key", "status", "path", "id"}

_CLASS = re.compile(r"^([1-5])xx$")

Record = dict[str, Any]


def status_kind(status: int) -> str:
    """The colour class of a status: ``ok`` (1xx–3xx), ``warn`` (4xx), ``bad`` (5xx, 499, none)."""
    if status == 499 or status >= 500 or status < 100:
        return "bad"
    if status >= 400:
        return "warn"
    return "ok"


def completed_at(rec: Record) -> float:
    """When the request finished: arrival ``ts`` plus its latency (what a rate should count)."""
    return float(rec.get("ts") or 0.0) + float(rec.get("latency_ms") or 0.0) / 1000.0


def record_key(rec: Record) -> tuple[str, float]:
    return (str(rec.get("request_id", "")), round(float(rec.get("ts") or 0.0), 3))


#: Record keys remembered by :class:`SeenRecords` (older ones are forgotten first).
SEEN_MAX = 20_000


class SeenRecords:
    """The keys of the last :data:`SEEN_MAX` records, so each record is shown once when it
    arrives twice: from the store and the stream, or from one gateway reached at two
    addresses. Safe to call from several threads (each stream has its own)."""

    def __init__(self, maxlen: int = SEEN_MAX) -> None:
        self.maxlen = maxlen
        self._seen: set[tuple[str, float]] = set()
        self._order: deque[tuple[str, float]] = deque()
        self._lock = threading.Lock()

    def first_time(self, rec: Record) -> bool:
        """Remember ``rec``; ``False`` when it was seen already."""
        key = record_key(rec)
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
            self._order.append(key)
            if len(self._order) > self.maxlen:
                self._seen.discard(self._order.popleft())
        return True


# ----------------------------------------------------------------- filter


def _status_matches(status: int, value: str) -> bool:
    value = value.lower()
    if m := _CLASS.match(value):
        return status // 100 == int(m.group(1))
    if value in ("error", "errors", "err"):
        return is_error(status)
    return value.isdigit() and status == int(value)


@dataclass(frozen=True)
class RecordFilter:
    """Words that must all match: ``4xx``/``5xx``/``429``/``errors`` test the status,
    ``consumer:x`` (also ``api:``, ``model:``, ``service:``, ``key:``, ``status:``, ``path:``,
    ``id:``) tests one field, any other word is looked for in consumer, API, model,
    service and request id (case-insensitive)."""

    text: str = ""
    terms: tuple[tuple[str | None, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> RecordFilter:
        terms: list[tuple[str | None, str]] = []
        for word in text.split():
            name, sep, value = word.partition(":")
            if sep and name.lower() in FILTER_FIELDS and value:
                terms.append((name.lower(), value.lower()))
            elif (
                _CLASS.match(word.lower())
                or (word.isdigit() and len(word) == 3)
                or word.lower() in ("error", "errors", "err")
            ):
                terms.append(("status", word.lower()))
            else:
                terms.append((None, word.lower()))
        return cls(text.strip(), tuple(terms))

    def __bool__(self) -> bool:
        return bool(self.terms)

    def matches(self, rec: Record) -> bool:
        for name, value in self.terms:
            if name == "status":
                if not _status_matches(int(rec.get("status") or 0), value):
                    return False
            elif name is None:
                if not any(value in str(rec.get(f) or "").lower() for f in TEXT_FIELDS):
                    return False
            else:
                f = {"key": "key_name", "id": "request_id"}.get(name, name)
                if value not in str(rec.get(f) or "").lower():
                    return False
        return True


# ----------------------------------------------------------------- stats


@dataclass
class _Second:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    p50: float | None = None


class TrafficStats:
    """Requests, errors and latencies per second over the last :data:`STATS_WINDOW_S` seconds."""

    def __init__(self, window_s: int = STATS_WINDOW_S) -> None:
        self.window_s = window_s
        self._seconds: dict[int, _Second] = {}

    def add(self, records: Iterable[Record], now: float | None = None) -> None:
        oldest = int(time.time() if now is None else now) - self.window_s
        for rec in records:
            sec = int(completed_at(rec))
            if sec <= oldest:
                continue
            b = self._seconds.get(sec)
            if b is None:
                b = self._seconds[sec] = _Second()
            b.requests += 1
            if is_error(int(rec.get("status") or 0)):
                b.errors += 1
            if len(b.latencies) < SAMPLES_PER_SECOND:
                b.latencies.append(float(rec.get("latency_ms") or 0.0))
                b.p50 = None

    def series(self, now: float | None = None) -> tuple[list[float], list[float], list[float]]:
        """Per second, oldest first: requests, p50 latency (ms), error rate (%) — the last
        second is left out while it is still filling."""
        end = int(time.time() if now is None else now)
        start = end - self.window_s
        for sec in [s for s in self._seconds if s <= start]:
            del self._seconds[sec]
        rps: list[float] = []
        p50: list[float] = []
        err: list[float] = []
        for sec in range(start, end):
            b = self._seconds.get(sec)
            if b is None or not b.requests:
                rps.append(0.0)
                p50.append(0.0)
                err.append(0.0)
                continue
            if b.p50 is None:
                b.p50 = statistics.median(b.latencies) if b.latencies else 0.0
            rps.append(float(b.requests))
            p50.append(b.p50)
            err.append(100.0 * b.errors / b.requests)
        return rps, p50, err

    def recent(self, seconds: int = 10, now: float | None = None) -> tuple[float, float | None, float]:
        """Over the last ``seconds`` complete seconds: requests/s, p50 latency, error %."""
        end = int(time.time() if now is None else now)
        reqs = errors = 0
        lat: list[float] = []
        for sec in range(end - seconds, end):
            b = self._seconds.get(sec)
            if b is not None:
                reqs += b.requests
                errors += b.errors
                lat.extend(b.latencies)
        return (reqs / seconds, statistics.median(lat) if lat else None, 100.0 * errors / reqs if reqs else 0.0)


# ----------------------------------------------------------------- the buffer


class TrafficFeed:
    """The newest :data:`MAX_RECORDS` records, the filter and the pause state.

    Each record gets a ``_seq`` (unique, growing with arrival) so the table can keep its
    cursor on the same request while newer ones are inserted above it.
    """

    def __init__(self, maxlen: int = MAX_RECORDS) -> None:
        self.maxlen = maxlen
        self.records: deque[Record] = deque(maxlen=maxlen)  # oldest left, newest right
        self.stats = TrafficStats()
        self.filter = RecordFilter()
        self.paused = False
        #: Records that arrived while paused (shown on resume).
        self.unseen = 0
        self.received = 0
        self._seq = 0
        self._frozen: list[Record] = []

    def _stamp(self, rec: Record) -> Record:
        self._seq += 1
        rec["_seq"] = self._seq
        return rec

    def add(self, batch: list[Record]) -> None:
        """New records from the stream, oldest first (one call per batch)."""
        for rec in batch:
            self.records.append(self._stamp(rec))
        self.received += len(batch)
        self.stats.add(batch)
        if self.paused:
            self.unseen += len(batch)

    def add_older(self, batch: list[Record]) -> int:
        """Records from the store (oldest first) that happened before the stream started:
        they go behind what is there, skipping any the stream already delivered."""
        have = {record_key(r) for r in self.records}
        fresh = [r for r in batch if record_key(r) not in have]
        room = self.maxlen - len(self.records)
        if room <= 0 or not fresh:
            return 0
        fresh = fresh[-room:]
        for rec in reversed(fresh):
            self.records.appendleft(self._stamp(rec))
        self.stats.add(fresh)
        return len(fresh)

    def set_filter(self, text: str) -> None:
        self.filter = RecordFilter.parse(text)

    def pause(self) -> None:
        """Freeze what the table shows; new records keep arriving (and are counted)."""
        self.paused = True
        self.unseen = 0
        self._frozen = list(reversed(self.records))

    def resume(self) -> None:
        self.paused = False
        self.unseen = 0
        self._frozen = []

    def view(self) -> list[Record]:
        """What the table shows: matching records, newest first (as of the pause, when paused)."""
        rows = self._frozen if self.paused else reversed(self.records)
        f = self.filter
        if not f:
            return list(rows)
        return [r for r in rows if f.matches(r)]


# ----------------------------------------------------------------- cell text


def fmt_time(ts: float) -> str:
    """Local wall-clock time with milliseconds (the detail shows the ISO UTC time too)."""
    dt = datetime.fromtimestamp(ts)
    return dt.strftime("%H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "–"
    if ms < 100:
        return f"{ms:.1f}ms"
    if ms < 10_000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.1f}s"


def fmt_tokens(n: int, estimated: bool) -> str:
    return f"~{n}" if estimated else str(n)


def fmt_cost(cost: float) -> str:
    if not cost:
        return "$0"
    if cost < 0.01:
        return f"${cost:.6f}"
    return f"${cost:.4f}"
