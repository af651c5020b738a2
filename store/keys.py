"""Consumer API keys: generated once, shown once, stored only as a SHA-256 digest.

SHA-256 (not a slow password hash) is right here: keys carry 256 bits from
``secrets``, so brute force is hopeless, and the gateway must look a key up in O(1)
on every request. :func:`hash_key` is the only digest of a key: the store, the
``aigw`` command, the console and the gateway all call it, so a key hashed on import
is the key a client's header matches (:func:`key_of_header` turns the header back
into the key's text first).
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-aigw-"
#: Characters of the key kept for display, e.g. ``sk-aigw-Ab3x`` (never enough to use).
DISPLAY_CHARS = 12
#: The longest plain key a user may choose (what a header line holds with room to spare).
MAX_PLAIN_KEY = 256


def generate_key() -> str:
    """``sk-aigw-`` + 43 url-safe characters (32 random bytes)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_plain_key(key: str) -> str | None:
    """Why ``key`` cannot be a consumer key, or ``None`` (never quotes the key).

    A key must survive a header: no whitespace (a header value is trimmed and split on
    it) and nothing unprintable. Other characters travel as their UTF-8 bytes.
    """
    if (
        isinstance(key, str)
        and 8 <= len(key) <= MAX_PLAIN_KEY
        and key.isprintable()
        and not any(ch.isspace() for ch in key)
    ):
        return None
    return f"an API key must be 8–{MAX_PLAIN_KEY} printable characters without spaces"


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key's UTF-8 bytes: the digest every part of aigw stores and looks up."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def key_of_header(value: str) -> str:
    """The key a client sent, from a header value decoded as Latin-1 (one character a byte).

    A client sends a key as its UTF-8 bytes; read back as Latin-1 a non-ASCII key would
    hash to a digest no stored key has. ASCII, the common case, is already itself.
    """
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value  # not UTF-8: matches no stored key, as it should


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS] + "…"


def hash_display(digest_hex: str) -> str:
    """What to show for a key imported as a digest only (its plain text was never here)."""
    return f"sha256:{digest_hex[:8]}…"
