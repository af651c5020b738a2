"""Fixtures every tier shares: a private store in a temp dir, the recording mock vendor."""

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
