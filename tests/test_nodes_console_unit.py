"""The console's rules for several gateways on one store, without any gateway: which admin
URL reaches a node, which nodes to follow, each record once, the rate summed per gateway."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from store.nodes import NodeInfo, admin_url
from store.spec import is_loopback, listen_url
from tui.data.nodes import ClusterRate, fmt_ago, follow_targets, short_id
from tui.data.traffic_feed import SeenRecords
from tui.follow import OWN, MergedFollow, SourceState


def node(
    node_id: str, *, host: str = "here", admin: str = "127.0.0.1:8081", stale: bool = False, seen: float = 100.0
) -> NodeInfo:
    return NodeInfo(node_id, host, "0.0.0.0:8080", admin, 1, "1.0", 3, 0.0, seen, stale)


@pytest.mark.parametrize(
    ("host", "admin", "url"),
    [
        ("here", "0.0.0.0:8081", "http://127.0.0.1:8081"),  # this machine: a wildcard is loopback
        ("here", "[::]:8081", "http://[::1]:8081"),
        ("here", "127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("gw-b", "0.0.0.0:8081", "http://gw-b:8081"),  # another machine: its wildcard is its name
        ("gw-b", "10.0.0.7:8081", "http://10.0.0.7:8081"),
        ("gw-b", "127.0.0.1:8081", None),  # loopback there: nobody here can reach it
        ("gw-b", "localhost:8081", None),
        ("gw-b", "[::1]:8081", None),
    ],
)
def test_admin_url_from_this_machine(host: str, admin: str, url: str | None) -> None:
    assert admin_url(node("n", host=host, admin=admin), here="here") == url


def test_listen_url_and_loopback() -> None:
    assert listen_url("0.0.0.0:9") == "http://127.0.0.1:9"
    assert listen_url("[::]:9", "gw-b") == "http://gw-b:9"
    assert is_loopback("127.0.0.2:1") and is_loopback("[::1]:1") and not is_loopback("0.0.0.0:1")


def test_follow_targets_skip_own_stale_and_a_listener_reached_twice() -> None:
    found = [
        node("own-1-aaaaaa", admin="0.0.0.0:8081"),  # the console's own gateway, by its wildcard
        node("b-2-bbbbbb", admin="127.0.0.1:9001"),
        node("c-3-cccccc", admin="0.0.0.0:9001"),  # the same listener as b, spelt differently
        node("d-4-dddddd", admin="127.0.0.1:9002", stale=True),
        node("e-5-eeeeee", host="gw-e", admin="127.0.0.1:8081"),
        node("f-6-ffffff", host="gw-f", admin="0.0.0.0:8081"),
    ]
    t = follow_targets(found, "http://127.0.0.1:8081", here="here")
    assert t.follow == {"b-2-bbbbbb": "http://127.0.0.1:9001", "f-6-ffffff": "http://gw-f:8081"}
    assert list(t.unreachable) == ["e-5-eeeeee"] and "loopback on gw-e" in t.unreachable["e-5-eeeeee"]


def test_seen_records_pass_each_record_once_and_forget_the_oldest() -> None:
    seen = SeenRecords(maxlen=3)
    a = {"request_id": "a", "ts": 1.0001}
    assert seen.first_time(a)
    assert not seen.first_time({"request_id": "a", "ts": 1.0001})  # the same record from another stream
    assert seen.first_time({"request_id": "a", "ts": 2.0})  # the same id reused later: another request
    for rid in "bcd":
        assert seen.first_time({"request_id": rid, "ts": 1.0})
    assert seen.first_time(a)  # forgotten: only the last 3 are kept


def test_seen_records_from_several_threads_count_each_once() -> None:
    seen = SeenRecords()
    recs = [{"request_id": f"r{i}", "ts": float(i)} for i in range(2000)]
    passed: list[int] = []

    def stream() -> None:
        passed.append(sum(seen.first_time(dict(r)) for r in recs))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(passed) == len(recs)


def test_cluster_rate_sums_gateways_and_drops_one_that_went() -> None:
    rate = ClusterRate()
    assert rate.observe({"a": 0, "b": 100}, now=0.0) is None  # one sample each: no rate yet
    assert rate.observe({"a": 20, "b": 130}, now=10.0) == 5.0  # 2/s + 3/s
    assert rate.observe({"a": 40}, now=20.0) == 2.0  # b gone: a alone
    # b back (a new gateway: no rate of its own yet); a over its last 10 s window
    assert rate.observe({"a": 40, "b": 0}, now=21.0) == pytest.approx(20 / 11)


def test_short_id_and_ago() -> None:
    assert short_id("gw-a-4121-1f2e3d") == "gw-a-4121"
    assert short_id("custom") == "custom"
    assert fmt_ago(2.4) == "2s ago" and fmt_ago(95) == "1m ago" and fmt_ago(7300) == "2h ago"


class Recorder:
    """Collects what a :class:`MergedFollow` spawns and reports, running nothing."""

    def __init__(self) -> None:
        self.spawned: list[str] = []
        self.changes: list[list[SourceState]] = []

    def spawn(self, run: Callable[[], None], name: str) -> None:
        self.spawned.append(name)


def test_merged_follow_sources_appear_and_go() -> None:
    rec = Recorder()
    merged = MergedFollow(lambda r: None, rec.changes.append, spawn=rec.spawn, token=lambda: "t")
    merged.follow_own(lambda: ("http://127.0.0.1:1", "t"))
    merged.set_nodes({"b": "http://127.0.0.1:2"}, {"c": "loopback on gw-c"})
    assert [s.key for s in merged.states()] == [OWN, "b", "c"]
    assert rec.spawned == ["events own gateway", "events b"]  # c cannot be reached: nothing to run
    c = merged.states()[2]
    assert not c.connected and c.reason == "loopback on gw-c"
    calls = len(rec.changes)
    merged.set_nodes({"b": "http://127.0.0.1:2"}, {"c": "loopback on gw-c"})
    assert len(rec.changes) == calls and len(rec.spawned) == 2  # nothing changed: nothing said or started
    merged.set_nodes({}, {})
    assert [s.key for s in merged.states()] == [OWN]  # the console's own gateway is always followed
    merged.set_nodes({"b": "http://127.0.0.1:3"}, {})  # b moved: followed at the new address
    assert rec.spawned == ["events own gateway", "events b", "events b"]
    assert merged.states()[1].base == "http://127.0.0.1:3"
    merged.close()
    merged.set_nodes({"d": "http://127.0.0.1:4"}, {})
    assert len(rec.spawned) == 3  # closed: starts nothing more


def test_merged_follow_passes_each_record_once() -> None:
    got: list[str] = []
    merged = MergedFollow(lambda r: got.append(r["request_id"]), lambda s: None, spawn=Recorder().spawn, token=str)
    for rid in ["a", "b", "a", "c", "b"]:
        merged._record({"request_id": rid, "ts": 1.0})
    assert got == ["a", "b", "c"]
