"""The request path runs compiled only when it was built from exactly the sources beside it."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from proxy import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
ROOT = Path(__file__).resolve().parents[2]


def _package(tmp: Path, sources: dict[str, str], group: str | None = "pkg.grp") -> Path:
    """A package dir whose modules each have a (bogus) extension file, the group's library
    and a build record, as the install leaves them."""
    d = tmp / "pkg"
    d.mkdir()
    digests = {}
    for name, text in sources.items():
        (d / f"{name}.py").write_text(text)
        (d / f"{name}{SUFFIX}").write_bytes(b"not a shared object")
        digests[f"pkg/{name}.py"] = hashlib.sha256(text.encode()).hexdigest()
    if group is not None:
        (d / f"{group.rpartition('.')[2]}__mypyc{SUFFIX}").write_bytes(b"not a library")
        (d / native.MANIFEST).write_text(json.dumps({"group": group, "modules": digests}))
    return d


def test_a_build_matching_its_sources_is_used(tmp_path: Path) -> None:
    d = _package(tmp_path, {"a": "X = 1\n", "b": "Y = 2\n"})
    choice = native.choose(d, {})
    assert choice.compiled and choice.from_source == frozenset()
    assert "compiled with mypyc (2 modules" in choice.how


def test_no_extension_is_pure_python_with_nothing_to_redirect(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    choice = native.choose(tmp_path, {})
    assert not choice.compiled and choice.from_source == frozenset()
    assert "not compiled" in choice.how


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (lambda d: (d / "b.py").write_text("Y = 3\n"), "b.py changed since it was compiled"),
        (lambda d: (d / native.MANIFEST).unlink(), "without their build record"),
        (lambda d: (d / native.MANIFEST).write_text("{not json"), "without their build record"),
        (lambda d: (d / f"c{SUFFIX}").write_bytes(b""), "from another build"),
        (lambda d: (d / f"a{SUFFIX}").unlink(), "from another build"),
        (lambda d: (d / "a.py").unlink(), "a.py changed since it was compiled"),
    ],
    ids=["edited", "no-record", "bad-record", "extra-extension", "missing-extension", "source-gone"],
)
def test_any_mismatch_sends_every_module_to_its_source(tmp_path: Path, spoil, says: str) -> None:
    d = _package(tmp_path, {"a": "X = 1\n", "b": "Y = 2\n"})
    spoil(d)
    choice = native.choose(d, {})
    assert not choice.compiled and says in choice.how and native.REBUILD in choice.how
    # Every module that still has an extension: compiled modules call each other directly.
    assert choice.from_source == native.extension_modules(d) - {"grp__mypyc"} and choice.from_source


def test_a_missing_shared_library_sends_them_to_source(tmp_path: Path) -> None:
    d = _package(tmp_path, {"a": "X = 1\n"})
    (d / f"grp__mypyc{SUFFIX}").unlink()
    choice = native.choose(d, {})
    assert not choice.compiled and "grp__mypyc is missing" in choice.how


def test_the_environment_can_ask_for_pure_python(tmp_path: Path) -> None:
    d = _package(tmp_path, {"a": "X = 1\n"})
    choice = native.choose(d, {"AIGW_PURE_PYTHON": "1"})
    assert not choice.compiled and choice.from_source == {"a"} and "AIGW_PURE_PYTHON" in choice.how


def test_sources_win_over_the_extensions_beside_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``apply`` installs makes the import system read ``a.py``, not the broken ``a.so``."""
    d = _package(tmp_path, {"__init__": "", "a": "X = 41 + 1\n"})
    (d / f"__init__{SUFFIX}").unlink()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    with pytest.raises(ImportError):  # what happens without it: the extension is picked
        importlib.import_module("pkg.a")
    sys.modules.pop("pkg.a", None)
    choice = native.apply("pkg", d, {})
    assert not choice.compiled
    try:
        assert importlib.import_module("pkg.a").X == 42
        native.apply("pkg", d, {})  # once is enough: a second call adds no second finder
        assert sum(isinstance(f, native.SourceFirst) and f.package == "pkg" for f in sys.meta_path) == 1
    finally:
        for name in ("pkg", "pkg.a"):
            sys.modules.pop(name, None)


def test_the_build_compiles_what_it_records() -> None:
    """``setup.py``'s list names real modules, none of them the choosing module itself."""
    text = (ROOT / "setup.py").read_text()
    listed = [line.strip().strip('",') for line in text.splitlines() if line.strip().startswith('"proxy/')]
    assert listed and all((ROOT / p).is_file() for p in listed)
    assert "proxy/native.py" not in listed and "proxy/upstream_errors.py" not in listed


def test_a_subpackage_module_is_checked_and_loaded_from_source_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``proxy/protocols/sse.py`` is ``protocols.sse``: its digest counts, and its source wins."""
    d = _package(tmp_path, {"__init__": "", "a": "X = 1\n"})
    (d / f"__init__{SUFFIX}").unlink()
    sub = d / "sub"
    sub.mkdir()
    (sub / "__init__.py").write_text("")
    (sub / "m.py").write_text("Y = 7\n")
    (sub / f"m{SUFFIX}").write_bytes(b"not a shared object")
    record = json.loads((d / native.MANIFEST).read_text())
    record["modules"].pop("pkg/__init__.py")
    record["modules"]["pkg/sub/m.py"] = hashlib.sha256(b"Y = 7\n").hexdigest()
    (d / native.MANIFEST).write_text(json.dumps(record))
    assert native.extension_modules(d) == {"a", "sub.m", "grp__mypyc"}
    assert native.choose(d, {}).compiled
    (sub / "m.py").write_text("Y = 8\n")
    choice = native.choose(d, {})
    assert not choice.compiled and "sub/m.py changed since it was compiled" in choice.how
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    native.apply("pkg", d, {})
    try:
        assert importlib.import_module("pkg.sub.m").Y == 8
    finally:
        for name in ("pkg", "pkg.sub", "pkg.sub.m", "pkg.a"):
            sys.modules.pop(name, None)


def _imports(path: Path) -> set[str]:
    """The dotted names a module imports, as mypy follows them (``TYPE_CHECKING`` too)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.add(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.add(node.module)
    return names


def _source(module: str) -> Path | None:
    for candidate in (
        (ROOT / Path(*module.split("."))).with_suffix(".py"),
        ROOT / Path(*module.split(".")) / "__init__.py",
    ):
        if candidate.is_file():
            return candidate
    return None


def test_the_build_can_see_every_package_the_compiled_modules_reach() -> None:
    """pip builds the extensions before it installs the dependencies, and mypyc's type
    check fails on an import it cannot find (then the install is pure Python): every
    third-party package the compiled modules import, directly or through our own modules,
    is a build requirement."""
    text = (ROOT / "setup.py").read_text()
    todo = [ROOT / line.strip().strip('",') for line in text.splitlines() if line.strip().startswith('"proxy/')]
    seen: set[Path] = set()
    third_party: set[str] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.partition(".")[0]
            if top in {"proxy", "store", "tui"}:
                found = _source(name) or _source(name.rpartition(".")[0])
                if found is not None:
                    todo.append(found)
            elif top not in sys.stdlib_module_names and top != "__future__":
                third_party.add(top)
    distributions = importlib.metadata.packages_distributions()
    needed = {distributions[top][0].lower() for top in third_party}
    with (ROOT / "pyproject.toml").open("rb") as f:
        requires = tomllib.load(f)["build-system"]["requires"]
    have = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requires}
    assert third_party and needed <= have, f"add to [build-system] requires: {sorted(needed - have)}"
