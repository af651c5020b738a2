"""The benchmark: what the gateway itself costs, beside its peers and the floor, in one run.

``python -m tests.bench [--quick | --smoke] [--cases NAME,...] [--litellm [EXE]] [--portkey [DIR]]
[--no-nginx] [--chunk-gap-ms MS] [--async-load] [--no-pin] [--soak S] [--json FILE]``

Every case runs against every target with the same vendor and load generator: the
vendor itself (*direct*), nginx (the floor of any proxy hop), aigw's own HTTP layer
with nothing on it (*raw relay*), a bare aiohttp relay, ``aigw serve`` with its real
configuration (a consumer key, a group grant, rpm/tpm limits and a token quota that
never refuse but count every request, prices, request records), and, when installed,
LiteLLM's proxy and Portkey's gateway. What counts is what a proxy costs: CPU time per
request and per streamed chunk (from ``/proc``, all of its processes), the latency and
the gap between chunks it adds over *direct*, and its memory, file descriptors and
records with 2,000 slow requests in flight.

LiteLLM and Portkey run in phases of their own after ours, on the same core (LiteLLM's
workers stay busy even when idle). A peer that is not installed, or fails a case, costs
only its cells; the summary says why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from proxy import native

from . import loadgen, wrk
from .loadgen import Target
from .procs import (
    API_PATH,
    CACHED_PATH,
    LITELLM_PATH,
    MESSAGES_PATH,
    PORTKEY_DIR,
    PORTKEY_ENTRY,
    PORTKEY_PATH,
    Gateway,
    Joined,
    Proc,
    RedisProc,
    portkey_headers,
    start_litellm,
    start_nginx,
    start_portkey,
    start_raw_relay,
    start_relay,
    start_upstream,
)

T = TypeVar("T")

DIRECT, NGINX, RAW, RELAY, AIGW, LITELLM, PORTKEY = (
    "direct",
    "nginx",
    "raw relay",
    "bare relay",
    "aigw",
    "LiteLLM",
    "Portkey",
)
#: aigw run as more than one process: two workers (limits held by the supervisor), and one
#: process counting its limits in Redis (CPU = aigw's plus redis-server's).
AIGW_W2, AIGW_REDIS = "aigw 2 workers", "aigw + Redis"
#: The table's columns, cheapest hop first.
COLUMNS = [DIRECT, NGINX, RAW, RELAY, AIGW, AIGW_W2, AIGW_REDIS, LITELLM, PORTKEY]

PROMPT = [{"role": "user", "content": "Hello, please introduce yourself."}]


def body(model: str, stream: bool = False, **extra: object) -> bytes:
    return json.dumps({"model": model, "messages": PROMPT, **({"stream": True} if stream else {}), **extra}).encode()


BODY = body("bench-model")
#: A body new to the cache at every request: the load generator numbers the marker.
VARY = b"@n@"
MISS_BODY = json.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": PROMPT[0]["content"] + " #@n@"}]}
).encode()
#: The 20-chunk stream written in one go (the profiler's stream).
STREAM_BODY = body("bench-model", stream=True)


def messages_body(model: str, stream: bool = False) -> bytes:
    """The Anthropic Messages request the translated cases send (the same prompt)."""
    return json.dumps(
        {"model": model, "max_tokens": 256, "messages": PROMPT, **({"stream": True} if stream else {})}
    ).encode()


def split_body(chunks: int) -> bytes:
    """A stream of ``chunks`` chunks, each SSE event a write of its own at the vendor."""
    return body(f"bench-split-{chunks}", stream=True)


def slow_body(ms: int, stream: bool) -> bytes:
    return body(f"bench-slow-{ms}", stream=stream)


@dataclass(frozen=True)
class Settings:
    name: str
    duration: float  # seconds per throughput run
    latency_duration: float  # seconds per 1-connection latency run
    reps: int
    open_streams: int
    hold_s: float
    soak_s: float
    startup_reps: int
    connections: int = 32
    #: Slow vendor: requests in flight at once, the answer's delay, a stream's spread, waves.
    in_flight: int = 2000
    slow_ms: int = 1000
    spread_ms: int = 10000
    slow_rounds: int = 3


FULL = Settings(
    "full", duration=5, latency_duration=4, reps=3, open_streams=1000, hold_s=10, soak_s=120, startup_reps=3
)
QUICK = Settings(
    "quick",
    duration=2,
    latency_duration=2,
    reps=1,
    open_streams=1000,
    hold_s=6,
    soak_s=20,
    startup_reps=1,
    spread_ms=5000,
    slow_rounds=2,
)
SMOKE = Settings(
    "smoke",
    duration=0.2,
    latency_duration=0.2,
    reps=1,
    open_streams=20,
    hold_s=0.3,
    soak_s=0.4,
    startup_reps=1,
    connections=4,
    in_flight=50,
    slow_ms=200,
    spread_ms=400,
    slow_rounds=1,
)

#: The stream cases: (chunks per stream, connections; 0 = the settings' connections).
STREAM_CASES = ((20, 1), (20, 0), (500, 1), (500, 0))

#: What ``--cases`` can name, so one case can be rerun alone (after a change, say) without the
#: whole run; start-up and idle RSS are measured whatever is chosen (the targets start anyway).
CASES: dict[str, str] = {
    "throughput": "non-streaming and streaming rates, latency, first byte and chunk gaps (the peers run only these)",
    "cache": "the response cache: hits and misses, rate and latency",
    "translated": "aigw's Anthropic API in front of the OpenAI vendor",
    "slow": "2,000 slow requests in flight (the vendor answers after 1 s): RSS peak and trend, open files, records",
    "slowstream": "2,000 slow streams in flight (20 events spread over 10 s; 5 s in --quick)",
    "open": "1,000 streams open at once: RSS",
    "soak": "RSS growth and the records backlog over a long run",
    "scale": "the throughput cases for aigw as two workers and with its limits in Redis",
}


def parse_cases(text: str) -> frozenset[str]:
    """``--cases slow,open``: the names chosen; an unknown name is an error, not a silent full run."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - CASES.keys())
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(CASES)}"
        )
    return names


