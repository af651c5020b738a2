"""Whether the request path runs compiled, decided once, before any of it is imported.

The install compiles the request path's modules with mypyc (see ``setup.py``) and
records each one's source digest in ``native.json``. In a checkout the C extensions sit
beside the sources they were built from, and Python prefers an extension to a source
file: after an edit (or a ``git pull``) the old code would run, silently. So the
compiled modules are used only when every digest still matches; otherwise, and when
``AIGW_PURE_PYTHON=1`` is set, every one of them is loaded from its source — all or
none, because compiled modules call each other directly and a mix would run both
versions. ``aigw serve`` logs which it is (:data:`HOW`).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

MANIFEST = "native.json"
#: How to rebuild, named in the reason when the compiled modules are out of date.
REBUILD = "rebuild with `pip install -e .`"


@dataclass(frozen=True)
class Choice:
    compiled: bool
    #: One line for the log: compiled, or why not.
    how: str
    #: Modules with an extension beside them that must come from their source instead.
    from_source: frozenset[str]


def extension_modules(directory: Path) -> frozenset[str]:
    """Dotted names, under ``directory``'s package, of the modules with a C extension file
    (``http_server``, ``protocols.sse``)."""
    names: set[str] = set()
    suffixes = sorted(importlib.machinery.EXTENSION_SUFFIXES, key=len, reverse=True)
    for path in directory.rglob("*"):
        # The longest suffix that fits: ``a.cpython-311-x86_64-linux-gnu.so`` is ``a``, not ``a.cpython-…``.
        suffix = next((s for s in suffixes if path.name.endswith(s)), None)
        if suffix is not None:
            parts = path.relative_to(directory).parts
            names.add(".".join([*parts[:-1], path.name[: -len(suffix)]]))
    return frozenset(names)


def _source(directory: Path, name: str) -> Path:
    return directory.joinpath(*name.split(".")).with_suffix(".py")


def choose(directory: Path, environ: Mapping[str, str]) -> Choice:
    present = extension_modules(directory)
    built = frozenset(n for n in present if not n.endswith("__mypyc"))  # the group's library is not a module
    if not built:
        return Choice(False, "pure Python (the request path was not compiled at install)", built)
    if environ.get("AIGW_PURE_PYTHON"):
        return Choice(False, "pure Python (AIGW_PURE_PYTHON is set)", built)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        library = str(manifest["group"]).rpartition(".")[2] + "__mypyc"
        # "proxy/protocols/sse.py" -> "protocols.sse": paths from the checkout's root.
        digests = {".".join(Path(p).with_suffix("").parts[1:]): str(d) for p, d in dict(manifest["modules"]).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Choice(False, f"pure Python (compiled modules without their build record; {REBUILD})", built)
    if set(digests) != built:
        return Choice(False, f"pure Python (the compiled modules are from another build; {REBUILD})", built)
    for name, digest in sorted(digests.items()):
        try:
            now = hashlib.sha256(_source(directory, name).read_bytes()).hexdigest()
        except OSError:
            now = ""
        if now != digest:
            shown = _source(directory, name).relative_to(directory)
            return Choice(False, f"pure Python ({shown} changed since it was compiled; {REBUILD})", built)
    if library not in present:
        return Choice(False, f"pure Python (the compiled modules' library {library} is missing; {REBUILD})", built)
    return Choice(True, f"compiled with mypyc ({len(built)} modules of the request path)", frozenset())


class SourceFirst(importlib.abc.MetaPathFinder):
    """Loads ``package.name`` from its source for the (dotted) names given, whatever lies beside it."""

    def __init__(self, package: str, directory: Path, names: frozenset[str]) -> None:
        self.package = package
        self.directory = directory
        self.names = names

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        prefix = self.package + "."
        name = fullname[len(prefix) :] if fullname.startswith(prefix) else ""
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, _source(self.directory, name))


def apply(package: str, directory: Path, environ: Mapping[str, str]) -> Choice:
    """Decide for ``package`` and, when its sources must win, put them first on the import path."""
    choice = choose(directory, environ)
    if choice.from_source and not any(isinstance(f, SourceFirst) and f.package == package for f in sys.meta_path):
        sys.meta_path.insert(0, SourceFirst(package, directory, choice.from_source))
    return choice


def _decide() -> Choice:
    package = __name__.rpartition(".")[0]
    if not package:  # loaded by path, by the build asking whether the extensions are current
        return Choice(False, "pure Python (not imported as part of the package)", frozenset())
    return apply(package, Path(__file__).parent, os.environ)


_CHOICE = _decide()
#: True when the request path runs as compiled code.
COMPILED = _CHOICE.compiled
#: Compiled, or why not: one line ``aigw serve`` logs at start-up.
HOW = _CHOICE.how
