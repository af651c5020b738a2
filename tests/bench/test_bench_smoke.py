"""The benchmark itself works: a few-second run of every case yields a full table.

The full benchmark (``python -m tests.bench``) is not a test; this smoke run uses the
async load generator, tiny durations, 20 open streams and no CPU pinning, so it is
safe on a busy machine. It asserts only that numbers exist, never how fast they are.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from . import runner
from .runner import SMOKE, Report, run, table


@pytest.fixture(scope="module")
def report() -> Report:
    return run(SMOKE, use_wrk=False, pin=False, log=lambda _m: None)


@pytest.mark.timeout(300)
def test_every_case_has_numbers_for_every_target(report: Report) -> None:
    assert len(report.rows) == 10
    for row in report.rows:
        if row.case.startswith(("RSS growth", "records waiting")):  # may be 0
            assert row.aigw is not None, row
            continue
        columns = (row.relay, row.aigw) if row.kind == "size" else (row.direct, row.relay, row.aigw)
        assert all(v is not None and v > 0 for v in columns), row
    # Added latency is measured against the direct call, so it exists for every time row.
    assert all(r.added is not None for r in report.rows if r.kind == "time")


@pytest.mark.timeout(300)
def test_nothing_failed_and_the_gateway_recorded_every_request(report: Report) -> None:
    assert report.errors == {}
    assert report.requests_total > 100
    # Records survive the gateway's stop; earlier start-up runs add their own.
    assert report.records_stored >= report.requests_total


@pytest.mark.timeout(300)
def test_the_table_shows_each_target_and_ratio(report: Report) -> None:
    text = table(report)
    head = text.splitlines()[0]
    for col in ("direct", "bare relay", "aigw", "aigw − direct", "aigw/direct", "aigw/relay", "target"):
        assert col in head
    assert len(text.splitlines()) == 2 + len(report.rows)
    assert "open streams" in text


def test_a_litellm_that_never_answers_costs_only_its_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full run is 15 minutes: LiteLLM failing to start must not throw the table away."""
    fake = tmp_path / "litellm"
    fake.write_text("#!/bin/sh\necho 'loading the proxy, slowly'\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(runner, "LITELLM_START_S", 0.5)
    bench = runner.Bench(SMOKE, use_wrk=False, pin=False, workdir=tmp_path, log=lambda _m: None, litellm=str(fake))
    report = Report(SMOKE, "async", "not pinned", "test", "0")
    report.rows.append(runner.Row("non-streaming, 4 connections", "req/s", 100.0, 50.0, 60.0, kind="rate"))
    bench._litellm_phase(report, SimpleNamespace(port=9), "sk-test")  # type: ignore[arg-type]
    assert report.rows[0].litellm is None and report.rows[0].aigw == 60.0
    assert len(report.notes) == 1
    note = report.notes[0]
    assert note.startswith("LiteLLM left out: litellm did not answer within 0.5 s")
    assert "loading the proxy, slowly" in note  # the log's end, kept although the run's directory goes
    assert note in runner.summary(report)
