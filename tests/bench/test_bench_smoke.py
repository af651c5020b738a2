"""The benchmark itself works: a few-second run of every case yields a full table.

The full benchmark (``python -m tests.bench``) is not a test; this smoke run uses the
async load generator, tiny durations, 50 slow requests in flight, 20 open streams and
no CPU pinning, so it is safe on a busy machine. It asserts only that numbers exist,
never how fast they are. nginx joins when it is on PATH.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from . import loadgen, runner
from .loadgen import Target
from .procs import start_upstream
from .runner import AIGW, DIRECT, RAW, RELAY, SMOKE, Report, run, table


@pytest.fixture(scope="module")
def report() -> Report:
    return run(SMOKE, use_wrk=False, pin=False, log=lambda _m: None, nginx=shutil.which("nginx"))


OURS = (DIRECT, RAW, RELAY, AIGW)


@pytest.mark.timeout(300)
def test_every_throughput_case_has_a_rate_and_cpu_for_every_target(report: Report) -> None:
    rates = [r for r in report.rows if r.kind == "rate"]
    assert [r.case for r in rates] == [
        "non-streaming, 4 connections",
        "stream 20 chunks, 1 connection",
        "stream 20 chunks, 4 connections",
        "stream 500 chunks, 1 connection",
        "stream 500 chunks, 4 connections",
        "response cache hit, 4 connections",
        "response cache miss, 4 connections",
        "translated non-streaming (Anthropic client → OpenAI vendor), 4 connections",
        "translated stream 20 chunks (Anthropic client → OpenAI vendor), 4 connections",
    ]
    names = [*OURS, *(["nginx"] if shutil.which("nginx") else [])]
    for row in rates[-4:-2]:  # the cache's cases: the gateway with its cache on, beside the direct call
        assert set(row.values) == {DIRECT, AIGW}, row
        assert all((row.get(n) or 0) > 0 and row.cpu.get(n) is not None for n in (DIRECT, AIGW)), row
    for row in rates[-2:]:  # aigw's Anthropic API only, beside its own passthrough figure
        assert (row.get(AIGW) or 0) > 0 and row.cpu.get(AIGW) is not None, row
        assert row.checks[0][0] == "≥ 50% of aigw passing through" and row.checks[0][1] is not None
    for row in rates[:-4]:
        for name in names:
            assert (row.get(name) or 0) > 0, (row.case, name)
            assert row.cpu.get(name) is not None, (row.case, name)
    # A cache hit's and a miss's latency at one connection, added over the direct call.
    for case in ("response cache hit latency p50", "response cache miss latency p99"):
        row = next(r for r in report.rows if r.case.startswith(case))
        assert row.added(AIGW) is not None, row
    # Latency, first byte and the gap between chunks: measured against the direct call.
    for case in ("latency p50", "latency p99", "stream first byte", "gap between chunks p50"):
        row = next(r for r in report.rows if r.case.startswith(case))
        assert all(row.added(n) is not None for n in OURS[1:]), row
    # Beside them, aigw's own time from its aigw_overhead_seconds histogram.
    own = [r for r in report.rows if r.case.startswith("aigw's own time")]
    assert [r.case.split(",")[0] for r in own] == ["aigw's own time p50", "aigw's own time p99"]
    assert all((r.get(AIGW) or 0) > 0 for r in own), own


@pytest.mark.timeout(300)
def test_the_slow_vendor_wave_is_measured_and_every_record_stored(report: Report) -> None:
    for label in ("slow vendor", "slow stream"):
        failed = next(r for r in report.rows if r.case.startswith(label) and r.case.endswith("failed requests"))
        assert all(failed.get(n) == 0 for n in OURS), failed
        peak = next(r for r in report.rows if r.case.startswith(label) and r.case.endswith("RSS peak"))
        assert all((peak.get(n) or 0) > 0 for n in OURS), peak
        fds = next(r for r in report.rows if r.case.startswith(label) and r.case.endswith("open files peak"))
        assert (fds.get(AIGW) or 0) >= SMOKE.in_flight  # at least the clients' sockets
        stored = next(r for r in report.rows if r.case.startswith(label) and r.case.endswith("records stored"))
        assert stored.get(AIGW) == SMOKE.in_flight


@pytest.mark.timeout(300)
def test_nothing_failed_and_the_gateway_recorded_every_request(report: Report) -> None:
    assert report.errors == {}
    assert report.requests_total > 100
    # Records survive the gateway's stop; earlier start-up runs add their own.
    assert report.records_stored >= report.requests_total


@pytest.mark.timeout(300)
def test_the_table_and_json_show_each_target_and_no_retired_target(report: Report, tmp_path: Path) -> None:
    text = table(report)
    head = text.splitlines()[0]
    for col in (*runner.COLUMNS, "aigw/relay", "aigw/LiteLLM", "aigw/Portkey", "target", "met"):
        assert col in head
    assert len(text.splitlines()) == 2 + len(report.rows)
    assert "of direct" not in text
    assert report.targets["LiteLLM"].startswith("not asked")
    assert "Portkey" in report.targets
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(runner.asdict(report)))
    assert json.loads(out.read_text())["rows"][1]["values"]["aigw"] is not None


@pytest.mark.timeout(120)
def test_cases_runs_only_the_cases_chosen() -> None:
    """``--cases slow`` reruns one case alone: its rows and start-up and idle RSS, nothing else."""
    only = run(SMOKE, use_wrk=False, pin=False, log=lambda _m: None, cases=runner.parse_cases("slow"))
    cases = [r.case for r in only.rows]
    slow = [c for c in cases if c.startswith("slow vendor")]
    assert len(slow) == 6 and not any(c.startswith("slow stream") for c in cases), cases
    assert set(cases) - set(slow) == {"idle RSS", "start-up until the first answer"}, cases
    peak = next(r for r in only.rows if r.case.endswith("RSS peak"))
    assert (peak.get(AIGW) or 0) > 0
    assert only.targets["LiteLLM"].startswith("not run")
    assert only.errors == {}


def test_cases_refuses_an_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        runner.main(["--smoke", "--cases", "slow,nope"])
    assert "unknown case(s) nope" in capsys.readouterr().err


def test_a_peer_that_never_answers_costs_only_its_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full run takes many minutes: a peer failing to start must not throw the table away."""
    fake = tmp_path / "litellm"
    fake.write_text("#!/bin/sh\necho 'loading the proxy, slowly'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(runner, "LITELLM_START_S", 0.5)
    bench = runner.Bench(SMOKE, use_wrk=False, pin=False, workdir=tmp_path, log=lambda _m: None, litellm=str(fake))
    upstream = start_upstream(tmp_path, None)
    try:
        bench._peers(upstream, "sk-test")
    finally:
        upstream.stop()
    assert runner.LITELLM not in bench.runs.get("ns", {})
    status = bench.targets[runner.LITELLM]
    assert status.startswith("did not come up: litellm did not answer within 0.5 s")
    assert "loading the proxy, slowly" in status  # the log's end, kept although the run's directory goes
    assert any(n.startswith("LiteLLM left out") for n in bench.notes)


@pytest.mark.timeout(60)
def test_the_vendor_writes_a_split_stream_one_event_at_a_time(tmp_path: Path) -> None:
    """Each SSE event of a ``bench-split-N`` stream is its own HTTP chunk, so proxies relay tokens one by one."""
    upstream = start_upstream(tmp_path, None)
    try:
        t = Target("direct", "127.0.0.1", upstream.port, "/v1/chat/completions")

        async def one() -> loadgen.Answer:
            conn = await loadgen.Connection(t).open()
            try:
                return await conn.send(t.request(runner.split_body(7)), keep=True, stamps=True)
            finally:
                conn.close()

        ans = runner._arun(one())
    finally:
        upstream.stop()
    assert ans.status == 200
    events = [e for e in ans.body.split(b"\n\n") if e]
    assert len(events) == 8 and events[-1] == b"data: [DONE]"
    assert len(ans.stamps) == 8


@pytest.mark.timeout(60)
def test_the_load_generator_holds_a_wave_of_slow_requests_in_flight(tmp_path: Path) -> None:
    """``rounds`` sends each connection exactly that many requests, however slow the answers."""
    upstream = start_upstream(tmp_path, None)
    try:
        t = Target("direct", "127.0.0.1", upstream.port, "/v1/chat/completions")
        res = runner._arun(loadgen.run_load(t, runner.slow_body(300, False), 40, 0.0, rounds=2))
    finally:
        upstream.stop()
    assert res.requests == 80 and res.errors == 0


@pytest.mark.timeout(300)
def test_aigw_as_workers_and_with_redis_has_a_rate_and_cpu_in_every_throughput_case(report: Report) -> None:
    scaled = [runner.AIGW_W2, *([runner.AIGW_REDIS] if shutil.which("redis-server") else [])]
    for name in scaled:
        assert report.targets.get(name) == "ran", report.targets
    # The cache and translation cases compare aigw with itself (or direct) only.
    own = ("slow", "response cache", "translated")
    for row in (r for r in report.rows if r.kind == "rate" and not r.case.startswith(own)):
        for name in scaled:
            assert (row.get(name) or 0) > 0, (row.case, name)
            assert (row.cpu.get(name) or 0) > 0, (row.case, name)


def test_wrk_script_sends_the_targets_own_headers() -> None:
    """Portkey routes by header: a wrk script without them made every Portkey request fail."""
    from .wrk import lua_script

    target = Target("Portkey", "127.0.0.1", 1, "/v1/chat/completions", "sk-k", b"x-portkey-provider: openai\r\n")
    script = lua_script(target, b'{"model": "m"}')
    assert 'wrk.headers["x-portkey-provider"] = "openai"' in script
    assert 'wrk.headers["Authorization"] = "Bearer sk-k"' in script
