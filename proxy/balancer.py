"""Which key (and which weighted service) a request uses: state that outlives reloads.

Round-robin counters and failover cool-downs are keyed by service and key *names*,
not snapshot objects, so a configuration reload does not reset them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

from .routes import CompiledKey, Service

#: How long a key answered 401/403/429 is skipped by ``failover``.
COOL_DOWN_S = 60.0


class KeyBalancer:
    def __init__(self, cool_down_s: float = COOL_DOWN_S) -> None:
        self.cool_down_s = cool_down_s
        self._counters: dict[str, int] = {}
        self._cooling: dict[tuple[str, str], float] = {}
        self._rand = random.Random()

    def order(self, svc: Service) -> Sequence[CompiledKey]:
        """Every key of the service, the chosen one first: the rest are where a request goes
        when the chosen key is at its ``max_concurrency`` (and ``failover``'s next key)."""
        keys = svc.keys
        if len(keys) <= 1:
            return keys
        policy = svc.key_policy
        if policy == "polling":
            i = self._counters.get(svc.name, 0)
            self._counters[svc.name] = i + 1
            i %= len(keys)
            return (*keys[i:], *keys[:i])
        if policy == "random":
            i = self._rand.randrange(len(keys))
            return (*keys[i:], *keys[:i])
        # failover: healthy keys in order, then cooling ones (soonest back first).
        now = time.monotonic()
        healthy = [k for k in keys if self._cooling.get((svc.name, k.name), 0.0) <= now]
        if len(healthy) == len(keys):
            return keys
        cooling = sorted(
            (k for k in keys if k not in healthy), key=lambda k: self._cooling.get((svc.name, k.name), 0.0)
        )
        return (*healthy, *cooling)

    def cool_down(self, svc: Service, key: CompiledKey, seconds: float | None = None) -> None:
        self._cooling[(svc.name, key.name)] = time.monotonic() + (self.cool_down_s if seconds is None else seconds)

    def pick_weighted(self, services: Sequence[Service], weights: Sequence[int]) -> Service:
        return self._rand.choices(services, weights=weights, k=1)[0]
