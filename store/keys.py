"""Consumer API keys: generated once, shown once, stored only as a SHA-256 digest.

SHA-256 (not a slow password hash) is right here: keys carry 256 bits from
``secrets``, so brute force is hopeless, and the gateway must look a key up in O(1)
on every request. :func:`hash_key` is the only digest of a key: the store, the
``aigw`` command, the console and the gateway all call it, so a key hashed on import
is the key a client's header matches.
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

    A key must survive an ``Authorization`` header as every client sends it: visible
    ASCII only (``!`` to ``~``). Header values are bytes; the official SDKs refuse to
    send anything else, and a key a client cannot send is a key that never authenticates.
    """
    if isinstance(key, str) and 8 <= len(key) <= MAX_PLAIN_KEY and all("!" <= ch <= "~" for ch in key):
        return None
    return (
        f"an API key must be 8–{MAX_PLAIN_KEY} visible ASCII characters (letters, digits, "
        "punctuation; no spaces or other characters), which is what an HTTP header can carry"
    )


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key: the digest every part of aigw stores and looks up."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS] + "…"


def hash_display(digest_hex: str) -> str:
    """What to show for a key imported as a digest only (its plain text was never here)."""
    return f"sha256:{digest_hex[:8]}…"