@dataclass
class Run:
    """One load run against one target."""

    rate: float
    #: Microseconds of the target's CPU (all its processes) per request, or per chunk of a stream.
    cpu_us: float | None
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    ttfb_ms: float | None = None
    gap50_ms: float | None = None
    gap99_ms: float | None = None


@dataclass
class SlowRun:
    """A wave of slow requests in flight at once against one target."""

    sent: int
    errors: int
    p99_ms: float | None
    rss_peak: float
    #: Least-squares RSS trend over the middle of the case (MB/s), and what it comes to over that window.
    rss_slope: float
    rss_growth: float
    fds_peak: int
    records: int | None = None


@dataclass
class Row:
    case: str
    unit: str
    #: ``"rate"`` (higher is better: ratios shown), ``"time"`` (each proxy's figure is shown
    #: as what it adds over *direct*) or ``"size"`` (lower is better).
    kind: str
    values: dict[str, float | None]
    #: Beside a rate: CPU µs per request (or per chunk of a stream) of each target.
    cpu: dict[str, float | None] = field(default_factory=dict)
    #: min and max across the repetitions, where there were several.
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Each target of the row and whether it was met (``None``: not measured in this run).
    checks: list[tuple[str, bool | None]] = field(default_factory=list)

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    def added(self, name: str) -> float | None:
        v, d = self.get(name), self.get(DIRECT)
        return None if v is None or d is None else v - d

    def ratio(self, other: str) -> float | None:
        a, b = self.get(AIGW), self.get(other)
        return None if a is None or not b else a / b

    @property
    def met(self) -> bool | None:
        known = [m for _, m in self.checks if m is not None]
        return None if not known else all(known)


@dataclass
class Report:
    settings: Settings
    load_tool: str
    pinning: str
    machine: str
    load_before: str
    rows: list[Row] = field(default_factory=list)
    requests_total: int = 0
    records_stored: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    soak_samples: list[tuple[float, float]] = field(default_factory=list)
    seconds: float = 0.0
    #: What went wrong beside the table without spoiling it (a peer not installed, a case it failed).
    notes: list[str] = field(default_factory=list)
    #: Every peer and proxy of the run: "ran", or why not.
    targets: dict[str, str] = field(default_factory=dict)

    def row(self, case: str) -> Row:
        return next(r for r in self.rows if r.case == case)


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


#: LiteLLM's proxy took 29-83 s to its first answer on this machine; past this it is left out.
LITELLM_START_S = 300.0
PORTKEY_START_S = 60.0


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


