"""Server-sent events: an incremental parser for what vendors stream and the framing
for what the gateway streams back.

The parser takes bytes as they arrive from the socket (an event may be split anywhere,
even inside a line terminator) and keeps at most ``max_buffer`` bytes of an unfinished
event, so a vendor that never ends a line cannot make the gateway hold unbounded memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

#: An event larger than this is refused: real events are a few KiB, a tool call's
#: arguments at most some hundreds of KiB.
DEFAULT_MAX_BUFFER = 4 * 1024 * 1024


class SSEError(ValueError):
    """The stream is not SSE the gateway can follow (an event over the size bound)."""


@dataclass(frozen=True, slots=True)
class Event:
    #: The ``event:`` field; ``None`` when the event had none (OpenAI's streams).
    event: str | None
    #: The ``data:`` lines joined with newlines.
    data: str

    def json(self) -> Any:
        """The data parsed as JSON (raises ``ValueError`` when it is not)."""
        return orjson.loads(self.data)


class SSEParser:
    def __init__(self, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self._max = max_buffer
        self._buf = bytearray()
        self._event: str | None = None
        self._data: list[str] = []
        self._size = 0

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by ``chunk`` (possibly none)."""
        self._buf += chunk
        events: list[Event] = []
        start = 0
        buf = self._buf
        n = len(buf)
        while start < n:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl >= 0 else n)
            if cr >= 0:
                if cr + 1 == n:
                    break  # a lone CR at the end: the LF of a CRLF may follow
                end, nxt = cr, cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif nl >= 0:
                end, nxt = nl, nl + 1
            else:
                break
            ev = self._line(bytes(buf[start:end]))
            if ev is not None:
                events.append(ev)
            start = nxt
        del buf[:start]
        if len(buf) + self._size > self._max:
            raise SSEError(f"an event exceeds {self._max} bytes")
        return events

    def close(self) -> list[Event]:
        """At the end of the stream: an event whose blank line never came is still
        delivered (some vendors close right after their last ``data:`` line)."""
        events: list[Event] = []
        if self._buf:
            ev = self._line(bytes(self._buf))
            self._buf.clear()
            if ev is not None:
                events.append(ev)
        ev = self._line(b"")
        if ev is not None:
            events.append(ev)
        return events

    def _line(self, raw: bytes) -> Event | None:
        if not raw:
            if not self._data:
                self._event = None
                return None
            ev = Event(self._event, "\n".join(self._data))
            self._event, self._data, self._size = None, [], 0
            return ev
        if raw[0] == 0x3A:  # ":" a comment (keep-alive pings)
            return None
        line = raw.decode("utf-8", "replace")
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(raw)
        elif name == "event":
            self._event = value
        return None


def encode(data: Any, event: str | None = None) -> bytes:
    """One SSE event: ``event:`` when named (Anthropic's and Responses' streams),
    then ``data:`` with ``data`` as compact JSON (a ``str`` is sent as is)."""
    payload = data.encode() if isinstance(data, str) else orjson.dumps(data)
    if event is None:
        return b"data: " + payload + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + payload + b"\n\n"


DONE = b"data: [DONE]\n\n"


class ChatChunkTranslator:
    """Base of the translators fed an OpenAI chat-completions stream: a ``[DONE]`` event
    closes the translation, every other event is one JSON chunk (unreadable ones skipped)."""

    def feed_event(self, event: Event) -> list[bytes]:
        if event.data.strip() == "[DONE]":
            return self.close()
        try:
            chunk = event.json()
        except ValueError:
            return []
        return self.feed(chunk) if isinstance(chunk, Mapping) else []

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def close(self) -> list[bytes]:
        raise NotImplementedError
