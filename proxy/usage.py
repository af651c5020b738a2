"""Tokens and cost of an answer: read from the vendor's ``usage``, else estimated; priced.

Kept apart from :mod:`proxy.relay`, which moves bytes: the relay hands each complete
block of stream events (or a whole answer) here and sends on what comes back.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from .context import Usage
from .protocols.usage import Usage as ProtocolUsage
from .routes import Service

#: Stream bytes kept to estimate tokens when the vendor reports no usage.
ESTIMATE_KEEP = 2 * 1024 * 1024
#: The events kept for estimates by every stream in flight together, beyond which a stream
#: folds what it holds into a count of characters (:meth:`StreamUsage.feed`).
KEEP_BUDGET = 2 * 1024 * 1024
#: Over the budget, a stream holding fewer bytes than this keeps them (folding costs a parse).
FOLD_MIN = 512
_USAGE = b'"usage"'


def extract_usage(obj: Any) -> Usage | None:
    """The ``usage`` of an answer or chunk (OpenAI's or Anthropic's names), if it has one."""
    u = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(u, dict):
        return None
    pt = u.get("prompt_tokens") or u.get("input_tokens") or 0
    if "cache_read_input_tokens" in u or "cache_creation_input_tokens" in u:  # Anthropic's: the cache is apart
        pt = (pt if isinstance(pt, int) else 0) + sum(
            v for v in (u.get("cache_read_input_tokens"), u.get("cache_creation_input_tokens")) if isinstance(v, int)
        )
    ct = u.get("completion_tokens") or u.get("output_tokens")
    if ct is None:
        total = u.get("total_tokens") or 0
        ct = max(0, total - pt) if isinstance(total, int) and isinstance(pt, int) else 0
    if not isinstance(pt, int) or not isinstance(ct, int):
        return None
    return Usage(pt, ct)


def from_protocol(u: ProtocolUsage | None, body: dict[str, Any] | None) -> Usage:
    """A translation's usage (the vendor's own report) for the record; an estimate of the
    prompt when the vendor reported none."""
    if u is None or not (u.input_tokens or u.output_tokens):
        return Usage(estimate_prompt(body), u.output_tokens if u else 0, estimated=True)
    return Usage(u.input_tokens, u.output_tokens)


def _chars(value: Any) -> int:
    """Characters of text in a prompt/answer structure (strings inside lists and dicts).

    Iterative: a client may nest as deep as the JSON parser allows.
    """
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            n += len(v)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(x for k, x in v.items() if k in ("content", "text", "input"))
    return n


def estimate_prompt(body: dict[str, Any] | None) -> int:
    """About four characters a token: what a record says when the vendor said nothing."""
    if not body:
        return 0
    n = _chars(body.get("messages")) + _chars(body.get("prompt")) + _chars(body.get("input"))
    n += _chars(body.get("system")) + _chars(body.get("instructions"))
    return (n + 3) // 4


def _answer_chars(choices: Any, delta: bool) -> int:
    n = 0
    if isinstance(choices, list):
        for c in choices:
            if isinstance(c, dict):
                part = c.get("delta" if delta else "message")
                n += _chars(part) if part is not None else _chars(c.get("text"))
    return n


def usage_of_answer(body: dict[str, Any] | None, data: bytes) -> Usage:
    """A whole (non-stream) answer's usage; parsed only once, and only if it can hold one."""
    parsed: Any = None
    if _USAGE in data:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        u = extract_usage(parsed)
        if u is not None:
            return u
    if parsed is None:
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = {}
    choices = parsed.get("choices") if isinstance(parsed, dict) else None
    return Usage(estimate_prompt(body), (_answer_chars(choices, False) + 3) // 4, estimated=True)


def cost_of(service: Service | None, model: str, usage: Usage | None) -> float:
    """Prompt and completion tokens × the service's price per 1M tokens for ``model``."""
    if usage is None or service is None or not (usage.prompt_tokens or usage.completion_tokens):
        return 0.0
    price = service.price_for(model)
    if price is None:
        return 0.0
    return round((usage.prompt_tokens * price.input + usage.completion_tokens * price.output) / 1_000_000, 10)


class StreamUsage:
    """Usage found in a stream so far, and the usage chunk a client that did not ask must not see.

    Fed complete events only (the relay cuts at event boundaries), so an event is never
    split across two calls.

    Until the vendor reports usage, the events are kept as they came, to be parsed for an
    estimate only if it never does (most vendors report at the end: most streams never
    parse them). That grew the gateway by every event of every stream in flight (2,000
    slow streams: +0.9 MB/s, up to 2 MiB a stream). So the events kept by all streams
    together are bounded: past :data:`KEEP_BUDGET`, a stream parses what it holds into a
    character count (the same count :meth:`result` makes) and drops the bytes; under it,
    as when few streams are in flight, nothing is parsed early.
    """

    __slots__ = ("chars", "held", "kept", "kept_bytes", "strip", "usage")

    #: Bytes held in ``kept`` by every stream of this process not yet ended (:meth:`result`).
    held_total: ClassVar[int] = 0

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self.usage: Usage | None = None
        self.kept: list[bytes] = []
        #: Bytes of the stream seen for the estimate (folded or not), up to ESTIMATE_KEEP.
        self.kept_bytes = 0
        #: Of them, the bytes still in ``kept``; and the answer's characters in those folded.
        self.held = 0
        self.chars = 0

    def feed(self, complete: bytes) -> bytes:
        """Complete events in, the bytes to send out (unchanged unless a usage chunk is dropped)."""
        n = complete.count(_USAGE)
        if n == 0 or n == complete.count(b'"usage": null') + complete.count(b'"usage":null'):
            if self.usage is None and self.kept_bytes < ESTIMATE_KEEP:
                self.kept.append(complete)
                size = len(complete)
                self.kept_bytes += size
                self.held += size
                StreamUsage.held_total += size
                if StreamUsage.held_total > KEEP_BUDGET and self.held >= FOLD_MIN:
                    self.chars += self._kept_chars()
                    self._release()
            return complete
        # Only the events that mention usage are parsed; the bytes around them pass as they are.
        out: list[bytes] = []
        pos = 0
        i = complete.find(_USAGE)
        while i >= 0:
            start, end = _event_bounds(complete, i)
            obj = _event_json(complete[start:end])
            u = _event_usage(obj)
            if u is not None:
                prev = self.usage  # reports are cumulative: a later one wins, never a sum;
                # Anthropic's give the prompt at the start and the output at the end
                self.usage = u if prev is None else Usage(u.prompt_tokens or prev.prompt_tokens, u.completion_tokens)
                if self.held:  # the vendor's figure wins: what was kept for an estimate is moot
                    self._release()
                if self.strip and isinstance(obj, dict) and obj.get("choices") == []:
                    out.append(complete[pos:start])
                    pos = end
            i = complete.find(_USAGE, end)
        if not out:
            return complete
        out.append(complete[pos:])
        return b"".join(out)

    def result(self, body: dict[str, Any] | None) -> Usage:
        """The vendor's last usage, else an estimate from the relayed text. The stream is
        over: what it kept no longer counts against the budget."""
        if self.usage is not None:
            self._release()
            return self.usage
        chars = self.chars + self._kept_chars()
        self._release()
        return Usage(estimate_prompt(body), (chars + 3) // 4, estimated=True)

    def _kept_chars(self) -> int:
        chars = 0
        for block in self.kept:
            for event in _split_events(block):
                obj = _event_json(event)
                if isinstance(obj, dict):
                    chars += _answer_chars(obj.get("choices"), True)
        return chars

    def _release(self) -> None:
        """Drop the events held (counted or moot by now) and give their bytes back to the budget."""
        StreamUsage.held_total -= self.held
        self.held = 0
        self.kept.clear()


#: Events whose usage sits one level down: Anthropic's ``message_start`` in its message,
#: the Responses API's final events in their response.
_NESTED = {
    "message_start": "message",
    "response.completed": "response",
    "response.incomplete": "response",
    "response.failed": "response",
}


def _event_usage(obj: Any) -> Usage | None:
    if isinstance(obj, dict):
        inner = _NESTED.get(obj.get("type"))  # type: ignore[arg-type]
        if inner is not None:
            return extract_usage(obj.get(inner))
    return extract_usage(obj)


def _split_events(block: bytes) -> list[bytes]:
    """The events of a block of complete events (LF or CRLF line ends)."""
    if b"\r" not in block:
        return block.split(b"\n\n")
    return block.replace(b"\r\n", b"\n").split(b"\n\n")


def _event_bounds(block: bytes, i: int) -> tuple[int, int]:
    """Start and end (after its blank line) of the event holding ``block[i]``."""
    a = block.rfind(b"\n\n", 0, i)
    b = block.rfind(b"\n\r\n", 0, i)
    start = max(a + 2 if a >= 0 else 0, b + 3 if b >= 0 else 0)
    c = block.find(b"\n\n", i)
    d = block.find(b"\n\r\n", i)
    ends = [e for e in (c + 2 if c >= 0 else -1, d + 3 if d >= 0 else -1) if e > 0]
    return start, min(ends) if ends else len(block)


def _event_json(event: bytes) -> Any:
    """The JSON of an event's ``data:`` lines, or ``None`` (``[DONE]``, not JSON, no data)."""
    payload = b"".join(line[5:].strip() for line in event.splitlines() if line.startswith(b"data:"))
    if not payload or payload == b"[DONE]":
        return None
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
