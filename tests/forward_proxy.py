"""A small HTTP forward proxy, run as its own process, that records what it was asked.

``CONNECT host:port`` opens a tunnel (``502`` when the target does not answer); an
absolute-form request (``POST http://host:port/path``) is sent on as origin-form. With
``--auth user:password`` every request must carry that ``Proxy-Authorization`` (else
``407``). Each request is one JSON line in ``--record``: method, target, whether it
carried credentials and whether they were right. Run it with :class:`ForwardProxy`.

    python tests/forward_proxy.py --record seen.jsonl [--auth user:password]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import selectors
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(Exception):
        writer.close()


class _Proxy:
    def __init__(self, record: Path, auth: str) -> None:
        self.record = record
        self.want = b"Basic " + base64.b64encode(auth.encode()) if auth else b""

    def _log(self, entry: dict[str, Any]) -> None:
        with self.record.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        first, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = first.split(" ", 2)
        given = b""
        kept = []
        for ln in lines:
            if ln.lower().startswith("proxy-authorization:"):
                given = ln.split(":", 1)[1].strip().encode()
            elif ln:
                kept.append(ln)
        ok = not self.want or given == self.want
        self._log({"method": method, "target": target, "credentials": bool(given), "auth_ok": ok})
        if not ok:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n")
            writer.write(b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            hostport = (host.strip("[]"), int(port))
        else:
            rest = target.split("://", 1)[1]
            authority, _, path = rest.partition("/")
            host, _, port = authority.rpartition(":")
            hostport = (host.strip("[]"), int(port or 80))
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*hostport), 5)
        except (OSError, TimeoutError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            up_writer.write(f"{method} /{path} HTTP/1.1\r\n".encode() + "".join(f"{k}\r\n" for k in kept).encode())
            up_writer.write(b"\r\n")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


async def _main(record: Path, auth: str) -> None:
    proxy = _Proxy(record, auth)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class ForwardProxy:
    """The proxy process, started and stopped by a test; ``seen()`` is what it recorded."""

    def __init__(self, folder: Path, auth: str = "") -> None:
        self.record = folder / f"proxy-{time.monotonic_ns()}.jsonl"
        self.record.touch()
        self.auth = auth
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> ForwardProxy:
        args = [sys.executable, __file__, "--record", str(self.record)] + (["--auth", self.auth] if self.auth else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                self.stop()
                raise RuntimeError("the forward proxy did not start")
        self.port = int(self.proc.stdout.readline())
        return self

    def url(self, auth: str | None = None) -> str:
        cred = auth if auth is not None else self.auth
        return f"http://{cred + '@' if cred else ''}127.0.0.1:{self.port}"

    def seen(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.record.read_text().splitlines() if ln]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--auth", default="")
    a = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(a.record, a.auth))
