"""Which translation one vendor attempt needs, and running it on bytes.

The client's protocol is the Model API's (and, for ``/v1/responses``, the Responses
API); the vendor's is the chosen Model Service's. Same-protocol pairs need nothing:
:func:`translation_for` answers ``None`` and the relay passes the body through. Any
other pair gets a :class:`Translation`: the vendor operation to call, the request to
send, and the answer, stream and errors turned back into the client's shape.

A Responses client at an Anthropic vendor goes through two translators: the bridge to
chat completions, then chat completions to Anthropic Messages; the stream is chained
event by event, never buffered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from proxy import compact_json
from proxy.protocols import anthropic_to_openai as a2o
from proxy.protocols import openai_to_anthropic as o2a
from proxy.protocols import responses_bridge as rb
from proxy.protocols import sse
from proxy.protocols.unsupported import UnsupportedParameter
from proxy.protocols.usage import Usage

ANTHROPIC = "anthropic"
OPENAI = "openai"
#: What Anthropic is told when the client names no API version.
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"

CHAT = "/chat/completions"
MESSAGES = "/messages"
COUNT_TOKENS = "/messages/count_tokens"
RESPONSES = "/responses"


class NotTranslatable(Exception):
    """An operation the pair of protocols has no translation for (legacy completions or
    embeddings to an Anthropic vendor): the caller answers 400 naming the route."""


class _Translator(Protocol):
    usage: Usage | None

    def feed_event(self, event: sse.Event) -> list[bytes]: ...

    def close(self) -> list[bytes]: ...


class StreamPipe:
    """Vendor stream bytes in, client stream bytes out, through one or two translators.

    ``translators[0]`` reads the vendor's events, each next one the events the one
    before wrote, so the first always holds the vendor's own usage.
    """

    def __init__(self, translators: list[_Translator]) -> None:
        self._translators = translators
        self._parsers = [sse.SSEParser() for _ in translators]

    @property
    def usage(self) -> Usage | None:
        return self._translators[0].usage

    def feed(self, chunk: bytes) -> bytes:
        """The client's bytes for what ``chunk`` completes (raises ``sse.SSEError``)."""
        return b"".join(self._emit(0, self._read(0, self._parsers[0].feed(chunk))))

    def close(self) -> bytes:
        """The end of the vendor's stream: whatever each translator still owes, in order."""
        out: list[bytes] = []
        for i, t in enumerate(self._translators):
            out.extend(self._emit(i, self._read(i, self._parsers[i].close()) + t.close()))
        return b"".join(out)

    def _read(self, i: int, events: list[sse.Event]) -> list[bytes]:
        t = self._translators[i]
        written: list[bytes] = []
        for event in events:
            written.extend(t.feed_event(event))
        return written

    def _emit(self, i: int, written: list[bytes]) -> list[bytes]:
        """What translator ``i`` wrote, carried through the ones after it."""
        while i + 1 < len(self._translators) and written:
            i += 1
            written = self._read(i, self._parsers[i].feed(b"".join(written)))
        return written


class Translation:
    """One attempt's translation between the client's ``client_op`` and the vendor's ``op``."""

    __slots__ = ("body", "client", "default_max_tokens", "include_usage", "model", "op", "vendor")

    def __init__(
        self, client: str, vendor: str, op: str, body: Mapping[str, Any], model: str, default_max_tokens: int
    ) -> None:
        #: ``anthropic`` | ``openai`` | ``responses`` (the client's side) and the vendor's.
        self.client = client
        self.vendor = vendor
        self.op = op
        self.body = body
        self.model = model
        self.default_max_tokens = default_max_tokens
        so = body.get("stream_options")
        self.include_usage = isinstance(so, Mapping) and so.get("include_usage") is True

    @property
    def vendor_protocol(self) -> str:
        return ANTHROPIC if self.vendor == ANTHROPIC else OPENAI

    def request(self) -> dict[str, Any]:
        """The vendor's request body (raises :class:`UnsupportedParameter`)."""
        body, model = self.body, self.model
        if self.client == ANTHROPIC:
            return a2o.request(body, model)
        if self.client == "responses":
            chat = rb.request(body, model)
            return o2a.request(chat, model, self.default_max_tokens) if self.vendor == ANTHROPIC else chat
        return o2a.request(body, model, self.default_max_tokens)

    def answer(self, data: bytes) -> tuple[bytes, Usage]:
        """The client's answer for the vendor's whole answer, and the vendor's usage
        (raises ``ValueError`` when the vendor's answer is not a JSON object)."""
        parsed = orjson.loads(data)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        out: dict[str, Any]
        if self.vendor == ANTHROPIC:
            usage = Usage.from_anthropic(parsed.get("usage"))
            chat = o2a.answer(parsed, self.model)
            out = rb.answer(chat, self.body, self.model) if self.client == "responses" else chat
        else:
            usage = Usage.from_openai(parsed.get("usage"))
            out = (
                a2o.answer(parsed, self.model) if self.client == ANTHROPIC else rb.answer(parsed, self.body, self.model)
            )
        return compact_json.dumps(out), usage or Usage()  # the response cache may keep it: sized to fit

    def error(self, status: int, data: bytes) -> tuple[int, bytes]:
        """The vendor's error answer in the client's shape (its message kept)."""
        try:
            parsed: Any = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = data
        if self.vendor == ANTHROPIC:
            status, body = o2a.error(status, parsed)
        elif self.client == ANTHROPIC:
            status, body = a2o.error(status, parsed)
        else:  # a Responses client reads chat's OpenAI-shaped errors as they are
            return status, data
        return status, orjson.dumps(body)

    def stream(self) -> StreamPipe:
        translators: list[_Translator]
        if self.client == ANTHROPIC:
            translators = [a2o.StreamTranslator(self.model)]
        elif self.client == "responses":
            bridge = rb.StreamTranslator(self.body, self.model)
            translators = [o2a.StreamTranslator(self.model, True), bridge] if self.vendor == ANTHROPIC else [bridge]
        else:
            translators = [o2a.StreamTranslator(self.model, self.include_usage)]
        return StreamPipe(translators)


def translation_for(
    api_protocol: str,
    op: str,
    vendor_protocol: str,
    vendor_responses: bool,
    body: Mapping[str, Any],
    model: str,
    default_max_tokens: int,
) -> Translation | None:
    """The translation an API's operation needs at a service, or ``None`` to pass through.

    Raises :class:`NotTranslatable` for an operation the vendor's protocol has no
    counterpart of.
    """
    if api_protocol == ANTHROPIC:
        if vendor_protocol == ANTHROPIC:
            return None
        if op == MESSAGES:
            return Translation(ANTHROPIC, OPENAI, CHAT, body, model, default_max_tokens)
        raise NotTranslatable(op)
    if op == RESPONSES:
        if vendor_protocol == OPENAI and vendor_responses:
            return None
        vendor_op = MESSAGES if vendor_protocol == ANTHROPIC else CHAT
        return Translation("responses", vendor_protocol, vendor_op, body, model, default_max_tokens)
    if vendor_protocol == OPENAI:
        return None
    if op == CHAT:
        return Translation(OPENAI, ANTHROPIC, MESSAGES, body, model, default_max_tokens)
    raise NotTranslatable(op)


__all__ = ["NotTranslatable", "StreamPipe", "Translation", "UnsupportedParameter", "translation_for"]
