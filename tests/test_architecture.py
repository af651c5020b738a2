"""Layering holds: the store imports neither the gateway nor the console, the gateway
never loads Textual (it must start fast and stay small), and the console reaches the
gateway only from the command line that starts it (``aigw serve``).

Two views of the same arrows: the import contracts in pyproject.toml
(``[tool.importlinter]``, every import in the source, lazy ones too), and what a fresh
interpreter really loads. A module that fails to import fails here; it is never skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Imports every module of ``packages`` (found on disk, so new modules are covered), then
#: prints the top-level names of everything loaded.
_LOADED = """
import importlib, pkgutil, sys
for package in sys.argv[1:]:
    root = importlib.import_module(package)
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
print("\\n".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


#: The packages whose fresh-interpreter imports the tests below look at.
_VIEWS = ("store", "proxy", "tui.cli", "tui")
_runs: dict[str, subprocess.Popen[str]] = {}
_seen: dict[str, tuple[int, str, str]] = {}


def _loaded_by(package: str) -> set[str]:
    """What importing ``package`` loads. The interpreters for every view start together on
    the first call (each import of Textual costs seconds; side by side they cost one)."""
    if not _runs:
        for name in _VIEWS:
            _runs[name] = subprocess.Popen(
                [sys.executable, "-c", _LOADED, name],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
    if package not in _seen:
        out, err = _runs[package].communicate(timeout=120)
        _seen[package] = (_runs[package].returncode, out, err)
    code, out, err = _seen[package]
    assert code == 0, f"importing {package} failed:\n{err[-3000:]}"
    return set(out.split())


def test_store_loads_neither_proxy_nor_tui() -> None:
    assert not _loaded_by("store") & {"proxy", "tui", "textual"}


def test_proxy_never_loads_textual_or_the_console() -> None:
    assert not _loaded_by("proxy") & {"textual", "tui"}


def test_the_cli_loads_neither_textual_nor_the_gateway_until_a_command_needs_them() -> None:
    assert not _loaded_by("tui.cli") & {"textual", "proxy"}


def test_the_console_loads_the_gateway_only_through_the_cli() -> None:
    """Every console module imports (Textual and all) without pulling in the gateway."""
    assert "proxy" not in _loaded_by("tui")


def test_import_contracts_are_kept() -> None:
    """``lint-imports`` with the contracts in pyproject.toml."""
    res = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_is_clean(args: list[str]) -> None:
    """The whole tree passes the project's lint rules and formatter (config in pyproject.toml)."""
    res = subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--quiet", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