def _slope(samples: list[tuple[float, float]], lo: float, hi: float) -> tuple[float, float]:
    """Least-squares trend (per second) of the samples between ``lo`` and ``hi`` s, and its total over them."""
    pts = [(t, v) for t, v in samples if lo <= t <= hi]
    if len(pts) < 3:
        return 0.0, 0.0
    mt = statistics.fmean(t for t, _ in pts)
    mv = statistics.fmean(v for _, v in pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    slope = sum((t - mt) * (v - mv) for t, v in pts) / den if den else 0.0
    return slope, slope * (pts[-1][0] - pts[0][0])


class TargetFailed(RuntimeError):
    """A target answered none of a case's requests: its cell stays empty, the run goes on."""


@dataclass
class Live:
    """A target of the run: where to send, and the processes whose CPU and memory count."""

    target: Target
    proc: Proc


class Bench:
    def __init__(
        self,
        settings: Settings,
        *,
        use_wrk: bool,
        pin: bool,
        workdir: Path,
        log: Callable[[str], None],
        litellm: str | None = None,
        portkey: Path | None = None,
        nginx: str | None = None,
        chunk_gap_ms: float = 0.0,
        cases: frozenset[str] = frozenset(CASES),
    ) -> None:
        self.s = settings
        self.cases = cases
        self.litellm = litellm
        self.portkey = portkey
        self.nginx = nginx
        self.chunk_gap_ms = chunk_gap_ms
        self.use_wrk = use_wrk
        self.workdir = workdir
        self.log = log
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = pin and len(cpus) >= 2 and shutil.which("taskset") is not None
        #: The proxy under test gets a core of its own; vendor and load generator share the other.
        self.proxy_cpu = cpus[0] if self.pinned else None
        self.aux_cpu = cpus[1] if self.pinned else None
        self.errors: dict[str, int] = {}
        #: case -> target -> the repetitions' runs.
        self.runs: dict[str, dict[str, list[Run]]] = {}
        self.slow: dict[str, dict[str, SlowRun]] = {}
        self.idle: dict[str, float] = {}
        self.startup: dict[str, list[float]] = {}
        self.held: dict[str, float | None] = {}
        #: After the cache cases: the answers aigw's cache held, their MB, and aigw's RSS
        #: before and after the cache was cleared (the slow cases then start from an empty one).
        self.cache_held: tuple[float, float, float, float] | None = None
        self.soak: tuple[float, float, float] | None = None  # growth, backlog, one second of traffic
        #: aigw's own time (``aigw_overhead_seconds``) in the 1-connection latency case: p50, p99 in ms.
        self.own_time: tuple[float | None, float | None] | None = None
        self.notes: list[str] = []
        self.targets: dict[str, str] = {}
        self.failed: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ measuring primitives

    def _load_cpu(self, t: Target) -> int | None:
        return self.proxy_cpu if t.name == DIRECT else self.aux_cpu

    def _count_errors(self, t: Target, n: int) -> None:
        if n:
            self.errors[t.name] = self.errors.get(t.name, 0) + n

    def load(
        self,
        live: Live,
        data: bytes,
        connections: int,
        duration: float,
        *,
        per: int = 1,
        timing: bool = False,
        vary: bytes = b"",
        async_load: bool = False,
    ) -> Run:
        """One load run; ``per`` = chunks per answer (the CPU figure is per chunk then).

        ``vary`` (the async generator's): each request numbers that marker of ``data``;
        ``async_load``: the async generator even when wrk is there."""
        t = live.target
        cpu0 = live.proc.cpu()
        p50 = p99 = ttfb = g50 = g99 = None
        if self.use_wrk and not timing and not vary and not async_load:
            r = wrk.run(t, data, connections, duration, latency=connections == 1, cpu=self._load_cpu(t))
            done, errors, rate = r.requests - r.errors, r.errors, r.rate
            p50, p99 = r.percentiles.get(50), r.percentiles.get(99)
            why = "non-2xx answers or socket errors (wrk)"
        else:
            res = _arun(loadgen.run_load(t, data, connections, duration, timing=timing, vary=vary))
            done, errors, rate = res.requests, res.errors, res.rate
            why = res.first_error
            ms = [x * 1000 for x in res.latencies]
            p50, p99 = _pct(ms, 50), _pct(ms, 99)
            if timing:
                ttfb = _pct([x * 1000 for x in res.ttfbs], 50)
                gaps = [x * 1000 for x in res.gaps]
                g50, g99 = _pct(gaps, 50), _pct(gaps, 99)
        used = live.proc.cpu() - cpu0
        self._count_errors(t, errors)
        if not done:
            raise TargetFailed(f"{t.name} answered none of {errors} requests ({why})")
        cpu_us = used / (done * per) * 1e6
        return Run(rate, cpu_us, errors, p50, p99, ttfb, g50, g99)

    def _case(self, key: str, lives: list[Live], fn: Callable[[Live], Run]) -> None:
        """``reps`` rounds, each over every target in turn (so drift hits all alike).

        A target that fails a case is left out of the rest of its group (the stream
        cases are one group): a peer that cannot stream is said once, not four times."""
        out = self.runs.setdefault(key, {})
        group = "stream" if key.startswith("s") and key[1:2].isdigit() else key
        for _ in range(self.s.reps):
            for lv in lives:
                name = lv.target.name
                if (name, group) in self.failed:
                    continue
                try:
                    out.setdefault(name, []).append(fn(lv))
                except (RuntimeError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    out.pop(name, None)
                    self.failed.add((name, group))
                    self._note(f"{name}: {group} case(s) left out: {str(exc)[:300]}")

    def _note(self, text: str) -> None:
        self.notes.append(text)
        self.log(text)

    # ------------------------------------------------------------ the cases

    def throughput_cases(self, lives: list[Live], gw: Gateway | None = None) -> None:
        """``gw``: aigw's store, whose ``/metrics`` says what its own time was in the latency case."""
        s, n = self.s, self.s.connections
        self.log(f"non-streaming, {n} connections")
        self._case("ns", lives, lambda lv: self.load(lv, BODY, n, s.duration))
        self.log("non-streaming, 1 connection: latency")
        before = gw.overhead_buckets() if gw is not None else None
        self._case("lat", lives, lambda lv: self.load(lv, BODY, 1, s.latency_duration))
        if gw is not None and before:
            after = gw.overhead_buckets()
            delta = [(le, b - a) for (le, b), (_, a) in zip(after, before, strict=True)]
            self.own_time = (_hist_quantile(delta, 0.5), _hist_quantile(delta, 0.99))
        for chunks, conns in STREAM_CASES:
            c = conns or n
            self.log(f"streaming {chunks} chunks (one write per event), {c} connection{'s' if c > 1 else ''}")
            self._case(
                f"s{chunks}x{conns}",
                lives,
                lambda lv, chunks=chunks, c=c: self.load(
                    lv,
                    split_body(chunks),
                    c,
                    s.duration if c > 1 else s.latency_duration,
                    per=chunks + 1,  # the content chunks and [DONE]
                    timing=c == 1,
                ),
            )

    def cache_cases(self, direct: Live, cached: Live) -> None:
        """The response cache: every request answered from it (one body, over and over), or
        none (each body new, so each one is looked up, relayed and stored), beside *direct*
        under the same load. Both with the async generator: a new body per request is
        beyond wrk's fixed one."""
        s, n = self.s, self.s.connections
        self.log(f"response cache, non-streaming, {n} connections: hits, then misses")
        self._case("cache-hit", [direct, cached], lambda lv: self.load(lv, BODY, n, s.duration, async_load=True))
        self._case("cache-miss", [direct, cached], lambda lv: self.load(lv, MISS_BODY, n, s.duration, vary=VARY))
        self.log("response cache, 1 connection: latency of a hit, then of a miss")
        self._case(
            "cache-hit-lat", [direct, cached], lambda lv: self.load(lv, BODY, 1, s.latency_duration, async_load=True)
        )
        self._case(
            "cache-miss-lat", [direct, cached], lambda lv: self.load(lv, MISS_BODY, 1, s.latency_duration, vary=VARY)
        )

    def _empty_cache(self, gw: Gateway, aigw: Proc) -> None:
        """Note what the cache cases left in aigw's cache, then clear it (the admin's
        ``/cache/clear``): the cached answers are kept as configured (``cache_max_mb``), and
        would otherwise count as memory of the slow cases' requests in flight."""
        try:
            entries, held = gw.metric("aigw_cache_entries"), gw.metric("aigw_cache_bytes") / 1e6
            before = aigw.rss()
            gw.clear_cache()
            time.sleep(0.5)  # let the freed answers go back before the next reading
            self.cache_held = (entries, held, before, aigw.rss())
        except (OSError, KeyError, RuntimeError) as exc:
            self._note(f"aigw: the response cache could not be read or cleared ({exc})")

    def translated_cases(self, aigw: Live) -> None:
        """aigw's Anthropic API in front of the same OpenAI vendor: what translating costs
        beside passing through, measured in the same run as the passthrough cases."""
        s, n = self.s, self.s.connections
        lv = Live(replace(aigw.target, path=MESSAGES_PATH), aigw.proc)
        for data, per in ((messages_body("bench-model"), 1), (messages_body("bench-split-20", True), 21)):
            try:  # warm-up: the translated code paths
                self.load(lv, data, n, min(1.0, s.duration), per=per)
            except TargetFailed as exc:
                self._note(f"aigw translated: warm-up failed ({exc})")
        self.log(f"translated (Anthropic client → OpenAI vendor): non-streaming and 20-chunk streams, {n} connections")
        self._case("tr", [lv], lambda lv: self.load(lv, messages_body("bench-model"), n, s.duration))
        self._case("trs", [lv], lambda lv: self.load(lv, messages_body("bench-split-20", True), n, s.duration, per=21))

    def slow_cases(self, lives: list[Live], gw: Gateway) -> None:
        s = self.s
        for key, data, rounds in (
            ("slow", slow_body(s.slow_ms, False), s.slow_rounds),
            ("slowstream", slow_body(s.spread_ms, True), 1),
        ):
            if key not in self.cases:
                continue
            self.log(f"slow vendor ({key}): {s.in_flight} requests in flight, {rounds} wave(s)")
            out = self.slow.setdefault(key, {})
            for lv in lives:
                try:
                    out[lv.target.name] = self._slow_one(lv, data, rounds, gw if lv.target.name == AIGW else None)
                except (RuntimeError, OSError) as exc:
                    self._note(f"{lv.target.name}: {key} left out: {str(exc)[:300]}")

    def _slow_one(self, lv: Live, data: bytes, rounds: int, gw: Gateway | None) -> SlowRun:
        before = self._settled_records(gw, None) if gw else 0
        samples: list[tuple[float, float, int]] = []
        stop = threading.Event()
        start = time.perf_counter()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter() - start, lv.proc.rss(), lv.proc.fds()))
                stop.wait(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        try:
            res = _arun(loadgen.run_load(lv.target, data, self.s.in_flight, 0.0, rounds=rounds))
        finally:
            stop.set()
            th.join(5)
        sent = self.s.in_flight * rounds
        errors = sent - res.requests
        self._count_errors(lv.target, errors)
        took = time.perf_counter() - start
        slope, growth = _slope([(t, r) for t, r, _ in samples], 0.25 * took, 0.9 * took)
        records = self._settled_records(gw, before + sent) - before if gw else None
        return SlowRun(
            sent,
            errors,
            _pct([x * 1000 for x in res.latencies], 99),
            max((r for _, r, _ in samples), default=0.0),
            slope,
            growth,
            max((f for _, _, f in samples), default=0),
            records,
        )

    def _settled_records(self, gw: Gateway, expected: int | None) -> int:
        """Records in the store once the writer has caught up (``expected`` reached, or it stopped growing)."""
        deadline = time.monotonic() + max(10.0, self.s.slow_ms / 100)
        last = -1
        while True:
            n = gw.stored_records()
            if (expected is not None and n >= expected) or (n == last and gw.metric("aigw_records_pending") == 0):
                return n
            if time.monotonic() > deadline:
                return n
            last = n
            time.sleep(0.2)

    def open_streams(self, lives: list[Live]) -> None:
        s = self.s
        self.log(f"{s.open_streams} streams open at once")
        hold = body("bench-model", stream=True, bench_hold_s=s.hold_s)
        for lv in lives:

            async def sample(p: Proc = lv.proc) -> float:
                return p.rss()

            res = _arun(loadgen.hold_streams(lv.target, hold, s.open_streams, sample))
            ok = res.max_open == s.open_streams and res.completed == s.open_streams
            if not ok:
                self._count_errors(lv.target, s.open_streams - min(res.max_open, res.completed))
            self.held[lv.target.name] = res.sampled if ok else None
            self.log(
                f"  {lv.target.name}: {res.max_open} open at once after {res.all_open_after:.2f} s, "
                f"{res.completed} completed, RSS {res.sampled:.1f} MB"
            )

    def soak_case(self, lv: Live, gw: Gateway, report: Report) -> None:
        s, n = self.s, self.s.connections
        self.log(f"memory over a {s.soak_s:g} s run (aigw, streaming and non-streaming)")
        start = time.perf_counter()
        samples = [(0.0, lv.proc.rss())]
        slice_s = min(5.0, s.soak_s)
        i, backlog, rates = 0, 0.0, []
        while time.perf_counter() - start < s.soak_s:
            data, per = (split_body(20), 21) if i % 2 else (BODY, 1)
            rates.append(self.load(lv, data, n, slice_s, per=per).rate)
            samples.append((time.perf_counter() - start, lv.proc.rss()))
            backlog = max(backlog, gw.metric("aigw_records_pending"))  # right after the load, near its peak
            i += 1
        report.soak_samples = samples
        half = [rss for t, rss in samples if t >= s.soak_s / 2] or [samples[-1][1]]
        self.soak = (samples[-1][1] - half[0], backlog, min(rates) if rates else 0.0)

    # ------------------------------------------------------------ the run

    def _warm(self, lv: Live) -> None:
        d = min(1.0, self.s.duration)
        for data, per in ((BODY, 1), (split_body(20), 21)):
            try:
                self.load(lv, data, self.s.connections, d, per=per)
            except TargetFailed as exc:
                self._note(f"{lv.target.name}: warm-up failed ({exc})")

    def _start_optional(self, name: str, start: Callable[[], Proc], path: str, key: str | None) -> Proc | None:
        try:
            p = start()
        except OSError as exc:
            self.targets[name] = f"could not start: {exc}"
            return None
        try:
            p.wait_answer(path, BODY, key)
        except RuntimeError as exc:
            p.stop()
            self.targets[name] = f"did not come up: {str(exc)[:300]}"
            self._note(f"{name} left out: {self.targets[name]}")
            return None
        self.targets[name] = "ran"
        return p

    def run(self, report: Report) -> None:
        s = self.s
        t0 = time.perf_counter()
        upstream = start_upstream(self.workdir, self.aux_cpu, self.chunk_gap_ms)
        gw = Gateway(self.workdir, upstream)
        key = gw.key
        procs: list[Proc] = [upstream]
        try:
            self.log("start-up: bare relay and aigw, until the first answer")
            relay = aigw = None
            for i in range(s.startup_reps):
                relay = start_relay(self.workdir, upstream, self.proxy_cpu)
                self.startup.setdefault(RELAY, []).append(relay.wait_answer(API_PATH, BODY, key))
                if i < s.startup_reps - 1:
                    relay.stop()
            for i in range(s.startup_reps):
                aigw = gw.start(self.proxy_cpu)
                self.startup.setdefault(AIGW, []).append(aigw.wait_answer(API_PATH, BODY, key))
                if i < s.startup_reps - 1:
                    aigw.stop()
            assert relay is not None and aigw is not None
            procs += [relay, aigw]
            self.targets.update({DIRECT: "ran", RELAY: "ran", AIGW: "ran"})
            lives = [Live(Target(DIRECT, "127.0.0.1", upstream.port, API_PATH, key), upstream)]
            if self.nginx:
                ng = self._start_optional(
                    NGINX, lambda: start_nginx(self.workdir, upstream, self.proxy_cpu, self.nginx or ""), API_PATH, key
                )
                if ng:
                    procs.append(ng)
                    lives.append(Live(Target(NGINX, "127.0.0.1", ng.port, API_PATH, key), ng))
            else:
                self.targets[NGINX] = "not installed (apt-get install nginx)"
            raw = self._start_optional(
                RAW, lambda: start_raw_relay(self.workdir, upstream, self.proxy_cpu), API_PATH, key
            )
            if raw:
                procs.append(raw)
                lives.append(Live(Target(RAW, "127.0.0.1", raw.port, API_PATH, key), raw))
            lives += [
                Live(Target(RELAY, "127.0.0.1", relay.port, API_PATH, key), relay),
                Live(Target(AIGW, "127.0.0.1", aigw.port, API_PATH, key), aigw),
            ]
            for lv in lives:  # warm-up: connection pools, code paths
                self._warm(lv)
            time.sleep(1.0 if s.name != "smoke" else 0.2)
            self.idle.update({lv.target.name: lv.proc.rss() for lv in lives})
            want = self.cases.__contains__
            if want("throughput"):
                self.throughput_cases(lives, gw)
            if want("cache"):
                cached = Live(Target(AIGW, "127.0.0.1", aigw.port, CACHED_PATH, key), aigw)
                _arun(loadgen.run_load(cached.target, BODY, 1, 0.0, rounds=1))  # the one miss, stored for the hits
                self.cache_cases(lives[0], cached)
                self._empty_cache(gw, aigw)
            if want("translated"):
                self.translated_cases(lives[-1])
            self.slow_cases(lives, gw)
            if want("open"):
                self.open_streams([lv for lv in lives if lv.target.name != DIRECT])
            if want("soak"):
                self.soak_case(lives[-1], gw, report)
            report.requests_total = int(gw.health().get("requests_total", 0))  # type: ignore[call-overload]
            for p in procs[1:]:
                p.stop()
            if want("scale"):
                self._scale_out(upstream)
            if want("throughput"):
                self._peers(upstream, key)
            else:
                for name in (LITELLM, PORTKEY):
                    self.targets[name] = "not run: its cases (throughput) not chosen"
        finally:
            for p in reversed(procs):
                p.stop()
        report.records_stored = gw.stored_records()
        report.seconds = time.perf_counter() - t0

    def _scale_out(self, upstream: Proc) -> None:
        """The throughput cases again for aigw as two workers and with its limits in Redis
        (a store of their own: the main run's record count stays its own)."""
        workdir = self.workdir / "scale"
        workdir.mkdir(exist_ok=True)
        sgw = Gateway(workdir, upstream)
        started: list[Any] = []
        lives: list[Live] = []
        try:
            w2 = self._start_optional(AIGW_W2, lambda: sgw.start(self.proxy_cpu, "--workers", "2"), API_PATH, sgw.key)
            if w2:
                started.append(w2)
                lives.append(Live(Target(AIGW_W2, "127.0.0.1", w2.port, API_PATH, sgw.key), w2))
            if shutil.which("redis-server"):
                redis = RedisProc(workdir, self.aux_cpu)
                started.append(redis)
                redis.wait_ping()
                rg = self._start_optional(
                    AIGW_REDIS, lambda: sgw.start(self.proxy_cpu, "--redis-url", redis.url), API_PATH, sgw.key
                )
                if rg:
                    started.append(rg)
                    joined = Joined(rg, redis)
                    lives.append(Live(Target(AIGW_REDIS, "127.0.0.1", rg.port, API_PATH, sgw.key), joined))  # type: ignore[arg-type]
            else:
                self.targets[AIGW_REDIS] = "not installed (apt-get install redis-server)"
            for lv in lives:
                self._warm(lv)
            if lives:
                self.log("aigw as more than one process: " + ", ".join(lv.target.name for lv in lives))
                self.throughput_cases(lives)
        finally:
            for p in reversed(started):
                p.stop()

    def _peers(self, upstream: Proc, key: str) -> None:
        if self.litellm:
            models = ["bench-model", *(f"bench-split-{c}" for c, _ in STREAM_CASES)]
            self._peer_phase(
                LITELLM,
                lambda: start_litellm(self.workdir, upstream, self.proxy_cpu, self.litellm or "", key, models),
                Target(LITELLM, "127.0.0.1", 0, LITELLM_PATH, key),
                LITELLM_START_S,
                {},
            )
        else:
            self.targets[LITELLM] = "not asked (--litellm EXE)"
        node = shutil.which("node")
        if self.portkey is None:
            self.targets[PORTKEY] = (
                f"not installed (npm install @portkey-ai/gateway in {PORTKEY_DIR}, or --portkey DIR)"
            )
        elif node is None:
            self.targets[PORTKEY] = "not run: no `node` on PATH"
        else:
            folder, hdrs = self.portkey, portkey_headers(upstream)
            extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items())
            self._peer_phase(
                PORTKEY,
                lambda: start_portkey(self.workdir, folder, self.proxy_cpu, node),
                Target(PORTKEY, "127.0.0.1", 0, PORTKEY_PATH, key, extra),
                PORTKEY_START_S,
                hdrs,
            )

    def _peer_phase(
        self, name: str, start: Callable[[], Proc], proto: Target, timeout: float, headers: dict[str, str]
    ) -> None:
        """A peer's cases in a phase of its own; if it never comes up, its columns stay empty and ours are kept."""
        self.log(f"{name}: start-up, then its cases")
        p = start()
        try:
            try:
                up = p.wait_answer(proto.path, BODY, proto.key, timeout=timeout, headers=headers)
            except RuntimeError as exc:  # the work directory goes with the run: keep the log's end
                tail = p.log.read_text(errors="replace").strip().splitlines()[-3:]
                self.targets[name] = f"did not come up: {exc}; its log ended: {' | '.join(tail) or '(empty)'}"
                self._note(f"{name} left out: {self.targets[name]}")
                return
            self.targets[name] = "ran"
            self.startup[name] = [up]
            lv = Live(Target(name, proto.host, p.port, proto.path, proto.key, proto.headers), p)
            self._warm(lv)
            time.sleep(1.0 if self.s.name != "smoke" else 0.2)
            self.idle[name] = p.rss()
            self.throughput_cases([lv])
        finally:
            p.stop()

    # ------------------------------------------------------------ the rows

    def rows(self) -> list[Row]:
        """The table's rows: those of the cases chosen (``--cases``), and start-up and idle RSS."""
        s, n = self.s, self.s.connections
        out: list[Row] = []
        #: (index of the first row, the case it belongs to; "" = always shown), in order.
        marks: list[tuple[int, str]] = []

        def section(case: str) -> None:
            marks.append((len(out), case))

        section("throughput")

        def per_target(key: str, pick: Callable[[Run], float | None]) -> tuple[dict[str, float | None], dict]:
            vals: dict[str, float | None] = {}
            spread: dict[str, tuple[float, float]] = {}
            for name, runs in self.runs.get(key, {}).items():
                xs = [x for x in (pick(r) for r in runs) if x is not None]
                vals[name] = _median(xs)
                if len(xs) > 1:
                    spread[name] = (min(xs), max(xs))
            return vals, spread

        def rate_row(
            case: str, unit: str, key: str, cpu_unit: str, own: list[tuple[str, Callable[[Row], bool | None]]]
        ):
            vals, spread = per_target(key, lambda r: r.rate)
            cpu, _ = per_target(key, lambda r: r.cpu_us)
            row = Row(case, f"{unit} (CPU µs/{cpu_unit})", "rate", vals, cpu, spread)
            for text, check in [
                *own,
                ("≥ 10× LiteLLM", lambda r: _ge(r.ratio(LITELLM), 10.0)),
                ("≥ 5× Portkey", lambda r: _ge(r.ratio(PORTKEY), 5.0)),
            ]:
                row.checks.append((text, check(row)))
            out.append(row)
            return row

        def time_row(case: str, key: str, pick: Callable[[Run], float | None], limit: float | None) -> None:
            vals, spread = per_target(key, pick)
            row = Row(case, "ms (proxies: added over direct)", "time", vals, spread=spread)
            if limit is not None:
                row.checks.append((f"added ≤ {limit:g} ms", _le(row.added(AIGW), limit)))
            out.append(row)

        relay_x = ("≥ 1.5× bare relay", lambda r: _ge(r.ratio(RELAY), 1.5))
        cpu_le = ("CPU/chunk ≤ bare relay's", lambda r: _le(r.cpu.get(AIGW), r.cpu.get(RELAY) or None))
        rate_row(f"non-streaming, {n} connections", "req/s", "ns", "req", [relay_x])
        time_row("latency p50, 1 connection", "lat", lambda r: r.p50_ms, 0.3)
        time_row("latency p99, 1 connection", "lat", lambda r: r.p99_ms, 1.0)
        if self.own_time is not None:  # beside what the client saw added: what aigw says it spent
            for q, v in zip(("p50", "p99"), self.own_time, strict=True):
                out.append(Row(f"aigw's own time {q}, 1 connection (aigw_overhead_seconds)", "ms", "size", {AIGW: v}))
        for chunks, conns in STREAM_CASES:
            c = conns or n
            own = [relay_x, cpu_le] if conns == 0 else [cpu_le]
            rate_row(
                f"stream {chunks} chunks, {c} connection{'s' if c > 1 else ''}",
                "streams/s",
                f"s{chunks}x{conns}",
                "chunk",
                own,
            )
        section("cache")
        cache_rows: dict[str, Row] = {}
        for key, label in (("cache-hit", "response cache hit"), ("cache-miss", "response cache miss")):
            vals, spread = per_target(key, lambda r: r.rate)
            cpu, _ = per_target(key, lambda r: r.cpu_us)
            cache_rows[key] = Row(f"{label}, {n} connections", "req/s (CPU µs/req)", "rate", vals, cpu, spread)
        hit, miss = cache_rows["cache-hit"], cache_rows["cache-miss"]
        hit.checks.append(("≥ cache miss", _ge(hit.get(AIGW), miss.get(AIGW))))
        out += [hit, miss]
        if self.cache_held is not None:
            entries, held, before, after = self.cache_held
            out.append(Row("response cache after its cases: answers held", "answers", "size", {AIGW: entries}))
            out.append(Row("response cache after its cases: MB held (of a 64 MB budget)", "MB", "size", {AIGW: held}))
            out.append(Row("aigw RSS holding that cache", "MB", "size", {AIGW: before}))
            out.append(Row("aigw RSS after /cache/clear (the slow cases start here)", "MB", "size", {AIGW: after}))
        for key, label in (("cache-hit-lat", "response cache hit"), ("cache-miss-lat", "response cache miss")):
            time_row(f"{label} latency p50, 1 connection", key, lambda r: r.p50_ms, None)
            time_row(f"{label} latency p99, 1 connection", key, lambda r: r.p99_ms, None)
        section("throughput")
        time_row("stream first byte p50 (20 chunks)", "s20x1", lambda r: r.ttfb_ms, 0.3)
        time_row("gap between chunks p50 (500 chunks)", "s500x1", lambda r: r.gap50_ms, None)
        time_row("gap between chunks p99 (500 chunks)", "s500x1", lambda r: r.gap99_ms, None)
        section("translated")
        for key, plain_key, what, unit, per in (
            ("tr", "ns", "non-streaming", "req/s", "req"),
            ("trs", "s20x0", "stream 20 chunks", "streams/s", "chunk"),
        ):
            vals, spread = per_target(key, lambda r: r.rate)
            cpu, _ = per_target(key, lambda r: r.cpu_us)
            plain, _ = per_target(plain_key, lambda r: r.rate)
            row = Row(
                f"translated {what} (Anthropic client → OpenAI vendor), {n} connections",
                f"{unit} (CPU µs/{per})",
                "rate",
                vals,
                cpu,
                spread,
            )
            t, p = row.get(AIGW), plain.get(AIGW)
            row.checks.append(("≥ 50% of aigw passing through", None if t is None or not p else t / p >= 0.5))
            out.append(row)

        for key, label in (
            ("slow", f"slow vendor ({s.slow_ms} ms), {s.in_flight} in flight"),
            ("slowstream", f"slow stream (over {s.spread_ms} ms), {s.in_flight} in flight"),
        ):
            section(key)
            runs = self.slow.get(key, {})

            def col(pick: Callable[[SlowRun], float | None], rs: dict[str, SlowRun] = runs) -> dict[str, float | None]:
                return {name: pick(r) for name, r in rs.items()}

            r = Row(f"{label}: failed requests", "requests", "size", col(lambda x: float(x.errors)))
            r.checks.append(("0", None if r.get(AIGW) is None else r.get(AIGW) == 0))
            out.append(r)
            out.append(Row(f"{label}: p99", "ms (proxies: added over direct)", "time", col(lambda x: x.p99_ms)))
            r = Row(f"{label}: RSS peak", "MB", "size", col(lambda x: x.rss_peak))
            r.checks.append(("≤ 150 MB", _le(r.get(AIGW), 150.0)))
            out.append(r)
            r = Row(f"{label}: RSS trend", "MB/s", "size", col(lambda x: x.rss_slope))
            grown = runs[AIGW].rss_growth if AIGW in runs else None
            r.checks.append((f"flat (≤ 2 MB over the case; aigw {_fmt(grown, 'MB')})", _le(grown, 2.0)))
            out.append(r)
            out.append(Row(f"{label}: open files peak", "fds", "size", col(lambda x: float(x.fds_peak))))
            r = Row(
                f"{label}: request records stored",
                "records",
                "size",
                col(lambda x: None if x.records is None else float(x.records)),
            )
            r.checks.append((f"= requests sent ({s.in_flight * (s.slow_rounds if key == 'slow' else 1):,})", None))
            if AIGW in runs and runs[AIGW].records is not None:
                r.checks[-1] = (r.checks[-1][0], runs[AIGW].records == runs[AIGW].sent)
            out.append(r)

        section("open")
        r = Row(f"{s.open_streams} open streams: RSS", "MB", "size", dict(self.held))
        r.checks.append(("≤ 150 MB", _le(r.get(AIGW), 150.0)))
        out.append(r)
        section("")
        r = Row("idle RSS", "MB", "size", {k: v for k, v in self.idle.items() if k != DIRECT})
        r.checks.append(("≤ 80 MB", _le(r.get(AIGW), 80.0)))
        out.append(r)
        vals = {k: _median(v) for k, v in self.startup.items()}
        spread = {k: (min(v), max(v)) for k, v in self.startup.items() if len(v) > 1}
        r = Row("start-up until the first answer", "s", "size", vals, spread=spread)
        r.checks.append(("≤ 1.5 s", _le(r.get(AIGW), 1.5)))
        out.append(r)
        section("soak")
        if self.soak is not None:
            growth, backlog, second = self.soak
            r = Row(f"RSS growth, 2nd half of a {s.soak_s:g} s run", "MB", "size", {AIGW: growth})
            r.checks.append(("flat (≤ 2 MB)", growth <= 2.0))
            out.append(r)
            # The record writer keeping up: a backlog that grows is memory that grows, then records
            # dropped (the buffer is bounded). One second of traffic is what a healthy writer holds.
            r = Row("records waiting to be written, at most", "records", "size", {AIGW: backlog})
            r.checks.append((f"≤ 1 s of traffic ({second:,.0f})", backlog <= second))
            out.append(r)
        keep: list[Row] = []
        for (start, case), (end, _) in zip(marks, [*marks[1:], (len(out), "")], strict=True):
            if not case or case in self.cases:
                keep += out[start:end]
        return keep


