"""Resilience through a real ``aigw serve``: key concurrency and its queue, circuit breakers,
first-byte timeouts, probes, and the ``attempts`` of every record.

Each behaviour has its own model service and API (so circuits and slots of one test are
not another's); the vendors are mock vendors — one answering, one silent — and a port
nothing listens on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_config import new_key
from helpers import GatewayProcess, free_port, record_for, wait_for
from mock_vendor import Behaviour, MockVendor

from store import repo
from store.db import Store, open_store
from tui.cli import main as aigw_main

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hello"}]


@dataclass
class Rgw:
    proc: GatewayProcess
    db: Path
    key: str
    vendor: MockVendor
    silent: MockVendor
    prober: MockVendor
    store: Store

    def call(self, api: str, *, stream: bool = False, timeout: float = 30) -> tuple[httpx.Response, str]:
        rid = f"rs-{api}-{uuid.uuid4().hex[:10]}"
        headers = {"Authorization": f"Bearer {self.key}", "x-request-id": rid}
        body: dict[str, Any] = {"messages": MSG, "stream": stream}
        r = httpx.post(f"{self.proc.url}/{api}{CHAT}", json=body, headers=headers, timeout=timeout)
        return r, rid

    def attempts(self, rid: str) -> list[dict[str, Any]]:
        return list(record_for(self.store, rid)["attempts"])

    def healthz(self) -> dict[str, Any]:
        return httpx.get(self.proc.admin_url + "/healthz", timeout=5).json()  # type: ignore[no-any-return]


def repo_revision(st: Store) -> int:
    with st.session() as s:
        return repo.get_revision(s)


def _toml(vendor: MockVendor, silent: MockVendor, prober: MockVendor, dead: str, key: str) -> str:
    def svc(name: str, address: str, keys: str, extra: str = "") -> str:
        return (
            f'[[model_services]]\nname = "{name}"\nvendor = "custom"\naddress = "{address}"\n'
            f'keys = [{keys}]\ndefault_model = "m"\ntimeout_s = 20\n{extra}\n'
        )

    def api(name: str, services: str, fallbacks: str = "") -> str:
        fb = f"fallback_services = [{fallbacks}]\n" if fallbacks else ""
        return (
            f'[[model_apis]]\nname = "{name}"\nroutes = ["{CHAT}"]\nbase_path = "/{name}"\n'
            f"services = [{services}]\n{fb}\n"
        )

    apis = ["flaky", "twokeys", "conc", "conc0", "cb", "cbonly", "fb", "fbonly", "fbstream"]
    parts = [
        '[[model_keys]]\nname = "k1"\ncredential = "sk-vendor-RES-ONE"\n\n',
        '[[model_keys]]\nname = "kc"\ncredential = "sk-vendor-RES-KC"\nmax_concurrency = 2\n\n',
        '[[model_keys]]\nname = "kc0"\ncredential = "sk-vendor-RES-KC0"\nmax_concurrency = 2\n\n',
        '[[model_keys]]\nname = "kbad"\ncredential = "sk-vendor-RES-BAD"\n\n',
        svc("conc", vendor.url, '"kc"', "queue_timeout_s = 15\n"),
        svc("conc0", vendor.url, '"kc0"', "queue_timeout_s = 0\n"),
        svc("dead", dead, '"k1"', "circuit_failures = 2\ncircuit_cooldown_s = 120\n"),
        svc("dead2", dead, '"k1"', "circuit_failures = 2\ncircuit_cooldown_s = 120\n"),
        svc("okfb", vendor.url, '"k1"'),
        svc("silent", silent.url, '"k1"', "first_byte_timeout_s = 1\ncircuit_failures = 0\n"),
        svc("flaky", vendor.url, '"k1"', "circuit_failures = 1\ncircuit_cooldown_s = 1\n"),
        svc("twokeys", vendor.url, '"kbad", "k1"', 'key_policy = "failover"\n'),
        svc("probed", dead, '"k1"', "probe_interval_s = 0.2\n"),
        svc("probedok", prober.url, '"k1"', "probe_interval_s = 0.2\n"),
        api("conc", '"conc"'),
        api("flaky", '"flaky"'),
        api("twokeys", '"twokeys"'),
        api("conc0", '"conc0"'),
        api("cb", '"dead"', '"okfb"'),
        api("cbonly", '"dead2"'),
        api("fb", '"silent"', '"okfb"'),
        api("fbonly", '"silent"'),
        api("fbstream", '"silent"', '"okfb"'),
        f'[[consumers]]\nname = "app"\napi_keys = ["{key}"]\n\n',
        '[[consumer_groups]]\nname = "all"\nconsumers = ["app"]\nmodel_apis = ['
        + ", ".join(f'"{a}"' for a in apis)
        + "]\n",
    ]
    return "".join(parts)


@pytest.fixture(scope="module")
def rgw(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rgw]:
    tmp = tmp_path_factory.mktemp("resil")
    db = tmp / "data" / "aigw.db"
    key = new_key("res")
    with MockVendor() as silent, MockVendor() as prober:
        silent.behave(delay=30)  # headers after 30 s: silent for every first-byte bound here
        cfg = tmp / "aigw.toml"
        cfg.write_text(_toml(vendor, silent, prober, f"http://127.0.0.1:{free_port()}/v1", key))
        assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
        proc = GatewayProcess(db).start()
        st = open_store(str(db))
        try:
            yield Rgw(proc, db, key, vendor, silent, prober, st)
        finally:
            proc.stop()
            st.dispose()


def test_concurrency_is_held_at_the_vendor_and_the_excess_queues(rgw: Rgw) -> None:
    rgw.vendor.reset()
    rgw.vendor.behave(delay=0.4)
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: rgw.call("conc"), range(6)))
    finally:
        rgw.vendor.behave()
    assert [r.status_code for r, _ in answers] == [200] * 6
    assert 1 <= rgw.vendor.max_in_flight <= 2
    # every attempt went to the one key, by name, and the record says ok
    for _, rid in answers:
        (att,) = rgw.attempts(rid)
        assert att["service"] == "conc" and att["key"] == "kc" and att["reason"] == "ok" and att["status"] == 200
    metrics = httpx.get(rgw.proc.admin_url + "/metrics", timeout=5).text
    assert 'aigw_key_in_flight{key="kc"} 0' in metrics
    assert 'aigw_key_queue_depth{key="kc"} 0' in metrics
    waited = next(ln for ln in metrics.splitlines() if ln.startswith('aigw_key_queue_wait_seconds_total{key="kc"}'))
    assert float(waited.rsplit(" ", 1)[1]) > 0  # four of the six waited for a slot


def test_without_a_queue_the_excess_gets_429_concurrency_limit_exceeded(rgw: Rgw) -> None:
    rgw.vendor.reset()
    rgw.vendor.behave(delay=1.0)
    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: rgw.call("conc0"), range(6)))
    finally:
        rgw.vendor.behave()
    codes = sorted(r.status_code for r, _ in answers)
    assert rgw.vendor.max_in_flight <= 2
    assert codes.count(200) >= 1 and codes.count(429) >= 4 and set(codes) <= {200, 429}
    refused = [(r, rid) for r, rid in answers if r.status_code == 429]
    r, rid = refused[0]
    assert r.headers["retry-after"] == "1"
    err = r.json()["error"]
    assert err["code"] == "concurrency_limit_exceeded" and "conc0" in err["message"]
    assert "max_concurrency" in err["message"]
    assert [a["reason"] for a in rgw.attempts(rid)] == ["concurrency"]
    metrics = httpx.get(rgw.proc.admin_url + "/metrics", timeout=5).text
    timeouts = next(ln for ln in metrics.splitlines() if ln.startswith('aigw_key_queue_timeouts_total{key="kc0"}'))
    assert float(timeouts.rsplit(" ", 1)[1]) == 0  # no waiting at all: nothing timed out in a queue


def test_a_dead_primary_is_skipped_once_its_circuit_opens(rgw: Rgw) -> None:
    first = [rgw.call("cb") for _ in range(2)]
    for r, rid in first:
        assert r.status_code == 200  # the fallback answered
        assert [a["reason"] for a in rgw.attempts(rid)] == ["connect", "ok"]
    r, rid = rgw.call("cb")
    assert r.status_code == 200
    attempts = rgw.attempts(rid)
    assert [(a["service"], a["reason"]) for a in attempts] == [("dead", "circuit_open"), ("okfb", "ok")]
    assert attempts[0]["key"] == "" and attempts[1]["key"] == "k1"
    health = rgw.healthz()["services"]
    assert health["dead"]["state"] == "open" and health["dead"]["opened_total"] == 1
    assert health["dead"]["retry_in_s"] > 60
    metrics = httpx.get(rgw.proc.admin_url + "/metrics", timeout=5).text
    assert 'aigw_service_state{service="dead",state="open"} 1' in metrics
    assert 'aigw_service_state{service="dead",state="healthy"} 0' in metrics
    assert 'aigw_service_state{service="okfb",state="healthy"} 1' in metrics


def test_an_open_circuit_without_fallback_answers_503(rgw: Rgw) -> None:
    for _ in range(2):
        r, rid = rgw.call("cbonly")
        assert r.status_code == 502 and [a["reason"] for a in rgw.attempts(rid)] == ["connect"]
    r, rid = rgw.call("cbonly")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] == "service_unavailable" and "'dead2'" in err["message"] and "retried in" in err["message"]
    assert 60 < int(r.headers["retry-after"]) <= 120
    assert [a["reason"] for a in rgw.attempts(rid)] == ["circuit_open"]
    assert record_for(rgw.store, rid)["status"] == 503
    # a configuration change keeps the circuit, and an edited cool-down applies at once
    with rgw.store.session() as s:
        svc = repo.get(s, "model_services", "dead2")
        svc.circuit_cooldown_s = 90
        repo.save(s, "model_services", svc, original="dead2")
    rgw.proc.reload()
    health = rgw.healthz()
    assert health["revision"] == repo_revision(rgw.store)
    assert health["services"]["dead2"]["state"] == "open" and health["services"]["dead2"]["retry_in_s"] <= 90


def test_a_silent_primary_is_abandoned_at_its_first_byte_timeout(rgw: Rgw) -> None:
    t0 = time.monotonic()
    r, rid = rgw.call("fb")
    took = time.monotonic() - t0
    assert r.status_code == 200 and took < 10  # the silent vendor answers after 30 s
    attempts = rgw.attempts(rid)
    assert [(a["service"], a["reason"], a["status"]) for a in attempts] == [
        ("silent", "first_byte_timeout", 504),
        ("okfb", "ok", 200),
    ]
    assert attempts[0]["ms"] >= 900


def test_a_silent_stream_is_abandoned_too(rgw: Rgw) -> None:
    r, rid = rgw.call("fbstream", stream=True)
    assert r.status_code == 200 and "data: [DONE]" in r.text
    assert [a["reason"] for a in rgw.attempts(rid)] == ["first_byte_timeout", "ok"]


def test_a_silent_vendor_with_nothing_left_is_a_504(rgw: Rgw) -> None:
    r, rid = rgw.call("fbonly")
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "upstream_timeout" and "first_byte_timeout_s" in err["message"]
    assert [a["reason"] for a in rgw.attempts(rid)] == ["first_byte_timeout"]


def test_probes_open_a_circuit_with_no_traffic_and_keep_a_live_one_healthy(rgw: Rgw) -> None:
    def states() -> tuple[str, str] | None:
        s = rgw.healthz()["services"]
        got = s["probed"]["state"], s["probedok"]["state"]
        return got if got == ("open", "healthy") else None

    assert wait_for(states, 10, interval=0.1, what="probed services open / healthy")
    s = rgw.healthz()["services"]
    assert s["probed"]["probed"] and s["probed"]["last_reason"] == "connect"
    probes = [q for q in rgw.prober.requests if q.path == "/v1/models"]
    assert probes and probes[-1].method == "GET" and probes[-1].authorization == "Bearer sk-vendor-RES-ONE"
    # probing off: the task stops with the reload
    with rgw.store.session() as s:
        svc = repo.get(s, "model_services", "probedok")
        svc.probe_interval_s = 0
        repo.save(s, "model_services", svc, original="probedok")
    rgw.proc.reload()
    assert not rgw.healthz()["services"]["probedok"]["probed"]
    seen = len(rgw.prober.requests)
    assert rgw.call("fb")[0].status_code == 200  # a second elsewhere: 5 probe intervals
    assert len(rgw.prober.requests) == seen


def test_logs_json_shows_the_attempts(rgw: Rgw) -> None:
    r, rid = rgw.call("cb")
    assert r.status_code == 200
    record_for(rgw.store, rid)  # written
    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--db", str(rgw.db), "logs", "--json", "-n", "200"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = {row["request_id"]: row for row in json.loads(out)}
    assert [a["reason"] for a in rows[rid]["attempts"]] == ["circuit_open", "ok"]
    assert all(set(a) == {"service", "key", "status", "reason", "ms"} for row in rows.values() for a in row["attempts"])
    assert "sk-vendor-RES" not in out


def test_the_event_stream_carries_the_attempts(rgw: Rgw) -> None:
    headers = {"Authorization": f"Bearer {rgw.proc.token}"}
    with httpx.stream("GET", rgw.proc.admin_url + "/events", headers=headers, timeout=20) as events:
        r, rid = rgw.call("cb")
        assert r.status_code == 200
        for line in events.iter_lines():
            if line.startswith("data: ") and rid in line:
                record = json.loads(line[6:])
                assert [a["service"] for a in record["attempts"]] == ["dead", "okfb"]
                break


def test_a_client_that_goes_away_gives_its_slot_back(rgw: Rgw) -> None:
    rgw.vendor.reset()
    rgw.vendor.queue(Behaviour(delay=20), Behaviour(delay=20))
    with ThreadPoolExecutor(2) as pool:  # both slots of kc held, then the clients leave
        gone = list(pool.map(lambda _: _leaves(rgw), range(2)))
    assert gone == [True, True]

    def freed() -> bool:
        return rgw.healthz()["keys"]["kc"]["in_flight"] == 0

    assert wait_for(freed, 10, interval=0.1, what="kc's slots given back")
    r, _ = rgw.call("conc", timeout=10)
    assert r.status_code == 200


def _leaves(rgw: Rgw) -> bool:
    try:
        rgw.call("conc", timeout=1.0)
    except httpx.ReadTimeout:
        return True
    return False


def test_after_the_cool_down_one_trial_closes_the_circuit(rgw: Rgw) -> None:
    rgw.vendor.reset()
    rgw.vendor.queue(Behaviour(status=500))
    r, rid = rgw.call("flaky")
    assert r.status_code == 500  # the vendor's own answer, relayed: no fallback
    assert [(a["reason"], a["status"]) for a in rgw.attempts(rid)] == [("status_5xx", 500)]
    r, rid = rgw.call("flaky")
    assert r.status_code == 503 and [a["reason"] for a in rgw.attempts(rid)] == ["circuit_open"]

    def half_open() -> bool:
        return rgw.healthz()["services"]["flaky"]["state"] == "half-open"

    assert wait_for(half_open, 10, interval=0.1, what="flaky half-open after its 1 s cool-down")
    r, rid = rgw.call("flaky")
    assert r.status_code == 200 and [a["reason"] for a in rgw.attempts(rid)] == ["ok"]
    assert rgw.healthz()["services"]["flaky"]["state"] == "healthy"


def test_a_refused_failover_key_is_one_attempt_and_the_next_key_another(rgw: Rgw) -> None:
    rgw.vendor.reset()
    rgw.vendor.reject_keys["sk-vendor-RES-BAD"] = 401
    r, rid = rgw.call("twokeys")
    assert r.status_code == 200
    assert [(a["key"], a["status"], a["reason"]) for a in rgw.attempts(rid)] == [
        ("kbad", 401, "key_cooldown"),
        ("k1", 200, "ok"),
    ]
    assert rgw.healthz()["services"]["twokeys"]["state"] == "healthy"  # a key's fault is not the service's


def test_a_stream_whose_first_event_does_not_come_is_abandoned(rgw: Rgw) -> None:
    """The head at once, then silence: the first-byte bound covers the first event of a stream."""
    rgw.silent.queue(Behaviour(first_chunk_delay=30))
    try:
        rgw.silent.default = Behaviour()  # answers its head at once
        r, rid = rgw.call("fbstream", stream=True)
    finally:
        rgw.silent.default = Behaviour(delay=30)
    assert r.status_code == 200 and "data: [DONE]" in r.text
    assert [(a["service"], a["reason"]) for a in rgw.attempts(rid)] == [
        ("silent", "first_byte_timeout"),
        ("okfb", "ok"),
    ]
