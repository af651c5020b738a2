"""Helpers for the protocol translation tests: recorded shapes from the vendors' API
references (``fixtures/``), and the official SDKs reading what a translation emits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from mock_vendor import MockVendor

from proxy.protocols import sse

FIXTURES = Path(__file__).parent / "fixtures"


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


@pytest.fixture
def serving(fresh_vendor: MockVendor) -> Callable[..., str]:
    """A real HTTP server answering every request with the given status and bytes, so
    an official SDK parses exactly what a translation produced. Returns its base URL."""

    def make(status: int, body: bytes, content_type: str = "application/json") -> str:
        fresh_vendor.behave(status=status, body=body, content_type=content_type)
        return fresh_vendor.base

    return make
