"""Plain consumer keys: what a header survives, hashed by one function for everyone."""

from __future__ import annotations

import hashlib

import pytest
from store_helpers import accepted, base_config, refused

from store.keys import check_plain_key, hash_key


@pytest.mark.parametrize(
    "key",
    [
        "sk-aigw-zero\u200bwidth",  # invisible: a user cannot type it back
        "sk-aigw-c1\x9fcontrol",
        "sk-aigw-\x85next-line",
        "sk-aigw-\u00a0nbsp1234",
        "sk-aigw-two words",
        "sk-aigw-tab\there",
        "sk-ключ-12345678",  # a header carries bytes; clients send only ASCII
        "sk-aigw-…",
        "short",
        "x" * 257,
    ],
)
def test_plain_key_a_header_cannot_carry_refused(key: str) -> None:
    cfg = base_config()
    cfg.consumers[0].api_keys = [key]
    err = refused(cfg, "consumers", "c1", "api_keys", "visible ASCII characters")
    assert key not in str(err)  # a key never appears in an error


@pytest.mark.parametrize("key", ["sk-aigw-" + "A" * 43, "abc!#$%&'*+-.^_`|~:/=?@[]{}()<>,;\"\\"])
def test_plain_key_of_printable_characters_accepted(key: str) -> None:
    cfg = base_config()
    cfg.consumers[0].api_keys = [key]
    accepted(cfg)
    assert check_plain_key(key) is None


def test_one_digest_for_store_and_gateway() -> None:
    key = "sk-aigw-" + "Z" * 43
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest()
