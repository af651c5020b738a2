"""Which per-minute limits apply to a consumer on a model API: the one rule, for the gateway and the console.

A consumer may be in several groups that grant the same API; the most generous of their
limits applies, so adding a consumer to one more group never takes anything away.
0 means unlimited, which is the most generous of all.
"""

from __future__ import annotations

from collections.abc import Iterable

from .spec import ConsumerGroupSpec


def most_generous(a: int, b: int) -> int:
    """The more generous of two limits (0 = unlimited wins)."""
    return 0 if a == 0 or b == 0 else max(a, b)


def granted_limits(groups: Iterable[ConsumerGroupSpec]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(consumer, api) -> (requests_per_minute, tokens_per_minute)`` for every grant."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for g in groups:
        for c in g.consumers:
            for api in g.model_apis:
                old = out.get((c, api))
                rpm, tpm = g.requests_per_minute, g.tokens_per_minute
                if old is not None:
                    rpm, tpm = most_generous(old[0], rpm), most_generous(old[1], tpm)
                out[(c, api)] = (rpm, tpm)
    return out
