"""``aigw serve``: open the store, run both listeners, drain and flush on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store import repo
from store.admin_token import GATEWAY_LOG, keep_local_copy, load_or_create
from store.db import Store, open_store, private_file
from store.errors import StoreError
from store.nodes import shared_admin_token
from store.spec import GatewaySpec
from store.validation import check_listen, check_redis_url, check_workers

from . import memory, native
from .data_plane import DataPlane
from .nodes import NodeRegistration
from .redis_url import masked
from .routes import load_snapshot
from .state import GatewayState, ListenInfo

if TYPE_CHECKING:
    from .admin import AdminListener

log = logging.getLogger("aigw")

#: How long in-flight requests may take to finish after SIGTERM.
DRAIN_S = 30.0


#: How long another thread may hold the GIL while the event loop waits for it.
SWITCH_INTERVAL_S = 0.0005

#: When the start-up heap is frozen (later than the first answers: a full collection takes a while).
FREEZE_AFTER_S = 1.0


def _import_admin() -> type[AdminListener]:
    from .admin import AdminListener

    return AdminListener


def _freeze_heap() -> None:
    """Move what start-up built out of the collector's sight: full passes then stay short.
    Then hand back the heap start-up freed (parsed configuration, compiled SQL, import-time
    garbage): otherwise it stays in the idle process's RSS."""
    gc.collect()
    gc.freeze()
    memory.give_back()


class ServeError(Exception):
    """A reason ``aigw serve`` cannot start, as the one line the user reads."""


def _setup_logging(data_dir: Path) -> None:
    root = logging.getLogger("aigw")
    root.setLevel(logging.INFO)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        private_file(data_dir / GATEWAY_LOG)  # 0600 like the store: it names consumers and APIs
        fh = logging.FileHandler(data_dir / GATEWAY_LOG, encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    except OSError as exc:
        print(f"aigw: warning: cannot write {data_dir / GATEWAY_LOG}: {exc.strerror}", file=sys.stderr)
    if sys.stderr.isatty():
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    # aiohttp's own loggers (the admin listener's) go to the same file.
    logging.getLogger("aiohttp").handlers = root.handlers
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def _split(addr: str, what: str) -> tuple[str, int]:
    if msg := check_listen(addr):
        raise ServeError(f"{what} {addr!r}: {msg}")
    host, _, port = addr.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


#: The environment variable naming the Redis of shared limits (under ``--redis-url``, over the store's).
REDIS_URL_ENV = "AIGW_REDIS_URL"


def _redis_url(given: str | None, stored: str) -> str:
    url = given if given is not None else os.environ.get(REDIS_URL_ENV) or stored
    if msg := check_redis_url(url):
        what = "--redis-url" if given is not None else REDIS_URL_ENV if os.environ.get(REDIS_URL_ENV) else "redis_url"
        raise ServeError(f"{what}: {msg}")
    return url


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """What makes an ``aigw serve`` process one worker of a supervisor (``proxy.supervisor``)."""

    index: int
    #: The supervisor's private directory: its limits socket and each worker's admin socket.
    rundir: str

    @property
    def admin_socket(self) -> str:
        return worker_admin_socket(self.rundir, self.index)

    @property
    def limits_socket(self) -> str:
        return os.path.join(self.rundir, "limits.sock")


def worker_admin_socket(rundir: str, index: int) -> str:
    return os.path.join(rundir, f"worker-{index}.sock")


#: How often a worker checks that its supervisor is still there.
PARENT_CHECK_S = 0.5


async def _orphaned(stop: asyncio.Event) -> None:
    """A worker whose supervisor died (SIGKILL) drains and stops instead of serving alone."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_S)
    log.error("the supervisor (pid %d) is gone; this worker stops", parent)
    stop.set()


def admin_token_of(store: Store) -> str:
    """The admin token every node of ``store`` accepts: the file beside a SQLite store, else
    the database's (copied into this machine's ``admin.token`` for the console)."""
    if store.location.sqlite_path is not None:
        return load_or_create(store.data_dir)
    with store.session() as s:
        token = shared_admin_token(s)
    keep_local_copy(store.data_dir, token)
    return token


async def _serve(
    store: Store, listen: str | None, admin_listen: str | None, redis_url: str | None, role: WorkerRole | None = None
) -> int:
    snapshot = await asyncio.to_thread(load_snapshot, store)
    gw = snapshot.gateway
    listen = listen or gw.listen
    admin_listen = admin_listen or gw.admin_listen
    host, port = _split(listen, "--listen")
    ahost, aport = _split(admin_listen, "--admin-listen")
    public = GatewaySpec(listen=listen, public_url=gw.public_url).effective_public_url()
    token = await asyncio.to_thread(admin_token_of, store)
    redis = _redis_url(redis_url, gw.redis_url)
    stop = asyncio.Event()
    # From the first moment: a SIGTERM while starting (the node registering, the admin
    # listener coming up) is a stop like any other, answered once start-up is done.
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    info = ListenInfo(listen, admin_listen, public)
    if role is not None and not redis:  # the supervisor holds the counts of every worker
        from .shared_limits_embedded import WorkerLimiter
        from .shared_slots_embedded import WorkerSlotCounter

        embedded = WorkerLimiter(role.limits_socket)
        embedded.on_lost = stop.set  # the supervisor is gone: drain and stop
        await embedded.connect()
        state = GatewayState(store, snapshot, info, token, limiter=embedded, slot_counter=WorkerSlotCounter(embedded))
    else:
        state = GatewayState(store, snapshot, info, token, redis_url=redis)

    plane = DataPlane(state)
    admin = None
    node: NodeRegistration | None = None
    await plane.setup()
    await state.limiter.restore(snapshot)  # quotas survive restarts: counted from the records
    try:
        try:
            await plane.listen(host, port, reuse_port=role is not None)
        except OSError as exc:
            raise ServeError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        # The admin listener runs on aiohttp, whose import is a third of the start-up time. It
        # is imported only now, in a worker thread: imported on the loop, it held the first
        # requests (already in the listen backlog) until it was done.
        admin = (await asyncio.to_thread(_import_admin))(state)
        try:
            if role is not None:
                await admin.start_unix(role.admin_socket)
            else:
                await admin.start(ahost, aport)
        except OSError as exc:
            raise ServeError(f"cannot listen on {admin_listen} (admin): {exc.strerror or exc}") from None
        if role is None:  # a worker's supervisor is the node
            node = NodeRegistration(
                store, listen=listen, admin_listen=admin_listen, workers=1, revision=lambda: state.snapshot.revision
            )
            await node.start()
        asyncio.get_running_loop().call_later(FREEZE_AFTER_S, _freeze_heap)
        log.info(
            "aigw gateway %s %d serving %s (public %s), admin %s, store %s, revision %d, limits %s; request path %s",
            "pid" if role is None else f"worker {role.index} pid",
            os.getpid(),
            listen,
            public,
            admin_listen,
            store.location.describe(),
            snapshot.revision,
            masked(redis) if redis else "in memory" if role is None else "held by the supervisor",
            native.HOW,
        )
        loop = asyncio.get_running_loop()
        if role is not None:
            watchdog = loop.create_task(_orphaned(stop), name="aigw-parent")
        await stop.wait()
        if role is not None:
            watchdog.cancel()
        log.info("stopping: draining %d in-flight request(s) (up to %g s)", state.in_flight, DRAIN_S)
    finally:
        # Data plane first: stop accepting, wait for in-flight requests, then flush records
        # (its cleanup), which also ends the /events streams the admin runner waits for.
        await plane.cleanup(DRAIN_S)
        if node is not None:
            await node.stop()
        if admin is not None:
            await admin.cleanup()
    log.info("stopped; %d request(s) served", state.metrics.requests_total)
    return 0


def workers_of(given: str | None, stored: int | str) -> int:
    """``--workers`` (a number or ``auto``) over the store's ``workers``; ``auto`` = the CPUs."""
    value: int | str = stored
    if given is not None:
        value = int(given) if given.isdigit() else given
    if msg := check_workers(value):
        raise ServeError(f"{'--workers' if given is not None else 'workers'}: {msg}")
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(value)


