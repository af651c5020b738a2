"""Start, stop, restart, attach to and watch the ``aigw serve`` process — no Textual here.

The console spawns the gateway detached (its own session, ``stdin`` closed so it never
races Textual for keystrokes, output appended to ``gateway.log`` in the data folder),
so it can outlive the console. A gateway already answering on the admin address is
attached to instead of started twice. Every method blocks: call them from thread workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from store.admin_token import GATEWAY_LOG
from store.db import Store
from store.spec import GatewaySpec

from .admin_client import AdminClient, Health
from .rate import RequestRate

STOPPED, STARTING, RUNNING, ATTACHED, STOPPING, CRASHED = (
    "stopped",
    "starting",
    "running",
    "attached",
    "stopping",
    "crashed",
)
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 12


@dataclass(frozen=True)
class GatewayStatus:
    """One observation of the gateway, as the header and Instance Info show it."""

    state: str = STOPPED
    listen: str = ""
    admin_listen: str = ""
    public_url: str = ""
    pid: int | None = None
    version: str = ""
    requests_total: int | None = None
    #: Requests per second over the last seconds, summed over every live gateway on the
    #: store (``None`` until two observations were made).
    rate: float | None = None
    #: Gateways on the store the rate counts, this one included when it runs (``None``: not looked at).
    nodes: int | None = None
    exit_code: int | None = None
    #: The last lines of ``gateway.log`` — shown when the gateway crashed or failed to start.
    log_tail: str = ""
    message: str = ""
    health: Health | None = field(default=None, compare=False)

    @property
    def is_up(self) -> bool:
        return self.state in (RUNNING, ATTACHED)


def read_settings(store: Store) -> GatewaySpec:
    from store import models

    with store.session() as s:
        row = s.get(models.GatewaySettings, 1) or models.GatewaySettings()
        return GatewaySpec(listen=row.listen, public_url=row.public_url, admin_listen=row.admin_listen)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` (reads only the end of a big log)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16_384))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class GatewayController:
    """The console's handle on the gateway process; safe to call from several worker threads."""

    def __init__(self, store: Store, *, python: str = sys.executable) -> None:
        self.store = store
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._busy: str | None = None
        self._crash: tuple[int, str] | None = None
        self._rate = RequestRate()
        self._admin: AdminClient | None = None

    # ------------------------------------------------------------- where things are

    @property
    def log_path(self) -> Path:
        return self.store.data_dir / GATEWAY_LOG

    def db_argument(self) -> str:
        loc = self.store.location
        return str(loc.sqlite_path) if loc.sqlite_path is not None else loc.url

    def admin(self, settings: GatewaySpec | None = None) -> AdminClient:
        """The client for the admin address in the settings (kept: it pools its connection)."""
        settings = settings or read_settings(self.store)
        with self._lock:
            if self._admin is None or self._admin.admin_listen != settings.admin_listen:
                if self._admin is not None:
                    self._admin.close()
                self._admin = AdminClient(settings.admin_listen, self.store.data_dir)
            return self._admin

    @property
    def owned(self) -> bool:
        """The console started the gateway that is (or was) running."""
        return self.proc is not None and self.proc.poll() is None

    # ------------------------------------------------------------- observing

    def status(self) -> GatewayStatus:
        settings = read_settings(self.store)
        health = self.admin(settings).health()
        base = {
            "listen": settings.listen,
            "admin_listen": settings.admin_listen,
            "public_url": settings.effective_public_url(),
        }
        with self._lock:
            if self._busy:
                return GatewayStatus(state=self._busy, **base)
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                if code != 0:
                    self._crash = (code, tail(self.log_path))
            if health is None and self.proc is not None:
                # Ours and alive, but silent on the admin address: still starting, or the
                # admin address was changed since it started (a restart applies it).
                return GatewayStatus(
                    state=STARTING,
                    pid=self.proc.pid,
                    log_tail=tail(self.log_path),
                    message=f"the gateway process runs but does not answer on {settings.admin_listen}",
                    **base,
                )
            if health is None:
                self._rate.reset()
                if self._crash is not None:
                    code, log = self._crash
                    return GatewayStatus(
                        state=CRASHED,
                        exit_code=code,
                        log_tail=log,
                        message=f"the gateway exited with status {code}",
                        **base,
                    )
                return GatewayStatus(state=STOPPED, **base)
            self._crash = None
            rate = self._rate.observe(health.requests_total, time.monotonic())
            owned = self.proc is not None and health.pid == self.proc.pid
            base.update(
                listen=health.listen or settings.listen,
                public_url=(health.public_url or settings.effective_public_url()).rstrip("/"),
            )
            return GatewayStatus(
                state=RUNNING if owned else ATTACHED,
                pid=health.pid,
                version=health.version,
                requests_total=health.requests_total,
                rate=rate,
                health=health,
                **base,
            )

    # ------------------------------------------------------------- acting

    def start(self, timeout: float = START_TIMEOUT_S) -> GatewayStatus:
        """Start ``aigw serve``, or attach when a gateway already answers on the admin address."""
        settings = read_settings(self.store)
        if self.admin(settings).health() is not None:
            return self.status()
        with self._lock:
            if self.owned:
                return self.status()
            self._crash = None
            self._busy = STARTING
            try:
                self.proc = self._spawn()
            except OSError as exc:
                self._busy = None
                return GatewayStatus(
                    state=CRASHED,
                    message=f"cannot start the gateway: {exc}",
                    listen=settings.listen,
                    admin_listen=settings.admin_listen,
                )
        try:
            deadline = time.monotonic() + timeout
            admin = self.admin(settings)
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    break
                if admin.health() is not None:
                    break
                time.sleep(0.1)
        finally:
            with self._lock:
                self._busy = None
        return self.status()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                [self.python, "-m", "tui.cli", "--db", self.db_argument(), "serve"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            log.close()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> GatewayStatus:
        """SIGTERM (the gateway drains in-flight requests), SIGKILL if it does not exit in time."""
        with self._lock:
            proc = self.proc
            pid = proc.pid if proc is not None and proc.poll() is None else None
            if pid is None:
                health = self.admin().health()
                pid = health.pid if health is not None else None
            if pid is None:
                return self.status()
            self._busy = STOPPING
        try:
            self._signal(pid, signal.SIGTERM)
            if not self._wait_gone(proc, pid, timeout):
                self._signal(pid, signal.SIGKILL)
                self._wait_gone(proc, pid, 5.0)
        finally:
            with self._lock:
                if proc is not None and proc.poll() is not None:
                    self.proc = None
                self._crash = None
                self._busy = None
                self._rate.reset()
        return self.status()

    def restart(self) -> GatewayStatus:
        self.stop()
        return self.start()

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    @staticmethod
    def _wait_gone(proc: subprocess.Popen[bytes] | None, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.pid == pid:
                if proc.poll() is not None:
                    return True
            else:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return True
                except PermissionError:
                    pass
            time.sleep(0.05)
        return False

    def reload(self) -> int | None:
        """Push a saved change to a running gateway now (best effort; it also polls)."""
        return self.admin().reload()
