"""``aigw_overhead_seconds``: the gateway's own time per request, the vendor's wait left out.

A real ``aigw serve`` in front of a mock vendor told to be slow: the histogram counts
every request once (a stream too), and its sum stays far below the time the vendor made
the requests wait, while the client-side latency histogram holds that wait. With
``--workers 2`` the supervisor's series are the sums of the workers'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess
from mock_vendor import MockVendor

from proxy.metrics import OVERHEAD_BUCKETS_NS, OVERHEAD_OUTCOMES, Metrics
from proxy.supervisor_admin import sum_metrics
from tui.cli import main as aigw_main

MSG = [{"role": "user", "content": "hi"}]
#: How long the mock vendor makes each request wait (seconds).
DELAY = 0.3
FAMILY = "aigw_overhead_seconds"


def overhead_toml(vendor: MockVendor, keys: dict[str, str]) -> str:
    return (
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_keys]]\nname = "one"\ncredential = "{CRED["k2"]}"\nmax_concurrency = 1\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\n\n'
        f'[[model_services]]\nname = "single"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["one"]\ndefault_model = "m"\nqueue_timeout_s = 30\n\n'
        '[[model_apis]]\nname = "queued"\nbase_path = "/queued"\nservices = ["single"]\n\n'
        '[[model_apis]]\nname = "slow"\nbase_path = "/slow"\nservices = ["main"]\n\n'
        '[[model_apis]]\nname = "cached"\nbase_path = "/cached"\nservices = ["main"]\ncache_ttl_s = 600\n\n'
        '[[model_apis]]\nname = "closed"\nbase_path = "/closed"\nservices = ["main"]\n\n'
        f'[[consumers]]\nname = "app"\napi_keys = ["{keys["app"]}"]\n\n'
        '[[consumer_groups]]\nname = "g"\nconsumers = ["app"]\nmodel_apis = ["slow", "cached", "queued"]\n'
    )


@dataclass
class Inst:
    proc: GatewayProcess
    key: str

    def post(self, base: str, *, key: str | None = None, **body: Any) -> httpx.Response:
        return httpx.post(
            f"{self.proc.url}/{base}/v1/chat/completions",
            json={"messages": MSG, **body},
            timeout=30,
            headers={"Authorization": f"Bearer {key or self.key}"},
        )

    def histogram(self) -> dict[str, float]:
        return overhead_series(httpx.get(f"{self.proc.admin_url}/metrics", timeout=10).text)


def start(vendor: MockVendor, tmp: Path, *args: str) -> Inst:
    db = tmp / "data" / "aigw.db"
    key = new_key("app")
    cfg = tmp / "overhead.toml"
    cfg.write_text(overhead_toml(vendor, {"app": key}))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, args=list(args))
    proc.start(timeout=60)
    return Inst(proc, key)


@pytest.fixture(scope="module")
def inst(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Inst]:
    gw = start(vendor, tmp_path_factory.mktemp("overhead"))
    try:
        yield gw
    finally:
        gw.proc.stop()


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> None:
    vendor.reset()


def overhead_series(text: str) -> dict[str, float]:
    """Every sample of the histogram, by its series (name and labels) as written."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(FAMILY + "_"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


def labels(outcome: str, stream: bool) -> str:
    return f'outcome="{outcome}",stream="{"true" if stream else "false"}"'


def count(h: dict[str, float], outcome: str, stream: bool = False) -> float:
    return h[f"{FAMILY}_count{{{labels(outcome, stream)}}}"]


def total(h: dict[str, float], outcome: str, stream: bool = False) -> float:
    return h[f"{FAMILY}_sum{{{labels(outcome, stream)}}}"]


def buckets(h: dict[str, float], outcome: str, stream: bool = False) -> list[float]:
    """The cumulative bucket counts in ``le`` order, ``+Inf`` last."""
    lbl = labels(outcome, stream)
    les = [f"{ns / 1e9:g}" for ns in OVERHEAD_BUCKETS_NS] + ["+Inf"]
    return [h[f'{FAMILY}_bucket{{{lbl},le="{le}"}}'] for le in les]


