"""``aigw serve --workers N``: one supervising process and N data-plane workers.

The supervisor owns ``admin_listen`` and a private directory (mode 0700) holding its
limits socket and each worker's admin socket. Each worker is an ``aigw serve`` of its
own (``python -m proxy.supervisor_worker``) listening on ``listen`` with SO_REUSEPORT,
so the kernel spreads new connections over the workers' accept queues. The supervisor
holds the limit counts of all of them (:mod:`proxy.shared_limits_embedded`; with a
``redis_url`` the workers use Redis instead), answers the admin endpoints by asking
every worker (:mod:`proxy.supervisor_admin`), replaces a worker that dies, and on
SIGTERM/SIGINT drains every worker (each stops accepting, finishes what is in flight
and writes every record), then exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from store.db import Store
from store.spec import GatewaySpec

from .limits import MemoryLimiter
from .nodes import NodeRegistration
from .redis_url import masked
from .routes import Snapshot, load_snapshot
from .serve import DRAIN_S, ServeError, _redis_url, _split, admin_token_of, worker_admin_socket
from .shared_limits_embedded import LimitsServer
from .state import GatewayState, ListenInfo

log = logging.getLogger("aigw")

#: How often the supervisor looks for workers that died (a dead one is replaced within 2 s).
WATCH_S = 0.2
#: How long a worker may take to answer its first health check.
WORKER_START_S = 30.0
#: How long a worker may take to drain after SIGTERM before it is killed.
WORKER_STOP_S = DRAIN_S + 10.0
#: How often the supervisor reloads the configuration its limits use.
POLL_S = 0.5


@dataclass
class Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    state: str = "starting"
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    def __init__(
        self, store: Store, state: GatewayState, n: int, rundir: str, redis: str, *, listen: str, admin_listen: str
    ) -> None:
        self.store = store
        self.state = state
        self.rundir = rundir
        self.redis = redis
        self.listen = listen
        self.admin_listen = admin_listen
        self.workers = [Worker(i) for i in range(n)]
        self.stopping = False

    def admin_socket(self, w: Worker) -> str:
        return worker_admin_socket(self.rundir, w.index)

    def spawn(self, w: Worker) -> None:
        loc = self.store.location
        db = str(loc.sqlite_path) if loc.sqlite_path is not None else loc.url
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.admin_socket(w))
        # Workers write to gateway.log themselves; their stray output goes where ours does.
        w.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy.supervisor_worker",
                "--db",
                db,
                "--listen",
                self.listen,
                "--admin-listen",
                self.admin_listen,
                "--redis-url",
                self.redis,
                "--index",
                str(w.index),
                "--rundir",
                self.rundir,
            ],
            stdin=subprocess.DEVNULL,
        )
        w.state, w.started_at = "starting", time.time()

    async def wait_up(self, w: Worker, timeout: float) -> None:
        """Until the worker's admin socket answers (it then accepts on ``listen``)."""
        from .supervisor_admin import worker_get

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise ServeError(f"worker {w.index} exited {w.proc.returncode} while starting; see gateway.log")
            with contextlib.suppress(Exception):
                await worker_get(self.admin_socket(w), "/healthz", timeout=1.0)
                w.state = "running"
                return
            await asyncio.sleep(0.05)
        raise ServeError(f"worker {w.index} did not start within {timeout:g} s; see gateway.log")

    async def watch(self) -> None:
        """Replace a worker that died (not while stopping)."""
        while not self.stopping:
            await asyncio.sleep(WATCH_S)
            for w in self.workers:
                if self.stopping or w.proc is None or w.proc.poll() is None:
                    continue
                w.last_exit = w.proc.returncode
                w.restarts += 1
                log.error("worker %d (pid %d) exited %d; starting another", w.index, w.proc.pid, w.proc.returncode)
                self.spawn(w)
                asyncio.get_running_loop().create_task(self._mark_up(w))

    async def _mark_up(self, w: Worker) -> None:
        try:
            await self.wait_up(w, WORKER_START_S)
        except ServeError as exc:
            log.error("%s", exc)
            w.state = "failed"

    async def drain(self) -> None:
        """SIGTERM to every worker; wait for each to finish its requests and records."""
        self.stopping = True
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is None:
                w.state = "stopping"
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_S
        for w in self.workers:
            if w.proc is None:
                continue
            while w.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if w.proc.poll() is None:
                log.error("worker %d did not stop within %g s; killed", w.index, WORKER_STOP_S)
                w.proc.kill()
                await asyncio.to_thread(w.proc.wait, 5)
            w.state = "stopped"


