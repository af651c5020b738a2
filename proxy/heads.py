"""The header lines of every answer the data plane sends: one place decides what a head holds.

A head here is the header lines between the status line and the blank line; the HTTP
layer adds the status line and the framing (length or chunks, ``date``, ``connection``).
Header names are lower case: the parsers lower them once, where they read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .limits import LIMIT_HEADERS

#: Headers that describe one connection, never passed on (RFC 9110, section 7.6.1).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
#: Vendor headers not passed back: framing (ours to set), cookies, the vendor's identity.
DROP_RESPONSE = HOP_BY_HOP | {
    b"set-cookie",
    b"content-length",
    b"content-encoding",
    b"x-request-id",
    b"request-id",  # Anthropic's name for it: ours replaces it on Anthropic APIs
    b"server",
    b"date",
    # CORS is the gateway's to answer (per API), not a vendor's to open.
    b"access-control-allow-origin",
    b"access-control-allow-credentials",
    b"access-control-expose-headers",
    # Whether the gateway's cache answered is the gateway's to say (a vendor's CDN's is not ours).
    b"x-cache",
}
JSON = b"content-type: application/json\r\n"


def header_lines(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """Our own headers as wire lines (names and values we chose: no CR/LF can be in them)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return b"".join(f"{k.lower()}: {v}\r\n".encode("latin-1") for k, v in items)


def request_id_line(request_id: str) -> bytes:
    return b"x-request-id: " + request_id.encode() + b"\r\n"


def json_head(request_id: str, limits: bytes = b"") -> bytes:
    """An answer of the gateway's own: JSON, the request id, the limiter's headers."""
    return JSON + request_id_line(request_id) + limits


def error_head(request_id: str, extra: Mapping[str, str] | None = None, limits: bytes = b"") -> bytes:
    """An error answer: :func:`json_head` plus the error's own headers (``Retry-After``, ``Allow``)."""
    return JSON + request_id_line(request_id) + (header_lines(extra) if extra else b"") + limits


def connection_named(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers the ``Connection`` header names: hop-by-hop too, so never passed on."""
    out: set[bytes] = set()
    for k, v in headers:
        if k == b"connection":
            out.update(h.strip().lower() for h in v.split(b","))
    return out


def relayed_head(vendor: list[tuple[bytes, bytes]], request_id: str, limits: bytes = b"") -> bytes:
    """A vendor's answer (a stream's too): its headers minus hop-by-hop and ours to set,
    plus the request id and the limiter's headers (which replace the vendor's own)."""
    named = connection_named(vendor)
    ours = LIMIT_HEADERS if limits else ()
    parts = [k + b": " + v + b"\r\n" for k, v in vendor if not (k in DROP_RESPONSE or k in named or k in ours)]
    parts.append(request_id_line(request_id))
    parts.append(limits)
    return b"".join(parts)
