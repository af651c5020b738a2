"""A model key's ``max_concurrency`` held across every process that shares limits: the
workers of one ``aigw serve --workers 2``, and two gateways on one real Redis.

The mock vendor records the most requests it held at once: with a key bound to 1 it
never sees two, however the requests spread; the excess waits, then gets 429
``concurrency_limit_exceeded`` with ``Retry-After: 1``. A process that dies holding a
slot does not keep it; Redis away with ``redis_failure = "local"`` keeps serving within
each process's own bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_config import new_key
from helpers import GatewayProcess, wait_for
from mock_vendor import Behaviour, MockVendor
from servers import RedisServer, redis_server

from tui.cli import main as aigw_main

__all__ = ["redis_server"]  # the fixture, used by name

MSG = [{"role": "user", "content": "hi"}]
#: Seconds the vendor takes per request, and a waiter waits at most: some wait and are
#: served, the rest time out.
SLOW_S = 0.8
QUEUE_S = 2
N = 10


def toml(vendor: MockVendor, key: str) -> str:
    return (
        '[[model_keys]]\nname = "one"\ncredential = "sk-vendor-ONE-AT-A-TIME"\nmax_concurrency = 1\n\n'
        f'[[model_services]]\nname = "slow"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        f'keys = ["one"]\ndefault_model = "m"\nqueue_timeout_s = {QUEUE_S}\n\n'
        '[[model_apis]]\nname = "one"\nbase_path = "/one"\nservices = ["slow"]\n\n'
        f'[[consumers]]\nname = "app"\napi_keys = ["{key}"]\n\n'
        '[[consumer_groups]]\nname = "all"\nconsumers = ["app"]\nmodel_apis = ["one"]\n'
    )


@dataclass
class Gws:
    key: str
    gws: list[GatewayProcess]

    async def burst(self, n: int) -> list[httpx.Response]:
        """``n`` concurrent requests, each on its own connection, spread over the gateways."""

        async def one(i: int) -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as c:
                return await c.post(
                    f"{self.gws[i % len(self.gws)].url}/one/v1/chat/completions",
                    json={"messages": MSG},
                    headers={"Authorization": f"Bearer {self.key}"},
                )

        return await asyncio.gather(*(one(i) for i in range(n)))

    def chat(self, i: int = 0, timeout: float = 30) -> httpx.Response:
        return httpx.post(
            f"{self.gws[i].url}/one/v1/chat/completions",
            json={"messages": MSG},
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=timeout,
        )

    def health(self, i: int = 0) -> dict[str, Any]:
        return httpx.get(f"{self.gws[i].admin_url}/healthz", timeout=10).json()  # type: ignore[no-any-return]


def _db(vendor: MockVendor, tmp: Path) -> tuple[Path, str]:
    db = tmp / "data" / "aigw.db"
    key = new_key("app")
    cfg = tmp / "one.toml"
    cfg.write_text(toml(vendor, key))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    return db, key


def check_burst(answers: list[httpx.Response], vendor: MockVendor) -> None:
    codes = [r.status_code for r in answers]
    assert vendor.max_in_flight == 1, f"the vendor held {vendor.max_in_flight} requests of a key bound to 1"
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes, codes
    for r in answers:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert r.headers["retry-after"] == "1"


def served(gw: Gws, i: int = 0) -> bool:
    """One request answered 200 (a connection the dying process took is just not served)."""
    try:
        return gw.chat(i, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def _held_in_background(gw: Gws, i: int = 0) -> threading.Thread:
    """A request that holds the slot (the vendor told to be slow for it) until its process dies."""

    def go() -> None:
        with contextlib.suppress(httpx.HTTPError):  # its process was killed under it
            gw.chat(i, timeout=60)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


# ---------------------------------------------------------------- workers of one supervisor


@pytest.fixture(scope="module")
def workers(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gws]:
    db, key = _db(vendor, tmp_path_factory.mktemp("kslots-workers"))
    proc = GatewayProcess(db, args=["--workers", "2"])
    proc.start(timeout=60)
    try:
        yield Gws(key, [proc])
    finally:
        proc.stop(timeout=60)


async def test_workers_hold_one_bound_and_the_excess_waits_then_gets_429(workers: Gws, vendor: MockVendor) -> None:
    vendor.reset()
    vendor.behave(delay=SLOW_S)
    before = {w["index"]: w["requests_total"] for w in workers.health()["workers"]}
    try:
        answers = await workers.burst(N)
    finally:
        vendor.behave()
    check_burst(answers, vendor)
    after = {w["index"]: w["requests_total"] for w in workers.health()["workers"]}
    assert all(after[i] > before[i] for i in after), f"one worker took every connection: {before} → {after}"
    keys = workers.health()["keys"]
    assert keys["one"]["in_flight"] == 0 and keys["one"]["max_concurrency"] == 1
    assert keys["one"]["queue_timeouts"] >= 1 and keys["one"]["queue_waits"] >= 1


def test_a_worker_killed_holding_the_slot_does_not_keep_it(workers: Gws, vendor: MockVendor) -> None:
    vendor.reset()
    vendor.queue(Behaviour(delay=60))
    holder = _held_in_background(workers)
    wait_for(lambda: vendor.in_flight == 1, 10, interval=0.05, what="the slow request at the vendor")
    holding = [w for w in workers.health()["workers"] if w["in_flight"]]
    assert len(holding) == 1 and workers.health()["keys"]["one"]["in_flight"] == 1
    os.kill(holding[0]["pid"], signal.SIGKILL)
    # The supervisor frees the dead worker's slot: the next request gets it (served by the
    # worker still running, or by the one started in the dead one's place).
    wait_for(lambda: served(workers), 30, interval=0.2, what="the slot free again")
    holder.join(10)
    wait_for(lambda: all(w["state"] == "running" for w in workers.health()["workers"]), 60, what="the worker replaced")


# ---------------------------------------------------------------- two gateways on one Redis


@pytest.fixture(scope="module")
def pair(vendor: MockVendor, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gws]:
    db, key = _db(vendor, tmp_path_factory.mktemp("kslots-redis"))
    a = GatewayProcess(db, args=["--redis-url", redis_server.url])
    b = GatewayProcess(db, args=["--redis-url", redis_server.url])
    try:
        a.start()
        b.start()
        yield Gws(key, [a, b])
    finally:
        a.stop()
        b.stop()


async def test_two_gateways_on_one_redis_hold_one_bound(pair: Gws, vendor: MockVendor) -> None:
    vendor.reset()
    vendor.behave(delay=SLOW_S)
    try:
        answers = await pair.burst(N)
    finally:
        vendor.behave()
    check_burst(answers, vendor)
    served = [r.status_code for r in answers].count(200)
    assert served >= 2  # a slot freed at one gateway was taken by a waiter (of either)


def test_healthz_shows_the_shared_count(pair: Gws, vendor: MockVendor) -> None:
    vendor.reset()
    vendor.queue(Behaviour(delay=3))
    t = threading.Thread(target=pair.chat, args=(0,), daemon=True)
    t.start()
    try:
        wait_for(lambda: vendor.in_flight == 1, 10, interval=0.05, what="the request at the vendor")
        at_a, at_b = pair.health(0)["keys"]["one"], pair.health(1)["keys"]["one"]
        assert (at_a["in_flight"], at_a["shared_in_flight"]) == (1, 1)
        assert (at_b["in_flight"], at_b["shared_in_flight"]) == (0, 1)  # b holds none, but sees a's
    finally:
        t.join(10)


def test_redis_away_keeps_serving_within_each_gateways_own_bound(
    pair: Gws, vendor: MockVendor, redis_server: RedisServer
) -> None:
    redis_server.stop()
    try:
        vendor.reset()
        vendor.behave(delay=SLOW_S)
        try:
            answers = asyncio.run(Gws(pair.key, pair.gws[:1]).burst(5))
        finally:
            vendor.behave()
        check_burst(answers, vendor)  # one gateway alone: its own bound of 1
        assert pair.health(0)["limits"]["shared"] is False
    finally:
        redis_server.start()
    wait_for(lambda: pair.health(0)["limits"]["shared"] is True, 10, interval=0.1, what="Redis used again")


def test_a_gateway_killed_holding_the_slot_loses_it_when_its_lease_ends(
    pair: Gws, vendor: MockVendor, redis_server: RedisServer
) -> None:
    vendor.reset()
    vendor.queue(Behaviour(delay=60))
    holder = _held_in_background(pair, 0)
    wait_for(lambda: vendor.in_flight == 1, 10, interval=0.05, what="the slow request at the vendor")
    dead = pair.gws[0]
    assert dead.proc is not None
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait(10)
    holder.join(10)
    # The lease is no longer renewed: within its 10 s the other gateway gets the slot.
    wait_for(lambda: served(pair, 1), 30, interval=0.5, what="the lease to end")
