"""The benchmark: direct to the vendor, a bare aiohttp relay and ``aigw serve``, case by case.

``python -m tests.bench [--quick | --smoke] [--litellm [EXE]] [--async-load] [--no-pin] [--soak S] [--json FILE]``

Each case runs against the three targets with the same vendor and load generator and
the table shows medians of the repetitions and the ratios. The gateway runs with its
real configuration: a consumer key (authentication), a group grant (authorization),
requests/tokens per minute and a token quota high enough never to refuse (traffic
control counts every request), prices (cost accounting) and request records.

With ``--litellm`` LiteLLM's proxy (its own install, 2 workers, no database, its master
key set to the benchmark's key) runs the throughput, latency, time-to-first-byte,
idle-memory and start-up cases in front of the same vendor, on the same core, in a phase
of its own after ours (its workers stay busy when idle), as a fourth column.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import loadgen, wrk
from .loadgen import Target
from .procs import API_PATH, LITELLM_PATH, Gateway, Proc, start_litellm, start_relay, start_upstream

T = TypeVar("T")

PROMPT = [{"role": "user", "content": "Hello, please introduce yourself."}]
BODY = json.dumps({"model": "bench-model", "messages": PROMPT}).encode()
STREAM_BODY = json.dumps({"model": "bench-model", "messages": PROMPT, "stream": True}).encode()


@dataclass(frozen=True)
class Settings:
    name: str
    duration: float  # seconds per throughput run
    latency_duration: float  # seconds per 1-connection latency run
    reps: int
    ttfb_streams: int
    open_streams: int
    hold_s: float
    soak_s: float
    startup_reps: int
    connections: int = 32


FULL = Settings(
    "full",
    duration=5,
    latency_duration=4,
    reps=3,
    ttfb_streams=300,
    open_streams=1000,
    hold_s=10,
    soak_s=120,
    startup_reps=3,
)
QUICK = Settings(
    "quick",
    duration=2,
    latency_duration=2,
    reps=1,
    ttfb_streams=100,
    open_streams=1000,
    hold_s=6,
    soak_s=20,
    startup_reps=1,
)
SMOKE = Settings(
    "smoke",
    duration=0.5,
    latency_duration=0.5,
    reps=1,
    ttfb_streams=10,
    open_streams=20,
    hold_s=3.0,
    soak_s=1.0,
    startup_reps=1,
    connections=4,
)


@dataclass
class Row:
    case: str
    unit: str
    direct: float | None
    relay: float | None
    aigw: float | None
    #: ``"rate"`` (higher is better: ratios shown) or ``"time"``/``"size"`` (lower is better).
    kind: str
    target: str = ""
    met: bool | None = None
    #: LiteLLM's proxy, when the run included it (``--litellm``).
    litellm: float | None = None

    @property
    def added(self) -> float | None:
        if self.kind == "time" and self.direct is not None and self.aigw is not None:
            return self.aigw - self.direct
        return None

    def ratio(self, other: float | None) -> float | None:
        if self.aigw is None or not other:
            return None
        return self.aigw / other


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
    #: What went wrong beside the table without spoiling it (e.g. LiteLLM never started).
    notes: list[str] = field(default_factory=list)

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


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100.0 * len(s)))]


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
    ) -> None:
        self.s = settings
        self.litellm = litellm
        self.use_wrk = use_wrk
        self.workdir = workdir
        self.log = log
        cpus = sorted(os.sched_getaffinity(0))
        self.pinned = pin and len(cpus) >= 2 and shutil.which("taskset") is not None
        #: The proxy under test gets a core of its own; vendor and load generator share the other.
        self.proxy_cpu = cpus[0] if self.pinned else None
        self.aux_cpu = cpus[1] if self.pinned else None
        self.errors: dict[str, int] = {}

    # ------------------------------------------------------------ measuring primitives

    def _load_cpu(self, t: Target) -> int | None:
        return self.proxy_cpu if t.name == "direct" else self.aux_cpu

    def throughput(self, t: Target, body: bytes, connections: int, duration: float) -> float:
        if self.use_wrk:
            r = wrk.run(t, body, connections, duration, cpu=self._load_cpu(t))
            rate, errors = r.rate, r.errors
        else:
            res = _arun(loadgen.run_load(t, body, connections, duration))
            rate, errors = res.rate, res.errors
        self._count_errors(t, errors)
        return rate

    def latency(self, t: Target, body: bytes, duration: float) -> tuple[float, float]:
        """p50 and p99 in ms at one connection."""
        if self.use_wrk:
            r = wrk.run(t, body, 1, duration, latency=True, cpu=self._load_cpu(t))
            self._count_errors(t, r.errors)
            return r.percentiles[50], r.percentiles[99]
        res = _arun(loadgen.run_load(t, body, 1, duration))
        self._count_errors(t, res.errors)
        ms = [x * 1000 for x in res.latencies]
        return _pct(ms, 50), _pct(ms, 99)

    def _count_errors(self, t: Target, n: int) -> None:
        if n:
            self.errors[t.name] = self.errors.get(t.name, 0) + n

    def repeat(self, targets: list[Target], fn: Callable[[Target], T]) -> dict[str, list[T]]:
        """``reps`` rounds, each over every target in turn (so drift hits all alike)."""
        out: dict[str, list[T]] = {t.name: [] for t in targets}
        for _ in range(self.s.reps):
            for t in targets:
                out[t.name].append(fn(t))
        return out

    # ------------------------------------------------------------ the run

    def run(self, report: Report) -> None:
        s = self.s
        t0 = time.perf_counter()
        upstream = start_upstream(self.workdir, self.aux_cpu)
        gw = Gateway(self.workdir, upstream)
        key = gw.key

        self.log("start-up: bare relay and aigw, until the first answer")
        relay_up: list[float] = []
        relay: Proc | None = None
        for i in range(s.startup_reps):
            relay = start_relay(self.workdir, upstream, self.proxy_cpu)
            relay_up.append(relay.wait_answer(API_PATH, BODY, key))
            if i < s.startup_reps - 1:
                relay.stop()
        aigw_up: list[float] = []
        aigw: Proc | None = None
        for i in range(s.startup_reps):
            aigw = gw.start(self.proxy_cpu)
            aigw_up.append(aigw.wait_answer(API_PATH, BODY, key))
            if i < s.startup_reps - 1:
                aigw.stop()
        assert relay is not None and aigw is not None
        procs = {"direct": upstream, "bare relay": relay, "aigw": aigw}
        try:
            targets = [
                Target("direct", "127.0.0.1", upstream.port, API_PATH, key),
                Target("bare relay", "127.0.0.1", relay.port, API_PATH, key),
                Target("aigw", "127.0.0.1", aigw.port, API_PATH, key),
            ]
            for t in targets:  # warm-up: connection pools, code paths
                self.throughput(t, BODY, s.connections, min(1.0, s.duration))
                self.throughput(t, STREAM_BODY, s.connections, min(1.0, s.duration))
            time.sleep(1.0)
            idle = {name: p.rss() for name, p in procs.items()}
            self._measure(report, targets, procs, relay_up, aigw_up, idle, gw)
            report.requests_total = int(gw.health().get("requests_total", 0))  # type: ignore[call-overload]
            relay.stop()
            aigw.stop()
            if self.litellm:
                self._litellm_phase(report, upstream, key)
        finally:
            for p in (aigw, relay, upstream):
                p.stop()
        report.records_stored = gw.stored_records()
        report.errors = self.errors
        report.seconds = time.perf_counter() - t0

    def _litellm_phase(self, report: Report, upstream: Proc, key: str) -> None:
        """LiteLLM's cases; if it never comes up, its columns stay empty and ours are kept."""
        try:
            self._measure_litellm(report, upstream, key)
        except RuntimeError as exc:
            report.notes.append(f"LiteLLM left out: {exc}")
            self.log(f"LiteLLM left out: {exc}")

    def _measure_litellm(self, report: Report, upstream: Proc, key: str) -> None:
        """LiteLLM's cases in a phase of their own, on the proxy's core once ours are stopped:
        its workers keep busy even when idle, and would have slowed everything beside them."""
        assert self.litellm is not None
        s, n = self.s, self.s.connections
        self.log("LiteLLM proxy: start-up, then its cases")
        lite = start_litellm(self.workdir, upstream, self.proxy_cpu, self.litellm, key)
        try:
            try:
                up = lite.wait_answer(LITELLM_PATH, BODY, key, timeout=LITELLM_START_S)
            except RuntimeError as exc:  # the work directory goes with the run: keep the log's end
                tail = lite.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"{exc}; its log ended: {' | '.join(tail) or '(empty)'}") from None
            t = Target("litellm", "127.0.0.1", lite.port, LITELLM_PATH, key)
            self.throughput(t, BODY, n, min(1.0, s.duration))  # warm-up
            self.throughput(t, STREAM_BODY, n, min(1.0, s.duration))
            time.sleep(1.0)
            idle = lite.rss()
            rps = self.repeat([t], lambda t: self.throughput(t, BODY, n, s.duration))["litellm"]
            lat = self.repeat([t], lambda t: self.latency(t, BODY, s.latency_duration))["litellm"]
            sps = self.repeat([t], lambda t: self.throughput(t, STREAM_BODY, n, s.duration))["litellm"]
            ttfb = self.repeat(
                [t],
                lambda t: (
                    _median(
                        [x * 1000 for x in _arun(loadgen.first_byte_times(t, STREAM_BODY, min(s.ttfb_streams, 100)))]
                    )
                    or 0.0
                ),
            )["litellm"]
        finally:
            lite.stop()
        values = {
            f"non-streaming, {n} connections": _median(rps),
            "latency p50, 1 connection": _median([v[0] for v in lat]),
            "latency p99, 1 connection": _median([v[1] for v in lat]),
            f"streaming 20 chunks, {n} connections": _median(sps),
            "stream time to first byte p50": _median(ttfb),
            "idle RSS": idle,
            "start-up until the first answer": up,
        }
        for row in report.rows:
            row.litellm = values.get(row.case)
            if row.litellm is not None and row.kind == "rate" and "25× LiteLLM" in row.target:
                row.met = bool(row.met) and (row.ratio(row.litellm) or 0.0) >= 25.0

    def _measure(
        self,
        report: Report,
        targets: list[Target],
        procs: dict[str, Proc],
        relay_up: list[float],
        aigw_up: list[float],
        idle: dict[str, float],
        gw: Gateway,
    ) -> None:
        s = self.s
        n = s.connections
        add = report.rows.append

        self.log(f"non-streaming, {n} connections")
        rps = self.repeat(targets, lambda t: self.throughput(t, BODY, n, s.duration))
        row = Row(
            f"non-streaming, {n} connections",
            "req/s",
            *self._meds(rps),
            kind="rate",
            target="≥ 80% of bare relay, ≥ 25% of direct, ≥ 25× LiteLLM",
        )
        row.met = _ge(row.ratio(row.relay), 0.8) and _ge(row.ratio(row.direct), 0.25)
        add(row)

        self.log("non-streaming, 1 connection: latency")
        lat = self.repeat(targets, lambda t: self.latency(t, BODY, s.latency_duration))
        p50 = {k: [v[0] for v in vs] for k, vs in lat.items()}
        row = Row("latency p50, 1 connection", "ms", *self._meds(p50), kind="time", target="added ≤ 0.5 ms")
        row.met = _le(row.added, 0.5)
        add(row)
        p99 = {k: [v[1] for v in vs] for k, vs in lat.items()}
        row = Row("latency p99, 1 connection", "ms", *self._meds(p99), kind="time", target="added ≤ 2 ms")
        row.met = _le(row.added, 2.0)
        add(row)

        self.log(f"streaming 20 chunks, {n} connections")
        sps = self.repeat(targets, lambda t: self.throughput(t, STREAM_BODY, n, s.duration))
        row = Row(
            f"streaming 20 chunks, {n} connections",
            "streams/s",
            *self._meds(sps),
            kind="rate",
            target="≥ 80% of bare relay, ≥ 25× LiteLLM",
        )
        row.met = _ge(row.ratio(row.relay), 0.8)
        add(row)

        self.log("time to first byte of a stream, 1 connection")
        ttfb = self.repeat(
            targets,
            lambda t: (
                _median([x * 1000 for x in _arun(loadgen.first_byte_times(t, STREAM_BODY, s.ttfb_streams))]) or 0.0
            ),
        )
        row = Row("stream time to first byte p50", "ms", *self._meds(ttfb), kind="time", target="added ≤ 0.5 ms")
        row.met = _le(row.added, 0.5)
        add(row)

        self.log(f"{s.open_streams} streams open at once")
        hold_body = json.dumps(
            {"model": "bench-model", "messages": PROMPT, "stream": True, "bench_hold_s": s.hold_s}
        ).encode()
        held: dict[str, float | None] = {}
        for t in targets:
            proc = procs[t.name]

            async def sample(p: Proc = proc) -> float:
                return p.rss()

            res = _arun(loadgen.hold_streams(t, hold_body, s.open_streams, sample))
            ok = res.max_open == s.open_streams and res.completed == s.open_streams
            if not ok:
                self._count_errors(t, s.open_streams - min(res.max_open, res.completed))
            held[t.name] = res.sampled if ok else None
            self.log(
                f"  {t.name}: {res.max_open} open at once after {res.all_open_after:.2f} s, "
                f"{res.completed} completed, RSS {res.sampled:.1f} MB"
            )
        row = Row(
            f"{s.open_streams} open streams: RSS",
            "MB",
            None,
            held["bare relay"],
            held["aigw"],
            kind="size",
            target="≤ 150 MB",
        )
        row.met = _le(row.aigw, 150.0)
        add(row)

        row = Row("idle RSS", "MB", None, idle["bare relay"], idle["aigw"], kind="size", target="≤ 80 MB")
        row.met = _le(row.aigw, 80.0)
        add(row)
        row = Row(
            "start-up until the first answer",
            "s",
            None,
            _median(relay_up),
            _median(aigw_up),
            kind="size",
            target="≤ 1.5 s",
        )
        row.met = _le(row.aigw, 1.5)
        add(row)

        self.log(f"memory over a {s.soak_s:g} s run (aigw, streaming and non-streaming)")
        aigw_t = targets[2]
        aigw_p = procs["aigw"]
        start = time.perf_counter()
        samples = [(0.0, aigw_p.rss())]
        slice_s = min(5.0, s.soak_s)
        i, backlog, rates = 0, 0.0, []
        while time.perf_counter() - start < s.soak_s:
            rates.append(self.throughput(aigw_t, STREAM_BODY if i % 2 else BODY, n, slice_s))
            samples.append((time.perf_counter() - start, aigw_p.rss()))
            backlog = max(backlog, gw.metric("aigw_records_pending"))  # right after the load, near its peak
            i += 1
        report.soak_samples = samples
        half = [rss for t, rss in samples if t >= s.soak_s / 2] or [samples[-1][1]]
        growth = samples[-1][1] - half[0]
        row = Row(
            f"RSS growth, 2nd half of a {s.soak_s:g} s run",
            "MB",
            None,
            None,
            growth,
            kind="size",
            target="flat (≤ 2 MB)",
        )
        row.met = growth <= 2.0
        add(row)
        # The record writer keeping up: a backlog that grows is memory that grows, then records
        # dropped (the buffer is bounded). One second of traffic is what a healthy writer holds.
        second = min(rates) if rates else 0.0
        row = Row(
            "records waiting to be written, at most",
            "records",
            None,
            None,
            backlog,
            kind="size",
            target=f"≤ 1 s of traffic ({second:,.0f})",
        )
        row.met = backlog <= second
        add(row)

    @staticmethod
    def _meds(d: dict[str, list[float]]) -> tuple[float | None, float | None, float | None]:
        return _median(d["direct"]), _median(d["bare relay"]), _median(d["aigw"])