def _hist_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile in ms of a Prometheus histogram's cumulative (le, count) buckets,
    interpolated inside its bucket as ``histogram_quantile`` does (``+Inf``: the last bound)."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return None
    rank, lo, below = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return lo * 1000
            return (lo + (le - lo) * (rank - below) / (count - below)) * 1000 if count > below else le * 1000
        lo, below = le, count
    return lo * 1000


def _ge(v: float | None, lo: float) -> bool | None:
    return None if v is None else v >= lo


def _le(v: float | None, hi: float | None) -> bool | None:
    return None if v is None or hi is None else v <= hi


# ------------------------------------------------------------------ output


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    u = unit.split(" ")[0]
    if u in ("req/s", "streams/s", "records", "requests", "fds"):
        return f"{v:,.0f}"
    if u in ("MB", "MB/s"):
        return f"{v:.1f}" if u == "MB" else f"{v:+.2f}"
    if u == "s":
        return f"{v:.2f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"


def _cell(r: Row, name: str) -> str:
    v = r.get(name)
    if v is None:
        return "—"
    if r.kind == "time" and name != DIRECT:
        added = r.added(name)
        return f"+{_fmt(added, r.unit)}".replace("+-", "−") if added is not None else _fmt(v, r.unit)
    text = _fmt(v, r.unit)
    cpu = r.cpu.get(name)
    return f"{text} ({cpu:,.0f} µs)" if r.kind == "rate" and cpu is not None else text


