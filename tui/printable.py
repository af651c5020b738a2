"""Client-chosen text made safe to print: every control character shown as its escape.

A request's model name, path, request id or error come from whoever called the
gateway. Printed raw, ``"\\x1b[2J\\nforged"`` would clear the operator's screen and start
a line that looks like a real record. Every field the CLI or the console prints from a
record passes through :func:`printable`: C0/C1 controls, DEL and the bidirectional
overrides (which reorder what is shown) become visible escapes such as ``\\x1b``, ``\\n``.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

#: Format characters that reorder text on screen (a line reading one thing, meaning another).
_BIDI = {
    "\u061c",
    "\u200e",
    "\u200f",
    *(chr(c) for c in range(0x202A, 0x202F)),
    *(chr(c) for c in range(0x2066, 0x206A)),
}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``str(value)`` with each control character replaced by its backslash escape."""
    text = "" if value is None else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(
        _escape(ch) if ch in _NAMED or ch in _BIDI or unicodedata.category(ch) == "Cc" else ch for ch in text
    )


def printable_record(rec: dict[str, Any]) -> dict[str, Any]:
    """The record with every string field made printable (numbers and flags as they are)."""
    return {k: printable(v) if isinstance(v, str) else v for k, v in rec.items()}


def printable_json(obj: Any, **kwargs: Any) -> str:
    """JSON as ``json.dumps`` writes it (C0 controls already escaped), with DEL, C1 controls
    and bidirectional overrides escaped too: still valid JSON, safe on a terminal."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    # ``json.dumps`` escapes C0 controls inside strings: a raw newline is its own indent.
    return "".join(
        f"\\u{ord(ch):04x}" if ch != "\n" and (ch in _BIDI or unicodedata.category(ch) == "Cc") else ch for ch in text
    )
