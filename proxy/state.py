"""What both listeners share: the current snapshot and the long-lived helpers around it."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from store import usage
from store.db import Store

from .balancer import KeyBalancer
from .cache_stage import drop_changed
from .circuit import CircuitBreakers
from .key_slots import KeySlots, SlotCounter
from .limits import Limiter, MemoryLimiter
from .metrics import Metrics
from .probes import Probes
from .recorder import Recorder
from .response_cache import CacheBackend, MemoryCache, config_digest
from .routes import Api, CompiledKey, Snapshot, load_snapshot, read_revision
from .vendor_client import VendorPool

if TYPE_CHECKING:
    from .shared_slots import RedisSlotCounter

# The Redis modules are imported only when ``redis_url`` names a Redis: the client and its
# dependencies are ~6 MB of memory that a gateway without Redis should not carry.

log = logging.getLogger("aigw")

#: A vendor failing often is logged once per this many seconds (per service and reason).
UPSTREAM_LOG_EVERY_S = 60.0


def _client_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("AIGW_CLIENT_TIMEOUT_S", "60")))
    except ValueError:
        return 60.0


#: How long a client may take to send a request's headers, or its body, and stay idle between
#: requests on a keep-alive connection, or to read what a stream sends
#: (``AIGW_CLIENT_TIMEOUT_S``, default 60): a slow or silent client holds a connection this
#: long at most.
CLIENT_TIMEOUT_S = _client_timeout()


@dataclass(frozen=True, slots=True)
class ListenInfo:
    listen: str
    admin_listen: str
    public_url: str


def cache_for(snapshot: Snapshot, redis_url: str = "") -> CacheBackend:
    """The backend the configuration asks for: Redis when the gateway has one, shared by
    every node naming it; else this process's memory, ``cache_max_mb`` large. A
    ``cache_max_mb`` of 0 turns the cache off with either."""
    if redis_url and snapshot.gateway.cache_max_mb > 0:
        from .redis_cache import RedisCache

        return RedisCache(redis_url)
    return MemoryCache.of_megabytes(snapshot.gateway.cache_max_mb)


def _backend_changes(old: Snapshot, new: Snapshot, redis_url: str) -> bool:
    """Whether ``new`` asks for another backend: a new memory budget, or Redis on or off."""
    before, after = old.gateway.cache_max_mb, new.gateway.cache_max_mb
    if redis_url:
        return (before > 0) != (after > 0)  # Redis's memory is bounded by Redis
    return before != after


def _loaded_instance(obj: object, module: str, cls: str) -> bool:
    """``isinstance(obj, proxy.<module>.<cls>)`` without importing the module: when it is
    not loaded, nothing can be an instance of it."""
    mod = sys.modules.get(f"{__package__}.{module}")
    return mod is not None and isinstance(obj, getattr(mod, cls))


def _is_redis_counter(counter: object) -> TypeGuard[RedisSlotCounter]:
    return _loaded_instance(counter, "shared_slots", "RedisSlotCounter")


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
        slot_counter: SlotCounter | None = None,
    ) -> None:
        self.store = store
        self.snapshot = snapshot
        self.info = info
        self.admin_token = admin_token
        #: Every stage reads the client deadline from here (``AIGW_CLIENT_TIMEOUT_S``).
        self.client_timeout_s = CLIENT_TIMEOUT_S
        self.metrics = Metrics()
        self.recorder = Recorder(store, self.metrics)
        self.limiter: Limiter = limiter or self._limiter_for(snapshot, redis_url)
        self.balancer = KeyBalancer()
        #: Per service and per key, by name: they outlive reloads (:mod:`proxy.circuit`, :mod:`proxy.key_slots`).
        self.breakers = CircuitBreakers()
        #: Model keys' slots, counted with every process that shares the limits.
        if slot_counter is None and _loaded_instance(self.limiter, "shared_limits", "RedisLimiter"):
            from .shared_slots import RedisSlotCounter

            slot_counter = RedisSlotCounter(self.limiter)  # type: ignore[arg-type]
        self.slots = KeySlots(slot_counter)
        self.probes = Probes(self.breakers, lambda: self.pool)
        #: The response cache (:mod:`proxy.cache_stage`): in Redis with ``redis_url``, else
        #: in memory within ``[gateway] cache_max_mb``.
        self.redis_url = redis_url
        self.cache: CacheBackend = cache_for(snapshot, redis_url)
        #: Each API's :func:`~proxy.response_cache.config_digest`, for the API object it was made of.
        self._cache_configs: dict[str, tuple[Api, str]] = {}
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

    def services_health(self) -> dict[str, dict[str, Any]]:
        """Each configured service's circuit, for ``/healthz`` and the console."""
        probed = set(self.probes.probed)
        out: dict[str, dict[str, Any]] = {}
        for name, svc in sorted(self.snapshot.services.items()):
            h = self.breakers.health(svc)
            out[name] = {
                "state": h.state,
                "consecutive_failures": h.consecutive_failures,
                "retry_in_s": round(h.retry_in_s, 3),
                "opened_total": h.opened_total,
                "last_reason": h.last_reason,
                "probed": name in probed,
            }
        return out

    def configured_keys(self) -> list[CompiledKey]:
        return sorted({k for svc in self.snapshot.services.values() for k in svc.keys}, key=lambda k: k.name)

    def keys_load(self, shared: dict[str, int] | None = None) -> dict[str, dict[str, Any]]:
        """Each configured model key's slots in use and waiters, for ``/healthz`` and the console.

        ``in_flight`` is this process's; ``shared`` (from :meth:`shared_key_load`) adds
        ``shared_in_flight``, every process's, for the limited keys it has."""
        stats = self.slots.stats().keys
        out: dict[str, dict[str, Any]] = {}
        for key in self.configured_keys():
            load = stats.get(key.name)
            out[key.name] = {
                "max_concurrency": key.max_concurrency,
                "in_flight": self.slots.in_flight(key.name),
                "queued": load.queued if load else 0,
                "queue_waits": load.waits if load else 0,
                "queue_wait_s": round(load.wait_s, 6) if load else 0.0,
                "queue_timeouts": load.timeouts if load else 0,
            }
            if shared and key.name in shared:
                out[key.name]["shared_in_flight"] = shared[key.name]
        return out

    async def shared_key_load(self) -> dict[str, int]:
        """Slots in flight per limited key over every process sharing Redis ({} otherwise)."""
        counter = self.slots.counter
        if not _is_redis_counter(counter):
            return {}  # this process's counts, or workers whose supervisor sums them
        return await counter.shared_in_flight(k.name for k in self.configured_keys() if k.max_concurrency)

    def _limiter_for(self, snapshot: Snapshot, redis_url: str) -> Limiter:
        if not redis_url:
            return MemoryLimiter(loader=self._quota_used)
        from .shared_limits import RedisLimiter

        return RedisLimiter(redis_url, failure=snapshot.gateway.redis_failure, loader=self._quota_used)

    async def _quota_used(self, consumer: str, unit: str, since: float, until: float) -> float:
        """Quota use from the records (after writing the pending ones, so none is missed)."""
        await self.recorder.flush()

        def query() -> float:
            with self.store.session() as s:
                return usage.quota_used(s, consumer, unit, since, until)

        return await asyncio.to_thread(query)

    def cache_config(self, api: Api) -> str:
        """The digest of the API's definition that every cache key of it carries.

        Keyed with the admin token, which every node of the store shares: equal on every
        node that loaded the same definition. Made once per snapshot and API.
        """
        memo = self._cache_configs.get(api.name)
        if memo is not None and memo[0] is api:
            return memo[1]
        digest = config_digest(api, self.admin_token)
        self._cache_configs[api.name] = (api, digest)
        return digest

    async def _follow_cache(self, old: Snapshot, new: Snapshot) -> None:
        """A new memory size starts an empty cache; otherwise the entries of changed APIs go."""
        self._cache_configs = {}
        if _backend_changes(old, new, self.redis_url):
            previous, self.cache = self.cache, cache_for(new, self.redis_url)
            await previous.close()
            return
        n = await drop_changed(self.cache, old.apis, new.apis)
        if n:
            log.info("response cache: %d entr%s of changed model APIs dropped", n, "y" if n == 1 else "ies")

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
            previous, self.snapshot = self.snapshot, snap
            self.breakers.retain(snap.services)
            self.slots.retain(k.name for svc in snap.services.values() for k in svc.keys)
            if self.pool is not None:  # probing runs with the data plane
                self.probes.sync(snap.services.values())
            await self._follow_cache(previous, snap)
            if snap.revision != old:
                log.info("configuration revision %d loaded (was %d)", snap.revision, old)
            return snap.revision
