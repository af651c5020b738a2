"""The in-memory limiter on a fake clock: exact windows, headers, Retry-After, quotas."""

from __future__ import annotations

import pytest

from proxy.context import RequestContext, Usage
from proxy.limits import MemoryLimiter, duration, duration_bytes
from proxy.routes import Snapshot, compile_snapshot
from store.spec import (
    Config,
    ConsumerGroupSpec,
    ConsumerSpec,
    ModelApiSpec,
    ModelKeySpec,
    ModelServiceSpec,
    Price,
)
from store.usage import period_end


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def snapshot(
    *,
    rpm: list[int],
    tpm: int = 0,
    quota: float = 0,
    unit: str = "tokens",
    period: str = "day",
    price: Price | None = None,
) -> Snapshot:
    cfg = Config(
        model_keys=[ModelKeySpec("k", "sk-x")],
        model_services=[
            ModelServiceSpec(
                "s",
                address="http://127.0.0.1:1/v1",
                keys=["k"],
                default_model="m",
                prices={"m": price} if price else {},
            )
        ],
        model_apis=[ModelApiSpec("a", routes=["/v1/chat/completions"], base_path="/a", services=["s"])],
        consumers=[ConsumerSpec("c", quota=quota, quota_unit=unit, quota_period=period)],
        consumer_groups=[
            ConsumerGroupSpec(f"g{i}", consumers=["c"], model_apis=["a"], requests_per_minute=r, tokens_per_minute=tpm)
            for i, r in enumerate(rpm)
        ],
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
        assert d.allowed
        seen.append(d.header("x-ratelimit-remaining-requests"))
        clock.now += 1
    assert seen == ["2", "1", "0"]
    d = lim.check(ctx_for(snap, clock))
    assert not d.allowed and d.error is not None and d.error.status == 429
    assert d.error.code == "rate_limit_exceeded"
    assert d.error.headers is not None and d.error.headers["Retry-After"] == "57"
    assert d.header("x-ratelimit-limit-requests") == "3"
    assert d.header("x-ratelimit-remaining-requests") == "0"
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
    assert lim.check(ctx_for(unlimited, clock)).headers == b""


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
    assert not d.allowed
    assert d.header("x-ratelimit-remaining-tokens") == "0"
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


def admitted(
    lim: MemoryLimiter, snap: Snapshot, clock: Clock, n: int, body: bytes = b'{"messages":[]}', **fields: object
) -> list[RequestContext]:
    """Check ``n`` requests that are all in flight at once; the admitted ones."""
    out = []
    for _ in range(n):
        ctx = ctx_for(snap, clock)
        ctx.raw_body, ctx.body = body, dict(fields)
        if lim.check(ctx).allowed:
            out.append(ctx)
    return out


def test_requests_quota_counts_requests_in_flight() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=5, unit="requests")
    first = admitted(lim, snap, clock, 50)
    assert len(first) == 5  # none settled yet: the in-flight ones hold the quota
    d = lim.check(ctx_for(snap, clock))
    assert d.error is not None and d.error.code == "insufficient_quota"
    assert d.error.headers is not None and d.error.headers["Retry-After"] == "1"
    for ctx in first[:2]:  # two fail before forwarding: their slots come back
        lim.settle(ctx, None)
    for ctx in first[2:]:
        ctx.service = snap.services["s"]
        lim.settle(ctx, Usage(1, 1))
    assert len(admitted(lim, snap, clock, 50)) == 2


def test_tokens_quota_reserves_the_estimate_and_settles_to_the_real_use() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=1000)
    # 15 body bytes → 6 prompt tokens + max_tokens 100 = 106 reserved each: 10 fit under 1000.
    wave = admitted(lim, snap, clock, 16, max_tokens=100)
    assert len(wave) == 10
    for ctx in wave:
        ctx.service = snap.services["s"]
        lim.settle(ctx, Usage(5, 95))  # honest estimates: no overshoot
    assert lim.current_use(snap)["c"]["quota"]["used"] == 1000
    assert lim.current_use(snap)["c"]["quota"]["reserved"] == 0
    assert admitted(lim, snap, clock, 16, max_tokens=100) == []