def table(report: Report) -> str:
    head = ["case", "unit", *COLUMNS, "aigw/relay", "aigw/LiteLLM", "aigw/Portkey", "target", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        ratios = []
        for other in (RELAY, LITELLM, PORTKEY):
            x = r.ratio(other)
            ratios.append(f"{x:.2f}" if x is not None and r.kind == "rate" else "—")
        met = " · ".join({True: "yes", False: "**no**", None: "—"}[m] for _, m in r.checks) or "—"
        cells = [r.case, r.unit, *(_cell(r, c) for c in COLUMNS), *ratios, "; ".join(t for t, _ in r.checks), met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spread_text(report: Report) -> str:
    """min–max across the repetitions beside each median of the table."""
    if report.settings.reps < 2:
        return "spread: one repetition per case in this mode (none to show)"
    out = [f"spread across {report.settings.reps} repetitions (min–max):"]
    for r in report.rows:
        if r.spread:
            cells = ", ".join(f"{k} {_fmt(a, r.unit)}–{_fmt(b, r.unit)}" for k, (a, b) in r.spread.items())
            out.append(f"  {r.case}: {cells}")
    return "\n".join(out)


def summary(report: Report) -> str:
    s = report.settings
    errs = ", ".join(f"{k}: {v}" for k, v in report.errors.items()) or "none"
    return "\n".join(
        [
            f"machine: {report.machine}; load average before: {report.load_before}",
            f"mode: {s.name} (medians of {s.reps} run(s), {s.duration:g} s each; 1-connection runs "
            f"{s.latency_duration:g} s; slow vendor: {s.in_flight} in flight); load: {report.load_tool}; "
            f"{report.pinning}",
            "targets: " + "; ".join(f"{k}: {v}" for k, v in report.targets.items()),
            f"aigw requests_total {report.requests_total}, request records stored "
            f"{report.records_stored}; failed requests: {errs}; took {report.seconds:.0f} s",
            *report.notes,
        ]
    )


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0))
    return (
        f"{model or platform.processor() or '?'}, {os.cpu_count()} CPU(s) ({usable} usable), "
        f"{platform.system()} {platform.release()}, Python {sys.version.split()[0]}; "
        f"aigw's request path {native.HOW}"  # the gateway it starts imports the same install
    )


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run(
    settings: Settings,
    *,
    use_wrk: bool | None = None,
    pin: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    litellm: str | None = None,
    portkey: Path | None = None,
    nginx: str | None = None,
    chunk_gap_ms: float = 0.0,
    cases: frozenset[str] = frozenset(CASES),
) -> Report:
    """Run every case chosen (all by default) once through; the report holds the table's rows."""
    use = wrk.available() if use_wrk is None else use_wrk and wrk.available()
    # Each of the slow vendor's requests is a socket here and two in a proxy; children inherit the limit.
    files = loadgen.raise_open_files(4 * settings.in_flight + 1024)
    with tempfile.TemporaryDirectory(prefix="aigw-bench-") as tmp:
        bench = Bench(
            settings,
            use_wrk=use,
            pin=pin,
            workdir=Path(tmp),
            log=log,
            litellm=litellm,
            portkey=portkey,
            nginx=nginx,
            chunk_gap_ms=chunk_gap_ms,
            cases=cases,
        )
        pinning = (
            f"pinned with taskset: proxy under test on CPU {bench.proxy_cpu}, vendor and load "
            f"generator on CPU {bench.aux_cpu}" + (f" (wrk on CPU {bench.proxy_cpu} for direct)" if use else "")
            if bench.pinned
            else "not pinned"
        )
        report = Report(
            settings,
            ("wrk (1 thread)" if use else "async generator (tests/bench/loadgen.py)")
            + "; streams at 1 connection and the slow vendor: the async generator"
            + f"; open files limit {files}"
            + (f"; vendor gap between chunks {chunk_gap_ms:g} ms" if chunk_gap_ms else ""),
            pinning,
            _machine(),
            _loadavg(),
        )
        if bench.pinned:
            os.sched_setaffinity(0, {bench.aux_cpu})  # type: ignore[arg-type]
        try:
            bench.run(report)
        finally:
            if bench.pinned:
                os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            report.rows = bench.rows()
            report.errors = bench.errors
            report.notes = bench.notes
            report.targets = {c: bench.targets.get(c, "not run") for c in COLUMNS}
    return report


