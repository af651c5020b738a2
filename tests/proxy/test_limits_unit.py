"""The in-memory limiter on a fake clock: exact windows, headers, Retry-After, quotas."""

from __future__ import annotations

import pytest

from proxy.context import RequestContext, Usage
from proxy.limits import MemoryLimiter, duration
from proxy.routes import Snapshot, compile_snapshot
from store.spec import (
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
)
from store.usage import period_end


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def snapshot(*, rpm: list[int], tpm: int = 0, quota: float = 0, unit: str = "tokens",
             period: str = "day") -> Snapshot:
    cfg = Config(
        model_keys=[ModelKeySpec("k", "sk-x")],
        model_services=[ModelServiceSpec("s", address="http://127.0.0.1:1/v1", keys=["k"],
                                         default_model="m")],
        model_apis=[ModelApiSpec("a", routes=["/v1/chat/completions"], base_path="/a",
                                 services=["s"])],
        consumers=[ConsumerSpec("c", quota=quota, quota_unit=unit, quota_period=period)],
        consumer_groups=[ConsumerGroupSpec(f"g{i}", consumers=["c"], model_apis=["a"],
                                           requests_per_minute=r, tokens_per_minute=tpm)
                         for i, r in enumerate(rpm)],
    )
    return compile_snapshot(cfg, [], 1)


def ctx_for(snap: Snapshot, clock: Clock) -> RequestContext:
    ctx = RequestContext(snap, "r", "POST", "/a/v1/chat/completions", ts=clock.now)
    ctx.consumer = snap.consumers["c"]
    ctx.api = snap.apis["a"]
    return ctx


def test_rpm_window_is_exact_and_headers_count_down() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[3])
    seen = []
    for _ in range(3):
        d = lim.check(ctx_for(snap, clock))
        assert d.allowed and d.headers is not None
        seen.append(d.headers["x-ratelimit-remaining-requests"])
        clock.now += 1
    assert seen == ["2", "1", "0"]
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.error is not None and d.error.status == 429
    assert d.error.code == "rate_limit_exceeded"
    assert d.error.headers is not None and d.error.headers["Retry-After"] == "57"
    assert d.error.headers["x-ratelimit-limit-requests"] == "3"
    clock.now += 57  # the first request leaves the window
    assert lim.check(ctx_for(snap, clock)).allowed
    assert not lim.check(ctx_for(snap, clock)).allowed


def test_most_generous_group_applies() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    assert all(lim.check(ctx_for(snapshot(rpm=[2, 5]), clock)).allowed for _ in range(5))
    lim = MemoryLimiter(clock=clock)
    unlimited = snapshot(rpm=[2, 0])
    assert all(lim.check(ctx_for(unlimited, clock)).allowed for _ in range(50))
    assert lim.check(ctx_for(unlimited, clock)).headers is None


def test_tokens_per_minute_charged_after_the_answer() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], tpm=30)
    for n in (18, 18):
        ctx = ctx_for(snap, clock)
        d = lim.check(ctx)
        assert d.allowed
        ctx.service = snap.services["s"]
        lim.settle(ctx, Usage(11, n - 11))
        clock.now += 10
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.headers is not None
    assert d.headers["x-ratelimit-remaining-tokens"] == "0"
    # 36 used; dropping the first 18 (charged 20 s ago) is enough: 40 s from now.
    assert d.error is not None and d.error.headers is not None
    assert d.error.headers["Retry-After"] == "40"
    clock.now += 40
    assert lim.check(ctx_for(snap, clock)).allowed


def test_refused_requests_use_no_tokens_or_quota() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=2, unit="requests")
    ctx = ctx_for(snap, clock)
    lim.check(ctx)
    lim.settle(ctx, None)  # no service: never forwarded
    assert lim.check(ctx_for(snap, clock)).allowed


@pytest.mark.parametrize("unit, per_request", [("tokens", 18), ("requests", 1), ("cost", 0.5)])
def test_quota_units_and_reset_time(unit: str, per_request: float) -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=per_request * 2, unit=unit)
    for _ in range(2):
        ctx = ctx_for(snap, clock)
        assert lim.check(ctx).allowed
        ctx.service = snap.services["s"]
        ctx.cost = 0.5
        lim.settle(ctx, Usage(11, 7))
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.error is not None
    assert d.error.code == "insufficient_quota" and "resets at" in d.error.message
    end = period_end("day", clock.now)
    assert end is not None
    assert d.error.headers is not None
    assert int(d.error.headers["Retry-After"]) == pytest.approx(end - clock.now, abs=1)
    clock.now = end + 1  # a new period starts from zero
    assert lim.check(ctx_for(snap, clock)).allowed


async def test_quota_restored_from_the_records() -> None:
    clock = Clock()
    calls = []

    async def loader(consumer: str, unit: str, since: float, until: float) -> float:
        calls.append((consumer, unit))
        return 100.0

    lim = MemoryLimiter(loader=loader, clock=clock)
    snap = snapshot(rpm=[0], quota=100)
    await lim.restore(snap)
    assert calls == [("c", "tokens")]
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.error is not None and d.error.code == "insufficient_quota"


def test_duration_format() -> None:
    assert [duration(x) for x in (0, 0.02, 1, 59.2, 360)] == ["0s", "20ms", "1s", "1m0s", "6m0s"]


def test_total_quota_never_resets() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=1, unit="requests", period="total")
    ctx = ctx_for(snap, clock)
    assert lim.check(ctx).allowed
    ctx.service = snap.services["s"]
    lim.settle(ctx, Usage(1, 1))
    clock.now += 400 * 86400
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.error is not None and d.error.code == "insufficient_quota"
    assert "total quota" in d.error.message and d.error.headers is not None
    assert "Retry-After" in d.error.headers
