"""What both listeners share: the current snapshot and the long-lived helpers around it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from store import usage
from store.db import Store

from .balancer import KeyBalancer
from .limits import Limiter, MemoryLimiter
from .metrics import Metrics
from .recorder import Recorder
from .routes import Snapshot, load_snapshot, read_revision
from .shared_limits import RedisLimiter
from .vendor_client import VendorPool

log = logging.getLogger("aigw")

#: A vendor failing often is logged once per this many seconds (per service and reason).
UPSTREAM_LOG_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class ListenInfo:
    listen: str
    admin_listen: str
    public_url: str


class GatewayState:
    """Owned by the server; the data plane's handler closes over it, the admin app holds it.

    ``snapshot`` is replaced by one assignment; a request reads it once at its start.
    """

    def __init__(
        self,
        store: Store,
        snapshot: Snapshot,
        info: ListenInfo,
        admin_token: str,
        *,
        limiter: Limiter | None = None,
        redis_url: str = "",
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.info = info
        self.admin_token = admin_token
        self.metrics = Metrics()
        self.recorder = Recorder(store, self.metrics)
        self.limiter: Limiter = limiter or (
            RedisLimiter(redis_url, failure=snapshot.gateway.redis_failure, loader=self._quota_used)
            if redis_url
            else MemoryLimiter(loader=self._quota_used)
        )
        self.balancer = KeyBalancer()
        self.started_at = time.time()
        self.in_flight = 0
        #: The vendor connection pool, from the data plane's start to its stop.
        self.pool: VendorPool | None = None
        self._reload_lock = asyncio.Lock()
        self._upstream_logged: dict[tuple[str, str], float] = {}

    def upstream_failed(self, service: str, reason: str, detail: str) -> None:
        """Count a failed vendor call; log it at most once a minute per service and reason."""
        self.metrics.upstream_error(service, reason)
        now = time.monotonic()
        key = (service, reason)
        if now - self._upstream_logged.get(key, -UPSTREAM_LOG_EVERY_S) >= UPSTREAM_LOG_EVERY_S:
            self._upstream_logged[key] = now
            log.warning("model service %r failed (%s): %s", service, reason, detail)

    async def _quota_used(self, consumer: str, unit: str, since: float, until: float) -> float:
        """Quota use from the records (after writing the pending ones, so none is missed)."""
        await self.recorder.flush()

        def query() -> float:
            with self.store.session() as s:
                return usage.quota_used(s, consumer, unit, since, until)

        return await asyncio.to_thread(query)

    async def reload(self, *, force: bool = False) -> int:
        """Rebuild the snapshot if the store's revision moved (or always with ``force``)."""
        async with self._reload_lock:
            if not force:
                rev = await asyncio.to_thread(read_revision, self.store)
                if rev == self.snapshot.revision:
                    return rev
            snap = await asyncio.to_thread(load_snapshot, self.store)
            await self.limiter.restore(snap)  # quotas it brings are complete before it serves
            old = self.snapshot.revision
            self.snapshot = snap
            if snap.revision != old:
                log.info("configuration revision %d loaded (was %d)", snap.revision, old)
            return snap.revision
