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

#: Imports every module of each package named in turn (found on disk, so new modules are
#: covered) and, after each, prints its name and the top-level names of everything loaded.
_LOADED = """
import importlib, pkgutil, sys
for package in sys.argv[1:]:
    root = importlib.import_module(package)
    if hasattr(root, "__path__"):
        for info in pkgutil.walk_packages(root.__path__, package + "."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    print("== " + package)
    print("\\n".join(sorted({m.split(".")[0] for m in sys.modules})), flush=True)
"""

#: One fresh interpreter per chain: a package's view is what is loaded once it and those
#: before it are imported. Every name a test forbids a package is forbidden to those before
#: it in its chain too, so sharing an interpreter hides nothing; the gateway has its own, as
#: the console would load what the gateway must not.
_CHAINS = (("store", "tui.cli", "tui"), ("proxy",))
#: The other commands the tests below run, by name.
_COMMANDS = {
    "lint-imports": ["-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
    "ruff check": ["-m", "ruff", "check", "--quiet", "."],
    "ruff format --check": ["-m", "ruff", "format", "--check", "--quiet", "."],
}
_runs: dict[str, subprocess.Popen[str]] = {}
_done: dict[str, tuple[int, str, str]] = {}


def start_beside_the_run() -> None:
    """Start every interpreter and command now (tests/conftest.py calls this once collection
    is over): each costs a second or more, and they then run on the other core while the
    tests before these run, instead of one after another at the end."""
    for name, args in [*((" ".join(c), ["-c", _LOADED, *c]) for c in _CHAINS), *_COMMANDS.items()]:
        if name not in _runs:
            _runs[name] = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )


def stop() -> None:
    """Stop what no test waited for (a run stopped early, or tests deselected after the start)."""
    for name, proc in _runs.items():
        if name not in _done and proc.poll() is None:
            proc.kill()
        proc.communicate()
    _runs.clear()


def _result(name: str) -> tuple[int, str, str]:
    """The exit code, output and errors of one of the runs (started here if not yet)."""
    if name not in _done:
        start_beside_the_run()
        out, err = _runs[name].communicate(timeout=120)
        _done[name] = (_runs[name].returncode, out, err)
    return _done[name]


def _loaded_by(package: str) -> set[str]:
    """What importing ``package`` loads, beside what the packages before it in its chain did."""
    chain = next(c for c in _CHAINS if package in c)
    code, out, err = _result(" ".join(chain))
    views = {names[0]: set(names[1:]) for names in (part.split() for part in out.split("== ")[1:])}
    assert package in views, f"importing {package} failed (exit code {code}):\n{err[-3000:]}"
    return views[package]


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
    code, out, err = _result("lint-imports")
    assert code == 0, out[-4000:] + err[-2000:]
    assert "0 broken" in out


@pytest.mark.parametrize("command", ["ruff check", "ruff format --check"], ids=["lint", "format"])
def test_ruff_is_clean(command: str) -> None:
    """The whole tree passes the project's lint rules and formatter (config in pyproject.toml)."""
    code, out, err = _result(command)
    assert code == 0, out[-3000:] + err[-1000:]
