"""Real Redis and PostgreSQL servers for the tests that need them, on loopback and free ports.

Each server runs from the operating system's own binaries (Debian packages ``redis-server``
and ``postgresql``; ``.ci/run`` installs them) in a private temp directory, is started
with a deadline, and is always stopped. The fixtures ``redis_server`` and
``postgres_server`` start one per test module.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, wait_for

#: Seconds a server may take to start before the test fails.
START_S = 30.0
#: Seconds a server may take to stop after SIGTERM before it is killed.
STOP_S = 15.0


def _binary(name: str) -> str:
    """``name`` on PATH, else from Debian's versioned PostgreSQL directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(
            f"{name} is not installed; install the servers the tests use: apt-get install -y redis-server postgresql"
        )
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RedisServer:
    """``redis-server`` without persistence on a free loopback port; can be stopped and started again."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aigw-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        out = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_for(self.ping, START_S, interval=0.05, what="redis-server to answer PING")
        return self

    def ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited {self.proc.returncode}: {self.log()[-1000:]}")
        return self.command("PING") == "+PONG"

    def command(self, *args: str) -> str:
        """One command in the Redis protocol; the first line of the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args))
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data.decode().split("\r\n")[0]

    def log(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A throw-away PostgreSQL cluster (initdb into a temp dir) on a free loopback port.

    PostgreSQL refuses to run as root: as root, the cluster belongs to the ``postgres``
    user (made by the Debian package) and its commands run through ``runuser``.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="aigw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            ids = pwd.getpwnam("postgres")
            os.chown(self.dir, ids.pw_uid, ids.pw_gid)

    def url(self, database: str = "aigw") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        subprocess.run(
            [*self._as, _binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=START_S,
        )
        out = open(self.dir / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        if self._as:
            ids = pwd.getpwnam("postgres")
            os.chown(self.dir / "postgres.log", ids.pw_uid, ids.pw_gid)
        self.proc = subprocess.Popen(
            [
                *self._as,
                _binary("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "fsync=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        wait_for(self._ready, START_S, interval=0.1, what="postgres to accept connections")
        self.create_database("aigw")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited {self.proc.returncode}: {self.log()[-1000:]}")
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", connect_timeout=2):
            return True

    def create_database(self, name: str) -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True, connect_timeout=5
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        try:
            return (self.dir / "postgres.log").read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            # runuser passes SIGTERM on to postgres: a "smart" shutdown, then a kill past the deadline.
            _stop(self.proc)
            self.proc = None
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()
