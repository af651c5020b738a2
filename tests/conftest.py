"""Fixtures every tier shares (a private store in a temp dir, the recording mock vendor), and the tiers."""

from __future__ import annotations

import gc
import shutil
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


@pytest.fixture(scope="session")
def _empty_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One freshly made store, copied for each test: making the schema costs ~60 ms, a copy ~1."""
    path = tmp_path_factory.mktemp("template") / "aigw.db"
    open_store(str(path)).dispose()  # the last connection's close checkpoints the WAL away
    return path


@pytest.fixture
def store_template(_empty_store_file: Path) -> Path:
    """The file ``store`` starts as: an empty store; a module may give a filled one instead."""
    return _empty_store_file


@pytest.fixture
def store(db_path: Path, store_template: Path) -> Iterator[Store]:
    db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(store_template, db_path)
    db_path.chmod(0o600)
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
#   gateway    tests/gateway/ (a real ``aigw serve``, the mock vendors, the official SDKs),
#              and anywhere else a test that needs the mock vendor: only a real
#              ``aigw serve`` talks to it
#   unit       the rest: in process, no gateway, quick (`make check` runs them in < 10 s)

TESTS = Path(__file__).resolve().parent
TIER_BY_FOLDER = {
    "bench": "bench",
    "hardening": "hardening",
    "tui": "console",
    "cli": "cli",
    "gateway": "gateway",
}
#: Fixtures that stand for a running gateway: the mock vendor is only ever reached through one.
GATEWAY_FIXTURES = frozenset({"vendor", "fresh_vendor"})


TIERS = ("unit", "cli", "gateway", "console", "hardening", "bench")


def tier_of(item: pytest.Item) -> str:
    """The test's tier: one it names itself (a slow test in a quick folder), else by place."""
    named = [m.name for m in item.iter_markers() if m.name in TIERS]
    if named:
        return named[0]
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
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m unit`` alone need not import the folders that hold no unit test (Textual, the SDKs)."""
    if (config.getoption("markexpr", "") or "").strip() != "unit":
        return None
    try:
        top = collection_path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return True if top in TIER_BY_FOLDER or top.startswith("test_cli") else None


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> object:
    """Collect with the cycle collector off, then freeze what collection built.

    Importing the test modules builds about a million long-lived objects (the vendor SDKs'
    models above all); with the collector on, every full pass walks them all again, and
    those passes cost more than the imports. Frozen, they are out of the collector's
    sight, so the passes during the tests (and pytest's own at the end) walk only what
    the tests make. The gateway does the same after its start-up.
    """
    gc.disable()
    try:
        return (yield)
    finally:
        gc.freeze()
        gc.enable()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Collect once, then freeze what is left: pytest's own closing passes (it runs five, to
    catch errors raised in finalizers) then walk only what that one pass left behind."""
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Let a test module start its slow subprocesses (``start_beside_the_run``) now, so they
    run on the other core beside the tests before it rather than one after another."""
    if session.config.option.collectonly:
        return
    for module in {item.module for item in session.items if isinstance(item, pytest.Function)}:
        start = getattr(module, "start_beside_the_run", None)
        if start is not None:
            start()
            session.config.add_cleanup(module.stop)


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
