"""Consumer API keys: generated once, shown once, stored only as a SHA-256 digest.

SHA-256 (not a slow password hash) is right here: keys carry 256 bits from
``secrets``, so brute force is hopeless, and the gateway must look a key up in O(1)
on every request.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "sk-aigw-"
#: Characters of the key kept for display, e.g. ``sk-aigw-Ab3x`` (never enough to use).
DISPLAY_CHARS = 12


def generate_key() -> str:
    """``sk-aigw-`` + 43 url-safe characters (32 random bytes)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Hex SHA-256 of the key as sent by a client."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_CHARS] + "…"


def hash_display(digest_hex: str) -> str:
    """What to show for a key imported as a digest only (its plain text was never here)."""
    return f"sha256:{digest_hex[:8]}…"
