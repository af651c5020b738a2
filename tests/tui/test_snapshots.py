"""Snapshot tests of the main console screens, from the deterministic demo store.

Regenerate after an intended change: ``pytest tests/tui/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from store.db import Store
from tui.screenshots import build_demo_store, demo_app, demo_clock, ready, settle
from tui.sections import SECTIONS

SNAP_DIR = Path(tempfile.gettempdir()) / "aigw-snapshots"


@pytest.fixture(scope="module")
def demo() -> Iterator[Store]:
    store = build_demo_store(SNAP_DIR)
    yield store
    store.dispose()


@pytest.fixture(autouse=True)
def held_clock() -> Iterator[None]:
    """Traffic, Usage and the limits panes read the clock: hold it at the demo's time."""
    with demo_clock():
        yield


def shot(snap_compare: Any, store: Store, section: str, *keys: str, size: tuple[int, int] = (160, 48)) -> bool:
    app = demo_app(store, section)

    async def run_before(pilot: Any) -> None:
        await settle(pilot, app, ready(app))
        for key in keys:
            await pilot.press(key)
            await settle(pilot, app)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.3)  # the last load's layout (a table shown, a scrollbar) has landed

    return bool(snap_compare(app, terminal_size=size, run_before=run_before))


Snap = Callable[..., bool]


class TestInstanceInfo:
    def test_instance_info(self, snap_compare: Snap, demo: Store) -> None:
        """Listen, public URL, admin address, database, version and the stopped gateway."""
        assert shot(snap_compare, demo, "instance")


class TestKeyManagement:
    def test_key_list_masks_credentials(self, snap_compare: Snap, demo: Store) -> None:
        """Model keys listed with the credential masked and env: references shown."""
        assert shot(snap_compare, demo, "model-keys")

    def test_key_list_narrow(self, snap_compare: Snap, demo: Store) -> None:
        """The same screen at 80×24 keeps the sidebar, table and footer usable."""
        assert shot(snap_compare, demo, "model-keys", size=(80, 24))


class TestModelServices:
    def test_service_form(self, snap_compare: Snap, demo: Store) -> None:
        """Editing a service: vendor preset, address, keys, policies, default model, prices."""
        assert shot(snap_compare, demo, "model-services", "down", "enter")


class TestRouteManagement:
    def test_route_management(self, snap_compare: Snap, demo: Store) -> None:
        """Request path, full access URL, the example curl with real values and Try it."""
        assert shot(snap_compare, demo, "model-apis", "down", "t")


class TestConsumers:
    def test_consumer_keys_by_prefix(self, snap_compare: Snap, demo: Store) -> None:
        """Consumers with quota and groups; the highlighted one's keys listed by prefix."""
        assert shot(snap_compare, demo, "consumers", "down")


class TestConsumerGroups:
    def test_authorized_model_apis_tab(self, snap_compare: Snap, demo: Store) -> None:
        """A group's Authorized Model APIs tab with rate limits in the table."""
        assert shot(snap_compare, demo, "consumer-groups", "right_square_bracket")


class TestEverySectionAt80x24:
    """Each section at 80×24: its table's first columns, its buttons and its footer keys in view."""

    @pytest.mark.parametrize("section", [s.id for s in SECTIONS])
    def test_section_narrow(self, snap_compare: Snap, demo: Store, section: str) -> None:
        """The section as a new user on a small terminal first sees it."""
        assert shot(snap_compare, demo, section, size=(80, 24))
