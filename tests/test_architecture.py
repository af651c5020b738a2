"""Layering holds at run time: the store imports neither the gateway nor the console,
and the gateway never loads Textual (it must start fast and stay small)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _modules_after(import_stmt: str) -> set[str]:
    code = f"import sys; {import_stmt}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["store.repo", "store.config_io", "store.usage", "store.db"])
def test_store_imports_neither_proxy_nor_tui(module: str) -> None:
    mods = _modules_after(f"import {module}")
    assert not {m for m in mods if m.split(".")[0] in ("proxy", "tui", "textual")}


def test_cli_import_does_not_load_textual() -> None:
    mods = _modules_after("import tui.cli")
    assert "textual" not in mods


def test_proxy_never_imports_textual() -> None:
    pytest.importorskip("proxy.serve")
    mods = _modules_after("import proxy.serve, proxy.data_plane")
    assert not {m for m in mods if m.split(".")[0] in ("textual", "tui")}


def test_ruff_is_clean() -> None:
    """The whole tree passes the project's lint rules (config in pyproject.toml)."""
    pytest.importorskip("ruff")
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--quiet", "store", "proxy", "tui", "tests"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