def duration_sum(text: str, api: str) -> float:
    """``aigw_request_duration_seconds_sum`` of ``api`` (0 before its first request)."""
    head = f'aigw_request_duration_seconds_sum{{api="{api}"}} '
    return next((float(ln[len(head) :]) for ln in text.splitlines() if ln.startswith(head)), 0.0)


def assert_well_formed(h: dict[str, float]) -> None:
    for outcome in OVERHEAD_OUTCOMES:
        for stream in (False, True):
            b = buckets(h, outcome, stream)
            assert b == sorted(b), f"buckets not cumulative for {outcome}/{stream}: {b}"
            assert b[-1] == count(h, outcome, stream)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


# ------------------------------------------------------------------ one gateway process


def test_every_series_is_there_at_zero_before_traffic(inst: Inst) -> None:
    h = inst.histogram()
    assert len(h) == len(OVERHEAD_OUTCOMES) * 2 * (len(OVERHEAD_BUCKETS_NS) + 3)
    assert all(v == 0 for v in h.values()), {k: v for k, v in h.items() if v}
    assert_well_formed(h)
    text = httpx.get(f"{inst.proc.admin_url}/metrics", timeout=10).text
    assert text.count(f"# TYPE {FAMILY} histogram") == 1
    assert inst.key not in text and CRED["k1"] not in text


def test_the_vendors_wait_is_left_out(inst: Inst, vendor: MockVendor) -> None:
    vendor.behave(delay=DELAY)
    n = 4
    before_text = httpx.get(f"{inst.proc.admin_url}/metrics", timeout=10).text
    before = overhead_series(before_text)
    for _ in range(n):
        assert inst.post("slow").status_code == 200
    after_text = httpx.get(f"{inst.proc.admin_url}/metrics", timeout=10).text
    after = overhead_series(after_text)
    d = delta(after, before)
    assert count(d, "vendor") == n
    # The clients waited the vendor's delay on every request; the gateway's own share is not it.
    assert duration_sum(after_text, "slow") - duration_sum(before_text, "slow") >= n * DELAY
    assert total(d, "vendor") < n * DELAY / 2
    assert buckets(d, "vendor")[-1] == n and count(d, "vendor", stream=True) == 0
    assert_well_formed(after)


def test_a_stream_counts_once_and_its_gaps_are_the_vendors(inst: Inst, vendor: MockVendor) -> None:
    chunks, gap = 5, 0.1
    vendor.behave(delay=DELAY, chunks=chunks, chunk_delay=gap)
    before = inst.histogram()
    with httpx.stream(
        "POST",
        f"{inst.proc.url}/slow/v1/chat/completions",
        json={"messages": MSG, "stream": True},
        headers={"Authorization": f"Bearer {inst.key}"},
        timeout=30,
    ) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) > chunks
    d = delta(inst.histogram(), before)
    assert count(d, "vendor", stream=True) == 1
    assert sum(count(d, o, s) for o in OVERHEAD_OUTCOMES for s in (False, True)) == 1
    assert total(d, "vendor", stream=True) < (DELAY + chunks * gap) / 2


def test_refusals_and_cache_hits_are_all_the_gateways(inst: Inst, vendor: MockVendor) -> None:
    vendor.behave(delay=DELAY)
    before = inst.histogram()
    assert inst.post("slow", key=new_key("nobody")).status_code == 401
    assert inst.post("closed").status_code == 403
    first = inst.post("cached", temperature=0.25)
    again = inst.post("cached", temperature=0.25)
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    d = delta(inst.histogram(), before)
    assert count(d, "gateway") == 2 and count(d, "cache") == 1 and count(d, "vendor") == 1
    assert len(vendor.requests) == 1  # the hit never reached the vendor
    assert total(d, "vendor") < DELAY / 2