def _ge(v: float | None, lo: float) -> bool | None:
    return None if v is None else v >= lo


def _le(v: float | None, hi: float) -> bool | None:
    return None if v is None else v <= hi


# ------------------------------------------------------------------ output


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "—"
    if unit in ("req/s", "streams/s", "records"):
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:.1f}"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def table(report: Report) -> str:
    lite = any(r.litellm is not None for r in report.rows)
    head = [
        "case",
        "unit",
        "direct",
        *(["LiteLLM"] if lite else []),
        "bare relay",
        "aigw",
        "aigw − direct",
        "aigw/direct",
        *(["aigw/LiteLLM"] if lite else []),
        "aigw/relay",
        "target",
        "met",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.rows:
        rd, rr, rl = r.ratio(r.direct), r.ratio(r.relay), r.ratio(r.litellm)
        cells = [
            r.case,
            r.unit,
            _fmt(r.direct, r.unit),
            *([_fmt(r.litellm, r.unit)] if lite else []),
            _fmt(r.relay, r.unit),
            _fmt(r.aigw, r.unit),
            _fmt(r.added, r.unit) if r.added is not None else "—",
            f"{rd:.2f}" if rd is not None and r.kind == "rate" else "—",
            *(
                [
                    f"{rl:.1f}"
                    if rl is not None and r.kind == "rate"
                    else f"{1 / rl:.1f}× less"
                    if rl and r.kind != "rate"
                    else "—"
                ]
                if lite
                else []
            ),
            f"{rr:.2f}" if rr is not None and r.kind != "time" else "—",
            r.target,
            {True: "yes", False: "**no**", None: "—"}[r.met],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(report: Report) -> str:
    s = report.settings
    errs = ", ".join(f"{k}: {v}" for k, v in report.errors.items()) or "none"
    return "\n".join(
        [
            f"machine: {report.machine}; load average before: {report.load_before}",
            f"mode: {s.name} (medians of {s.reps} run(s), {s.duration:g} s each; latency runs "
            f"{s.latency_duration:g} s; TTFB over {s.ttfb_streams} streams); load: {report.load_tool}; "
            f"{report.pinning}",
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
    return f"{os.cpu_count()} CPU(s) {model}, Python {sys.version.split()[0]}"


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
) -> Report:
    """Run every case once through; the report holds the table's rows."""
    use = wrk.available() if use_wrk is None else use_wrk and wrk.available()
    with tempfile.TemporaryDirectory(prefix="aigw-bench-") as tmp:
        bench = Bench(settings, use_wrk=use, pin=pin, workdir=Path(tmp), log=log, litellm=litellm)
        pinning = (
            f"pinned with taskset: proxy under test on CPU {bench.proxy_cpu}, vendor and load "
            f"generator on CPU {bench.aux_cpu} (load generator on CPU {bench.proxy_cpu} for direct)"
            if bench.pinned
            else "not pinned"
        )
        report = Report(
            settings,
            "wrk (1 thread)" if use else "async generator (tests/bench/loadgen.py)",
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
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="one short repetition of each case (~1 min)")
    mode.add_argument("--smoke", action="store_true", help="seconds: proves the benchmark works")
    p.add_argument("--async-load", action="store_true", help="use the async generator even if wrk exists")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--soak", type=float, help="seconds of the memory run (default 120, quick 20)")
    p.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    p.add_argument(
        "--litellm",
        nargs="?",
        const="litellm",
        metavar="EXE",
        help="also run LiteLLM's proxy (its `litellm` command; install it apart: pip install 'litellm[proxy]')",
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
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.soak:
        settings = Settings(**{**asdict(settings), "soak_s": args.soak})
    report = run(settings, use_wrk=not args.async_load and not args.smoke, pin=not args.no_pin, litellm=exe)
    print(table(report))
    print()
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0
