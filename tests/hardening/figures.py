"""Figures the hardening suites measure (inputs tried, faults survived…), for the README.

Each suite adds counts with :func:`add`; when ``AIGW_FIGURES`` names a file, every
figure is appended to it as one JSON line at the end of the module, so
``AIGW_FIGURES=/tmp/f.jsonl pytest tests/hardening`` reproduces the README's table.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import orjson

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_values: dict[str, Any] = {}


def add(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


def put(name: str, value: Any) -> None:
    with _lock:
        _values[name] = value


def get(name: str) -> int:
    return _counts[name]


def dump(module: str) -> None:
    """Append this module's figures to ``$AIGW_FIGURES`` (if set) and reset them."""
    path = os.environ.get("AIGW_FIGURES")
    with _lock:
        data = {"module": module, "time": time.time(), "counts": dict(_counts), "values": dict(_values)}
        _counts.clear()
        _values.clear()
    if path:
        with open(path, "ab") as f:
            f.write(orjson.dumps(data) + b"\n")
