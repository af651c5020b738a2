"""The screenshots in ``screenshots/`` are the screens as they are now.

A change that alters a screen without remaking its picture fails here: run
``.venv/bin/python -m tui.screenshots`` and commit the SVGs it writes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tui.screenshots import SHOTS, take_all

COMMITTED = Path(__file__).resolve().parents[2] / "screenshots"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(300)
async def test_every_screenshot_matches_its_screen(tmp_path: Path) -> None:
    made = {p.name: p for p in await take_all(tmp_path)}
    assert set(made) == {f"{name}.svg" for name, _, _ in SHOTS}
    stale = [
        name
        for name, path in made.items()
        if not (COMMITTED / name).exists() or digest(COMMITTED / name) != digest(path)
    ]
    assert not stale, f"remake with `python -m tui.screenshots`: {', '.join(sorted(stale))} changed"
    extra = {p.name for p in COMMITTED.glob("*.svg")} - set(made)
    assert not extra, f"screenshots of screens that no longer exist: {sorted(extra)}"