def test_the_queue_for_a_key_slot_is_left_out(inst: Inst, vendor: MockVendor) -> None:
    """Three requests at once on a key with one slot: the last waits two vendor calls in the queue."""
    vendor.behave(delay=DELAY)
    n = 3
    before = inst.histogram()

    async def together() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as c:
            rs = await asyncio.gather(
                *(
                    c.post(
                        f"{inst.proc.url}/queued/v1/chat/completions",
                        json={"messages": MSG},
                        headers={"Authorization": f"Bearer {inst.key}"},
                    )
                    for _ in range(n)
                )
            )
        return [r.status_code for r in rs]

    assert asyncio.run(together()) == [200] * n
    assert vendor.max_in_flight == 1
    d = delta(inst.histogram(), before)
    assert count(d, "vendor") == n
    # Queued and served, the three waited 0 + 1 + 2 vendor calls besides their own three.
    assert total(d, "vendor") < DELAY / 2


# ------------------------------------------------------------------ two workers


def test_two_workers_sum_into_one_set_of_series(vendor: MockVendor, tmp_path: Path) -> None:
    gw = start(vendor, tmp_path, "--workers", "2")
    try:
        vendor.behave(delay=DELAY)
        n = 8

        async def burst() -> list[int]:
            async def one() -> int:
                async with httpx.AsyncClient(timeout=30) as c:  # each on its own connection
                    r = await c.post(
                        f"{gw.proc.url}/slow/v1/chat/completions",
                        json={"messages": MSG},
                        headers={"Authorization": f"Bearer {gw.key}"},
                    )
                    return r.status_code

            return await asyncio.gather(*(one() for _ in range(n)))

        assert asyncio.run(burst()) == [200] * n
        text = httpx.get(f"{gw.proc.admin_url}/metrics", timeout=10).text
        h = overhead_series(text)
        assert text.count(f"# TYPE {FAMILY} histogram") == 1
        assert len(h) == len(OVERHEAD_OUTCOMES) * 2 * (len(OVERHEAD_BUCKETS_NS) + 3)  # one set, not one per worker
        assert count(h, "vendor") == n
        assert sum(count(h, o, s) for o in OVERHEAD_OUTCOMES for s in (False, True)) == n
        health = httpx.get(f"{gw.proc.admin_url}/healthz", timeout=10).json()
        assert sum(w["requests_total"] for w in health["workers"]) == n
        assert total(h, "vendor") < n * DELAY / 2
        assert_well_formed(h)
    finally:
        gw.proc.stop(timeout=60)


# ------------------------------------------------------------------ in process


def test_observations_land_in_the_right_buckets() -> None:
    m = Metrics()
    m.observe_overhead(False, "vendor", 50_000)  # on a bound: in that bucket (le is "at most")
    m.observe_overhead(False, "vendor", 50_001)
    m.observe_overhead(False, "vendor", 2_000_000_000)  # past the last bound: +Inf only
    m.observe_overhead(True, "cache", 1)
    h = overhead_series(m.render(revision=1, in_flight=0))
    assert buckets(h, "vendor")[:3] == [1, 2, 2] and buckets(h, "vendor")[-2:] == [2, 3]
    assert count(h, "vendor") == 3 and total(h, "vendor") == pytest.approx(2.000100001)
    assert buckets(h, "cache", stream=True)[0] == 1 and count(h, "gateway") == 0
    assert_well_formed(h)


def test_the_supervisor_sums_buckets_sum_and_count() -> None:
    one, two = Metrics(), Metrics()
    for ns in (40_000, 300_000, 7_000_000):
        one.observe_overhead(False, "vendor", ns)
    for ns in (90_000, 150_000_000):
        two.observe_overhead(False, "vendor", ns)
    two.observe_overhead(True, "gateway", 60_000)
    a, b = (overhead_series(m.render(revision=1, in_flight=0)) for m in (one, two))
    summed = overhead_series(sum_metrics([m.render(revision=1, in_flight=0) for m in (one, two)]))
    assert summed.keys() == a.keys()
    for series, value in summed.items():
        assert value == pytest.approx(a[series] + b[series], abs=1e-6), series
    assert count(summed, "vendor") == 5 and buckets(summed, "vendor")[0] == 1 and buckets(summed, "vendor")[1] == 2
    assert total(summed, "vendor") == pytest.approx(0.15743, abs=1e-6)
    assert_well_formed(summed)
