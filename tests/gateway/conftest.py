"""A real ``aigw serve`` per test module against the configuration of ``gateway_config``,
and a real HTTP server for the official SDKs to read a translation from."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gateway_config import ENV_VALUE, Gw, gateway_toml, new_key
from helpers import GatewayProcess, free_port
from mock_vendor import MockVendor

from store.db import Store, open_store
from tui.cli import main as aigw_main


@pytest.fixture(scope="module")
def gw(vendor: MockVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("gw")
    db = tmp / "data" / "aigw.db"
    keys = new_key("app"), new_key("off"), new_key("lonely")
    cfg = tmp / "aigw.toml"
    cfg.write_text(gateway_toml(vendor, free_port(), *keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, env={"AIGW_TEST_VENDOR_KEY": ENV_VALUE})
    proc.env.pop("AIGW_TEST_MISSING_KEY", None)
    proc.start()
    try:
        yield Gw(proc, db, *keys)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def records_store(gw: Gw) -> Iterator[Store]:
    st = open_store(str(gw.db))
    yield st
    st.dispose()


@pytest.fixture
def serving(fresh_vendor: MockVendor) -> Callable[..., str]:
    """A real HTTP server answering every request with the given status and bytes, so
    an official SDK parses exactly what a translation produced. Returns its base URL."""

    def make(status: int, body: bytes, content_type: str = "application/json") -> str:
        fresh_vendor.behave(status=status, body=body, content_type=content_type)
        return fresh_vendor.base

    return make