def find_portkey(arg: str | None) -> Path | None:
    """The folder given (``--portkey DIR``), else the documented default when Portkey is installed there."""
    folder = Path(arg) if arg else PORTKEY_DIR
    return folder if (folder / PORTKEY_ENTRY).is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one short repetition of each case (a few minutes)")
    mode.add_argument("--smoke", action="store_true", help="seconds: proves the benchmark works")
    p.add_argument("--async-load", action="store_true", help="use the async generator even if wrk exists")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--soak", type=float, help="seconds of the memory run (default 120, quick 20)")
    p.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    p.add_argument(
        "--chunk-gap-ms", type=float, default=0.0, help="the vendor sleeps this long between stream events (default 0)"
    )
    p.add_argument(
        "--litellm",
        nargs="?",
        const="litellm",
        metavar="EXE",
        help="also run LiteLLM's proxy (its `litellm` command; install it apart: pip install 'litellm[proxy]')",
    )
    p.add_argument(
        "--portkey",
        metavar="DIR",
        help=f"a folder where `npm install @portkey-ai/gateway` was run (default: {PORTKEY_DIR} when present)",
    )
    p.add_argument("--no-portkey", action="store_true", help="leave Portkey out even when installed")
    p.add_argument("--no-nginx", action="store_true", help="leave nginx out even when on PATH")
    p.add_argument(
        "--cases",
        type=parse_cases,
        default=frozenset(CASES),
        metavar="NAME,...",
        help="run only these cases (default: all; start-up and idle RSS always): "
        + "; ".join(f"{k}: {v}" for k, v in CASES.items()),
    )
    args = p.parse_args(argv)
    exe = None
    if args.litellm:
        exe = shutil.which(args.litellm)
        if exe is None:
            print(
                f"python -m tests.bench: error: {args.litellm!r} not found; install LiteLLM "
                "(pip install 'litellm[proxy]') or pass its path",
                file=sys.stderr,
            )
            return 2
    portkey = None if args.no_portkey else find_portkey(args.portkey)
    if args.portkey and portkey is None:
        print(
            f"python -m tests.bench: error: no {PORTKEY_ENTRY} under {args.portkey}; "
            "run `npm install @portkey-ai/gateway` in that folder",
            file=sys.stderr,
        )
        return 2
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.soak:
        settings = Settings(**{**asdict(settings), "soak_s": args.soak})
    report = run(
        settings,
        use_wrk=not args.async_load and not args.smoke,
        pin=not args.no_pin,
        litellm=exe,
        portkey=portkey,
        nginx=None if args.no_nginx else shutil.which("nginx"),
        chunk_gap_ms=args.chunk_gap_ms,
        cases=args.cases,
    )
    print(table(report))
    print()
    print(spread_text(report))
    print()
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0
