"""Two gateways on one real PostgreSQL store: one configuration, one set of records, one
admin token, and ``aigw nodes`` listing both (a stopped one gone, a dead one stale)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_config import CRED, new_key
from helpers import GatewayProcess, wait_for
from mock_vendor import MockVendor
from servers import PostgresServer, postgres_server

from store import models, nodes, usage
from store.db import open_store
from tui.cli import main as aigw_main

__all__ = ["postgres_server"]  # the fixture, used by name

MSG = [{"role": "user", "content": "hi"}]


def config_toml(vendor: MockVendor, key: str, base: str) -> str:
    return (
        f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n'
        f'[[model_services]]\nname = "main"\nvendor = "custom"\naddress = "{vendor.url}"\n'
        'keys = ["k1"]\ndefault_model = "m"\n\n'
        f'[[model_apis]]\nname = "chat"\nbase_path = "{base}"\nservices = ["main"]\n\n'
        f'[[consumers]]\nname = "app"\napi_keys = ["{key}"]\n\n'
        '[[consumer_groups]]\nname = "g"\nconsumers = ["app"]\nmodel_apis = ["chat"]\n'
    )


@dataclass
class Cluster:
    url: str
    key: str
    tmp: Path
    gws: list[GatewayProcess]

    def aigw(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tui.cli", "--db", self.url, *args], capture_output=True, text=True, timeout=60
        )

    def nodes(self) -> list[dict[str, Any]]:
        out = self.aigw("nodes", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def chat(self, gw: GatewayProcess, base: str, rid: str) -> httpx.Response:
        return httpx.post(
            f"{gw.url}{base}/v1/chat/completions",
            json={"messages": MSG},
            timeout=30,
            headers={"Authorization": f"Bearer {self.key}", "x-request-id": rid},
        )


@pytest.fixture(scope="module")
def cluster(
    vendor: MockVendor, postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("pg")
    url = postgres_server.url()
    key = new_key("app")
    cfg = tmp / "aigw.toml"
    cfg.write_text(config_toml(vendor, key, "/one"))
    assert aigw_main(["--db", url, "import", str(cfg)]) == 0
    gws = []
    for name in ("a", "b"):
        # Each its own data directory, as on two machines: nothing shared but the database.
        home = tmp / name
        home.mkdir()
        gw = GatewayProcess(home / "aigw.db", env={"XDG_DATA_HOME": str(home)})
        gws.append(gw)
    c = Cluster(url, key, tmp, gws)
    try:
        for gw in gws:
            _start(gw, url)
        yield c
    finally:
        for gw in gws:
            gw.stop()


def _start(gw: GatewayProcess, url: str) -> None:
    """``GatewayProcess`` for a database URL: ``--db`` is the URL, the admin token comes from the store."""
    out = open(gw.log_path, "ab")  # noqa: SIM115 - handed to the child
    gw.proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "--db",
            url,
            "serve",
            "--listen",
            f"127.0.0.1:{gw.port}",
            "--admin-listen",
            f"127.0.0.1:{gw.admin_port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=gw.env,
    )
    out.close()

    def up() -> bool:
        assert gw.proc is not None
        if gw.proc.poll() is not None:
            raise RuntimeError(f"aigw serve exited {gw.proc.returncode}: {gw.output()[-2000:]}")
        return httpx.get(f"{gw.admin_url}/healthz", timeout=1).status_code == 200

    wait_for(up, 60, what="aigw serve on PostgreSQL")


def _token(home: Path) -> str:
    return (home / "aigw" / "admin.token").read_text().strip()


def test_both_nodes_are_listed_with_their_addresses(cluster: Cluster) -> None:
    found = cluster.nodes()
    assert sorted(n["listen"] for n in found) == sorted(f"127.0.0.1:{g.port}" for g in cluster.gws)
    assert sorted(n["admin_listen"] for n in found) == sorted(f"127.0.0.1:{g.admin_port}" for g in cluster.gws)
    assert all(n["state"] == "live" and n["workers"] == 1 and n["version"] for n in found)
    text = cluster.aigw("nodes")
    assert text.returncode == 0 and text.stdout.count(" live") == 2


def test_one_admin_token_for_every_node_never_printed(cluster: Cluster) -> None:
    a, b = (_token(cluster.tmp / n) for n in ("a", "b"))
    assert a == b and a.startswith("aigw-admin-")
    for gw in cluster.gws:
        r = httpx.post(f"{gw.admin_url}/reload", headers={"Authorization": f"Bearer {a}"}, timeout=10)
        assert r.status_code == 200
        assert a not in gw.output()


def test_a_config_change_reaches_both_and_records_from_both_are_stored(cluster: Cluster, vendor: MockVendor) -> None:
    cfg = cluster.tmp / "moved.toml"
    cfg.write_text(config_toml(vendor, cluster.key, "/two"))
    assert aigw_main(["--db", cluster.url, "import", str(cfg)]) == 0
    ids = []
    for i, gw in enumerate(cluster.gws):
        rid = f"pg-{i}-{time.time_ns()}"
        wait_for(lambda gw=gw: cluster.chat(gw, "/two", "probe").status_code == 200, 10, interval=0.1)
        assert cluster.chat(gw, "/two", rid).status_code == 200
        ids.append(rid)
    st = open_store(cluster.url)
    try:

        def stored() -> bool:
            with st.session() as s:
                have = {r.request_id for r in usage.recent(s, 1000)}
            return all(i in have for i in ids)

        wait_for(stored, 15, interval=0.1, what="records of both gateways")
        with st.session() as s:
            revision = int(s.get(models.Meta, "revision").value)  # type: ignore[union-attr]

        def heartbeat_has_revision() -> bool:
            return all(n["revision"] == revision for n in cluster.nodes())

        wait_for(heartbeat_has_revision, 15, interval=0.2, what="nodes reporting the new revision")
    finally:
        st.dispose()


def test_a_clean_stop_removes_the_node_and_a_dead_one_goes_stale(cluster: Cluster) -> None:
    a, b = cluster.gws
    assert a.stop() == 0
    left = cluster.nodes()
    assert [n["listen"] for n in left] == [f"127.0.0.1:{b.port}"]
    # A node that died without a word: its row stays, marked stale once old enough.
    assert b.proc is not None
    os.kill(b.proc.pid, signal.SIGKILL)
    b.proc.wait(10)
    st = open_store(cluster.url)
    try:
        with st.session() as s:
            info = nodes.list_nodes(s, now=time.time() + nodes.STALE_S + 1)
        assert [n.stale for n in info] == [True]
    finally:
        st.dispose()
    assert cluster.nodes()[0]["state"] == "live"  # not yet: seen under 15 s ago
