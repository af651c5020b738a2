"""Hardening fixtures: a real ``aigw serve`` per module, the mock and the fault vendors.

Tests marked ``slow`` in this folder are skipped unless selected on purpose
(``pytest -m slow tests/hardening`` or ``AIGW_SLOW=1``), so the normal suite stays fast.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_vendor import FaultVendor
from hhelpers import HGw, raise_fd_limit, start_gateway
from mock_vendor import MockVendor
from vendor_gw import self_signed

from store.db import Store, open_store

HERE = Path(__file__).resolve().parent

raise_fd_limit()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("AIGW_SLOW") == "1"
    if wanted:
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow tests/hardening` or AIGW_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow") and HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultVendor]:
    fv = FaultVendor().start()
    yield fv
    fv.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key, for vendors behind TLS."""
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_vendor(certs: tuple[Path, Path]) -> Iterator[FaultVendor]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certs)
    fv = FaultVendor(tls=ctx).start()
    yield fv
    fv.stop()


@pytest.fixture(scope="module")
def hgw(vendor: MockVendor, fault: FaultVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HGw]:
    gw = start_gateway(tmp_path_factory.mktemp("hgw"), vendor, fault)
    try:
        yield gw
    finally:
        gw.proc.stop()


@pytest.fixture(scope="module")
def hstore(hgw: HGw) -> Iterator[Store]:
    st = open_store(str(hgw.db))
    yield st
    st.dispose()


@pytest.fixture(scope="module", autouse=True)
def _figures(request: pytest.FixtureRequest) -> Iterator[None]:
    import figures

    yield
    figures.dump(request.module.__name__)
