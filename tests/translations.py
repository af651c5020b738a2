"""What the protocol translation tests share: the recorded shapes from the vendors' API
references (``protocols/fixtures/``) and a client's view of what a translator emits.

A module rather than a conftest: the golden tests (``tests/protocols``, unit tier) and the
tests where the official SDKs read the same translations (``tests/gateway``) both use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from proxy.protocols import sse

FIXTURES = Path(__file__).parent / "protocols" / "fixtures"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def events(stream: Iterable[bytes]) -> list[sse.Event]:
    """What a client's SSE reader gets from the bytes a translator emitted."""
    parser = sse.SSEParser()
    out: list[sse.Event] = []
    for piece in stream:
        out.extend(parser.feed(piece))
    return [*out, *parser.close()]


def replay(translator: Any, items: Iterable[Any]) -> list[bytes]:
    """Feed a translator as the gateway will: each vendor event, then the end."""
    out: list[bytes] = []
    for item in items:
        out.extend(translator.feed(item))
    out.extend(translator.close())
    return out