def run_server(
    db: str | None,
    *,
    listen: str | None,
    admin_listen: str | None,
    redis_url: str | None = None,
    workers: str | None = None,
    role: WorkerRole | None = None,
) -> int:
    """Run the gateway in the foreground until SIGTERM/SIGINT; the process exit code.

    More than one worker: this process supervises that many (:mod:`proxy.supervisor`).
    """
    try:
        store = open_store(db)
    except StoreError as exc:
        print(f"aigw: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(store.data_dir)
    if role is None:
        try:
            with store.session() as s:
                stored = repo.load_config(s).gateway.workers
            n = workers_of(workers, stored)
        except (ServeError, StoreError) as exc:
            log.error("%s", exc)
            print(f"aigw: error: {exc}", file=sys.stderr)
            store.dispose()
            return 2
        if n > 1:
            from .supervisor import supervise

            try:
                return _run(supervise(store, n, listen=listen, admin_listen=admin_listen, redis_url=redis_url))
            finally:
                store.dispose()
    # The record writer and the revision poller run in threads: with the default 5 ms switch
    # interval the event loop waits up to that long for the GIL behind a batch insert, which
    # showed as the p99 latency. 0.5 ms bounds the wait at little cost in switches.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return _run(_serve(store, listen, admin_listen, redis_url, role))
    finally:
        store.dispose()


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where there is one; a start-up error as one line and exit 2."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(main)
    except ServeError as exc:
        log.error("%s", exc)
        print(f"aigw: error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        log.error("%s", exc)
        print(f"aigw: error: {exc}", file=sys.stderr)
        return 2
