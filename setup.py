"""Builds aigw; compiles the gateway's request path to C with mypyc when it can.

Everything about the package lives in ``pyproject.toml``; this file only adds the
compiled modules. The request path (HTTP layer, vendor client, pipeline stages, limits,
records, translations) is typed Python that mypy checks strictly; mypyc turns those
modules into one C extension that runs the same code with a fifth to a quarter less
CPU per request. ``proxy/native.py`` decides at import whether the compiled modules
are used: only when they were built from exactly the sources beside them.

When mypyc, a C compiler or the build fails, or ``AIGW_PURE_PYTHON=1`` is set, the
package installs as pure Python and works the same, slower.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
#: The shared library: ``proxy/_compiled__mypyc.*.so``, inside the package, where an
#: editable install finds it (a top-level module would only be found from the checkout).
GROUP = "proxy._compiled"
#: What ``proxy/native.py`` reads: the group and each compiled module's source digest.
MANIFEST = "proxy/native.json"

#: The modules a request goes through. Left out: start-up, admin, supervision, Redis
#: (their time is in I/O or happens once) and ``upstream_errors`` (classes with two bases).
COMPILED = [
    "proxy/balancer.py",
    "proxy/cache_stage.py",
    "proxy/circuit.py",
    "proxy/context.py",
    "proxy/errors.py",
    "proxy/events.py",
    "proxy/flow_control.py",
    "proxy/heads.py",
    "proxy/http_server.py",
    "proxy/key_slots.py",
    "proxy/limits.py",
    "proxy/metrics.py",
    "proxy/outbound.py",
    "proxy/pipeline.py",
    "proxy/protocols/anthropic_to_openai.py",
    "proxy/protocols/openai_to_anthropic.py",
    "proxy/protocols/responses_bridge.py",
    "proxy/protocols/sse.py",
    "proxy/protocols/tool_args.py",
    "proxy/protocols/translation.py",
    "proxy/protocols/usage.py",
    "proxy/recorder.py",
    "proxy/relay.py",
    "proxy/routes.py",
    "proxy/usage.py",
    "proxy/vendor_client.py",
]


def _say(message: str) -> None:
    print(f"aigw build: {message}", file=sys.stderr)


def _digests() -> dict[str, str]:
    return {p: hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in COMPILED}


class OptionalBuildExt(build_ext):
    """All the compiled modules or none: a failed build leaves pure Python, never half."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, a compile error
            _say(f"compiling failed ({exc}); installing pure Python")
            self._remove_outputs()
            return
        manifest = json.dumps({"group": GROUP, "modules": _digests()}, indent=1, sort_keys=True)
        for base in {Path(self.build_lib), ROOT} if self.inplace or self.editable_mode else {Path(self.build_lib)}:
            (base / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
            (base / MANIFEST).write_text(manifest + "\n")

    def _remove_outputs(self) -> None:
        for ext in self.extensions:
            for base in (Path(self.build_lib), ROOT):
                out = base / self.get_ext_filename(ext.name)
                out.unlink(missing_ok=True)
        for base in (Path(self.build_lib), ROOT):
            (base / MANIFEST).unlink(missing_ok=True)


#: The commands that build; the others (metadata, the build's own requirements) need no
#: compiling, and mypyc's type check alone takes half a minute.
BUILDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}


def _current_in_place() -> bool:
    """The checkout already holds extensions built from exactly these sources (a second
    ``pip install -e .``): asked of ``proxy/native.py``, the rule the import itself follows."""
    spec = importlib.util.spec_from_file_location("aigw_native_check", ROOT / "proxy" / "native.py")
    if spec is None or spec.loader is None:
        return False
    check = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = check  # its dataclasses look their module up there
    spec.loader.exec_module(check)
    try:
        record = json.loads((ROOT / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if record.get("group") != GROUP or set(record.get("modules", ())) != set(COMPILED):
        return False  # built from another list of modules
    return bool(check.choose(ROOT / "proxy", {}).compiled)


def _extensions() -> list[Any]:
    if not BUILDS & set(sys.argv[1:]):
        return []
    if not os.environ.get("AIGW_PURE_PYTHON") and "editable_wheel" in sys.argv and _current_in_place():
        _say("the compiled request path is current; nothing to build")
        return []
    (ROOT / MANIFEST).unlink(missing_ok=True)  # written again only by a build that succeeds
    if os.environ.get("AIGW_PURE_PYTHON"):
        _say("AIGW_PURE_PYTHON is set; installing pure Python")
        return []
    try:
        from mypyc.build import mypycify

        return list(mypycify(COMPILED, opt_level="3", group_name=GROUP))
    except BaseException as exc:  # mypyc missing, or its type check failed (it exits)
        if isinstance(exc, KeyboardInterrupt):
            raise
        _say(f"mypyc could not compile the request path ({exc!r}); installing pure Python")
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
