"""Shared test helpers: free ports, bounded waits, a real ``aigw serve`` subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from store import usage
from store.admin_token import read_token
from store.db import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Polls:
    """The tries of one bounded wait: ``cond()`` until ``timeout`` seconds have passed.

    The deadline and failure logic :func:`wait_for` and ``pilot_helpers.wait_until``
    share; they differ only in how they wait between tries. Iterating yields each result
    (``None`` where ``cond`` raised); :meth:`failure` is the error to raise afterwards.
    """

    def __init__(self, cond: Callable[[], Any], timeout: float, what: str) -> None:
        self.cond = cond
        self.timeout = timeout
        self.what = what
        self.last_exc: Exception | None = None

    def __iter__(self) -> Iterator[Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            try:
                value = self.cond()
            except Exception as exc:
                self.last_exc, value = exc, None
            yield value

    def failure(self) -> AssertionError:
        last = self.last_exc
        return AssertionError(
            f"timed out after {self.timeout}s waiting for {self.what}" + (f": {last!r}" if last else "")
        )


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy, or fail after ``timeout`` seconds."""
    polls = Polls(cond, timeout, what)
    for value in polls:
        if value:
            return value
        time.sleep(interval)
    raise polls.failure()


async def wait_for_async(
    cond: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """:func:`wait_for` for a test running on the event loop: the loop keeps running between tries."""
    polls = Polls(cond, timeout, what)
    for value in polls:
        if value:
            return value
        await asyncio.sleep(interval)
    raise polls.failure()


class GatewayProcess:
    """``aigw serve`` against ``db`` on free ports, started and stopped by a test."""

    def __init__(self, db: Path, *, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.db = db
        #: More ``aigw serve`` options (``--redis-url``, ``--workers``).
        self.args = list(args or ())
        self.port = free_port()
        self.admin_port = free_port()
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = db.parent / f"serve-{self.port}.out"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def token(self) -> str:
        tok = read_token(self.db.parent)
        assert tok, "admin token not created"
        return tok

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        out = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tui.cli",
                "--db",
                str(self.db),
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--admin-listen",
                f"127.0.0.1:{self.admin_port}",
                *self.args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        out.close()

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"aigw serve exited {self.proc.returncode}: {self.output()[-2000:]}")
            return httpx.get(f"{self.admin_url}/healthz", timeout=1).status_code == 200

        wait_for(up, timeout, what="aigw serve /healthz")
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def reload(self) -> None:
        httpx.post(f"{self.admin_url}/reload", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def gateways_on_one_redis(db: Path, redis_url: str) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two gateways on one store sharing one Redis, started and always stopped: one names
    the Redis on the command line, the other through the environment (both ways work)."""
    a = GatewayProcess(db, args=["--redis-url", redis_url])
    b = GatewayProcess(db, env={"AIGW_REDIS_URL": redis_url})
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def record_for(st: Store, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The stored request record of ``request_id`` (written in batches, so poll for it)."""

    def find() -> dict[str, Any] | None:
        with st.session() as s:
            for r in usage.recent(s, 5000):
                if r.request_id == request_id:
                    return usage.record_dict(r)
        return None

    return wait_for(find, timeout, interval=0.1, what=f"the record of request {request_id}")  # type: ignore[no-any-return]
