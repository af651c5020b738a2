"""The benchmark itself works: a few-second run of every case yields a full table.

The full benchmark (``python -m tests.bench``) is not a test; this smoke run uses the
async load generator, tiny durations, 20 open streams and no CPU pinning, so it is
safe on a busy machine. It asserts only that numbers exist, never how fast they are.
"""

from __future__ import annotations

import pytest

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
