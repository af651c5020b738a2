"""Fixtures every tier shares (a private store in a temp dir, the recording mock vendor), and the tiers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The repository root too: with the editable install alone it is not on sys.path, and then
# tests/store, tests/tui, tests/proxy (folders without __init__.py, on sys.path through
# tests/) would shadow the real packages as namespace packages (store.__version__ missing).
sys.path.insert(1, str(Path(__file__).parent.parent))

from helpers import GatewayProcess
from mock_vendor import MockVendor

from store.db import Store, open_store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "aigw.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    st = open_store(str(db_path))
    yield st
    st.dispose()


@pytest.fixture(scope="module")
def vendor() -> Iterator[MockVendor]:
    """One mock vendor per module (reset between tests by ``fresh_vendor``)."""
    with MockVendor() as v:
        yield v


@pytest.fixture
def fresh_vendor(vendor: MockVendor) -> MockVendor:
    vendor.reset()
    return vendor


# ---------------------------------------------------------------- tiers
#
# Every test lands in exactly one tier, chosen here from where it lives and what it
# needs, so a new test is tiered without a marker of its own:
#
#   bench      tests/bench/       the benchmark's smoke run
#   hardening  tests/hardening/   attacks on a real gateway process
#   console    tests/tui/         the Textual console through Pilot
#   cli        tests/cli/, tests/test_cli*.py   whole `aigw` commands on a real SQLite file
#   gateway    anywhere else, when it needs the mock vendor: only a real ``aigw serve``
#              talks to it
#   unit       the rest: in process, no gateway, quick (`make check` runs them in < 10 s)

TESTS = Path(__file__).resolve().parent
TIER_BY_FOLDER = {"bench": "bench", "hardening": "hardening", "tui": "console", "cli": "cli"}
#: Fixtures that stand for a running gateway: the mock vendor is only ever reached through one.
GATEWAY_FIXTURES = frozenset({"vendor", "fresh_vendor"})


def tier_of(item: pytest.Item) -> str:
    top = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]  # a folder or a file
    if top in TIER_BY_FOLDER:
        return TIER_BY_FOLDER[top]
    if top.startswith("test_cli"):
        return "cli"
    if GATEWAY_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "gateway"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier_of(item))


@pytest.fixture(autouse=True)
def _unit_tests_start_no_gateway(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts ``aigw serve`` is in the wrong tier: say so instead of running slowly."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self: GatewayProcess, timeout: float = 20.0) -> GatewayProcess:
        raise AssertionError(
            f"{request.node.nodeid} starts a gateway process but is tiered `unit`: "
            "use the `vendor` fixture (or move the test into a gateway folder) so it is tiered `gateway`"
        )

    monkeypatch.setattr(GatewayProcess, "start", refuse)
