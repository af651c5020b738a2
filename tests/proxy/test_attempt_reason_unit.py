"""How a vendor attempt's outcome is named in the record and told to the service's breaker."""

from __future__ import annotations

import pytest

from proxy.circuit import REASONS
from proxy.context import Outcome
from proxy.pipeline import attempt_reason


@pytest.mark.parametrize(
    ("outcome", "cooled", "reason"),
    [
        (Outcome(True, 200), False, "ok"),
        (Outcome(False, 400, "http_400", headers=[], body=b"{}"), False, "ok"),  # the caller's error
        (Outcome(False, 401, "http_401", key_rejected=True), True, "key_cooldown"),
        (Outcome(False, 401, "http_401", key_rejected=True), False, "ok"),  # polling: no other key to try
        (Outcome(False, 429, "http_429", retryable=True, key_rejected=True), True, "status_429"),
        (Outcome(False, 503, "http_503", retryable=True), False, "status_5xx"),
        (Outcome(False, 502, "connect", retryable=True), False, "connect"),
        (Outcome(False, 502, "connect_timeout", retryable=True), False, "connect"),
        (Outcome(False, 502, "tls", retryable=True), False, "connect"),
        (Outcome(False, 502, "broken", retryable=True), False, "connect"),
        (Outcome(False, 504, "timeout", retryable=True), False, "timeout"),
        (Outcome(False, 504, "first_byte_timeout", retryable=True), False, "first_byte_timeout"),
        (Outcome(False, 502, "bad_answer", retryable=True), False, "status_5xx"),
        (Outcome(True, 502, "event_too_large"), False, "status_5xx"),
    ],
)
def test_attempt_reason(outcome: Outcome, cooled: bool, reason: str) -> None:
    got = attempt_reason(outcome, cooled)
    assert got == reason and got in REASONS