def _check_port(host: str, port: int, listen: str) -> None:
    """Fail at once, with one line, when ``listen`` is taken (workers would only log it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {listen}: {exc.strerror or exc}") from None


def _served_revision(sup: Supervisor) -> int:
    return sup.state.snapshot.revision


async def _poll(state: GatewayState) -> None:
    while True:
        await asyncio.sleep(POLL_S)
        with contextlib.suppress(Exception):  # the store is busy: the workers say so in the log
            await state.reload()


async def supervise(
    store: Store, n: int, *, listen: str | None, admin_listen: str | None, redis_url: str | None
) -> int:
    snapshot: Snapshot = await asyncio.to_thread(load_snapshot, store)
    gw = snapshot.gateway
    listen = listen or gw.listen
    admin_listen = admin_listen or gw.admin_listen
    host, port = _split(listen, "--listen")
    ahost, aport = _split(admin_listen, "--admin-listen")
    public = GatewaySpec(listen=listen, public_url=gw.public_url).effective_public_url()
    token = await asyncio.to_thread(admin_token_of, store)
    redis = _redis_url(redis_url, gw.redis_url)
    _check_port(host, port, listen)

    async def from_records(consumer: str, unit: str, since: float, until: float) -> float:
        from store import usage

        def query() -> float:
            with store.session() as s:
                return usage.quota_used(s, consumer, unit, since, until)

        return await asyncio.to_thread(query)

    limiter = MemoryLimiter(loader=from_records)
    state = GatewayState(store, snapshot, ListenInfo(listen, admin_listen, public), token, limiter=limiter)
    rundir = tempfile.mkdtemp(prefix="aigw-")  # 0700: only this user reaches the sockets
    limits = LimitsServer(limiter)
    sup = Supervisor(store, state, n, rundir, redis, listen=listen, admin_listen=admin_listen)
    from .supervisor_admin import SupervisorAdmin

    admin = SupervisorAdmin(sup)
    tasks: list[asyncio.Task[None]] = []
    node = NodeRegistration(
        store, listen=listen, admin_listen=admin_listen, workers=n, revision=lambda: _served_revision(sup)
    )
    registered = False
    try:
        await limiter.restore(snapshot)
        await limits.start(os.path.join(rundir, "limits.sock"))
        for w in sup.workers:
            sup.spawn(w)
        await asyncio.gather(*(sup.wait_up(w, WORKER_START_S) for w in sup.workers))
        try:
            await admin.start(ahost, aport)
        except OSError as exc:
            raise ServeError(f"cannot listen on {admin_listen} (admin): {exc.strerror or exc}") from None
        await node.start()
        registered = True
        log.info(
            "aigw supervisor pid %d: %d workers serving %s (public %s), admin %s, store %s, limits %s",
            os.getpid(),
            n,
            listen,
            public,
            admin_listen,
            store.location.describe(),
            masked(redis) if redis else "held by the supervisor",
        )
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(sup.watch()), loop.create_task(_poll(state))]
        stop = asyncio.Event()

        def stopping() -> None:  # at once: a worker that ends on the same SIGINT is not replaced
            sup.stopping = True
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping)
        await stop.wait()
        log.info("stopping: draining %d workers (up to %g s)", n, DRAIN_S)
    finally:
        await sup.drain()
        if registered:
            await node.stop()
        for t in tasks:
            t.cancel()
        await admin.cleanup()
        await limits.close()
        shutil.rmtree(rundir, ignore_errors=True)
    log.info("stopped; every worker drained")
    return 0