def test_tokens_quota_overshoot_stays_within_the_documented_bound() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    quota = 1000
    snap = snapshot(rpm=[0], quota=quota)
    used_max = 0
    for _ in range(30):  # waves of 16 concurrent requests, answers bigger than reserved
        wave = admitted(lim, snap, clock, 16, max_tokens=50)
        if not wave:
            break
        for ctx in wave:
            ctx.service = snap.services["s"]
            lim.settle(ctx, Usage(10, 70))  # 80 used vs 57 reserved: 23 over each
        used_max = max(used_max, len(wave))
    used = lim.current_use(snap)["c"]["quota"]["used"]
    # Bound: the last admitted request's use + what the others in flight used beyond
    # their reservations (at most 16 in flight here).
    assert quota <= used <= quota + 80 + (used_max - 1) * 23


def test_tpm_counts_reservations_and_headers_show_them() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], tpm=300)
    wave = admitted(lim, snap, clock, 5, max_tokens=94)  # 100 reserved each: 3 fit
    assert len(wave) == 3
    d = lim.check(ctx_for(snap, clock))
    assert d.header("x-ratelimit-remaining-tokens") == "0"
    assert d.error is not None and "in progress" in d.error.message
    for ctx in wave:
        ctx.service = snap.services["s"]
        lim.settle(ctx, Usage(10, 10))
    d = lim.check(ctx_for(snap, clock))
    assert d.allowed
    assert d.header("x-ratelimit-remaining-tokens") == "240"


def test_cost_quota_reserves_at_the_price() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=0.001, unit="cost", price=Price(input=1.0, output=4.0))
    # 106 tokens reserved each at the dearest price (4 per million): 0.000424 → 3 fit.
    wave = admitted(lim, snap, clock, 10, max_tokens=100)
    assert len(wave) == 3
    for ctx in wave:
        ctx.service = snap.services["s"]
        ctx.cost = 0.0001
        lim.settle(ctx, Usage(5, 20))
    assert lim.current_use(snap)["c"]["quota"]["used"] == pytest.approx(0.0003)
    assert len(admitted(lim, snap, clock, 10, max_tokens=100)) == 2


def test_a_cancelled_request_releases_its_reservation() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    snap = snapshot(rpm=[0], quota=200)
    (ctx,) = admitted(lim, snap, clock, 1, max_tokens=500)
    assert admitted(lim, snap, clock, 1) == []
    ctx.service = snap.services["s"]
    lim.settle(ctx, None)  # 499 before any usage arrived
    assert lim.current_use(snap)["c"]["quota"] == {**lim.current_use(snap)["c"]["quota"], "used": 0, "reserved": 0}
    assert len(admitted(lim, snap, clock, 1)) == 1


def test_windows_stay_bounded_however_fast_requests_come() -> None:
    """One entry per request grew with the rate; merged 10 ms slots cap a window at 6,000
    entries, and a merged count never leaves the window early."""
    from proxy.limits import SLOT_S, WINDOW_S, _Window

    w = _Window()
    t = 1000.0
    for _ in range(100_000):  # 10,000 requests a second for 10 s
        t += 0.0001
        w.add(t, 1)
        w.expire(t)
    assert w.used == 100_000 and len(w.entries) <= WINDOW_S / SLOT_S + 1
    last_of_first_slot = w.entries[0][0]
    w.expire(last_of_first_slot + WINDOW_S - 1e-6)
    assert w.used == 100_000, "nothing leaves before the last request of its slot is a minute old"
    w.expire(t + WINDOW_S)
    assert w.used == 0 and not w.entries


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.0004, "1ms"),
        (0.25, "250ms"),
        (1.0, "1s"),
        (1.2, "2s"),
        (59.0, "59s"),
        (59.5, "1m0s"),
        (60.0, "1m0s"),
        (61.0, "1m1s"),
        (3599.2, "60m0s"),
    ],
)
def test_reset_durations_in_openais_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text
    assert duration_bytes(seconds) == text.encode()


async def test_restore_loads_only_the_counters_a_new_snapshot_brings() -> None:
    clock = Clock()
    calls = []

    async def loader(consumer: str, unit: str, since: float, until: float) -> float:
        calls.append(unit)
        return 1.0

    lim = MemoryLimiter(loader=loader, clock=clock)
    await lim.restore(snapshot(rpm=[0], quota=2, unit="requests"))
    await lim.restore(snapshot(rpm=[0], quota=5, unit="requests"))  # the limit alone changed
    assert calls == ["requests"]
    tokens = snapshot(rpm=[0], quota=100, unit="tokens")
    await lim.restore(tokens)  # a new unit: its use is loaded before the snapshot serves
    assert calls == ["requests", "tokens"]
    d = lim.check(ctx_for(tokens, clock))
    assert d.allowed
