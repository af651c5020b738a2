"""The SSE parser: events split anywhere across reads come out whole, and an event that
never ends cannot grow past the bound."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.protocols import sse

STREAM = (
    b": keep-alive\n\n"
    b'event: message_start\ndata: {"type": "message_start"}\n\n'
    b'data: {"a": 1}\r\n\r\n'
    b"event: ping\rdata: {}\r\r"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    sse.Event("message_start", '{"type": "message_start"}'),
    sse.Event(None, '{"a": 1}'),
    sse.Event("ping", "{}"),
    sse.Event(None, "line one\nline two"),
    sse.Event(None, "[DONE]"),
]


def test_whole_stream() -> None:
    parser = sse.SSEParser()
    assert parser.feed(STREAM) + parser.close() == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_split_anywhere_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    parser = sse.SSEParser()
    got: list[sse.Event] = []
    for a, b in itertools.pairwise(bounds):
        got.extend(parser.feed(STREAM[a:b]))
    assert got + parser.close() == EXPECTED


def test_last_event_without_blank_line_is_delivered_at_close() -> None:
    parser = sse.SSEParser()
    assert parser.feed(b'data: {"x": 1}') == []
    assert parser.close() == [sse.Event(None, '{"x": 1}')]


def test_an_endless_line_is_refused() -> None:
    parser = sse.SSEParser(max_buffer=1000)
    parser.feed(b"data: " + b"x" * 900)
    with pytest.raises(sse.SSEError):
        parser.feed(b"x" * 200)


def test_an_event_of_many_lines_is_bounded_too() -> None:
    parser = sse.SSEParser(max_buffer=1000)
    with pytest.raises(sse.SSEError):
        for _ in range(100):
            parser.feed(b"data: " + b"y" * 50 + b"\n")


def test_encode() -> None:
    assert sse.encode({"type": "ping"}, "ping") == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert sse.encode({"a": 1}) == b'data: {"a":1}\n\n'
