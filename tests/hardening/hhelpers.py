"""What the hardening suites share: a gateway built from ``hconfig``, raw HTTP, error checks."""

from __future__ import annotations

import resource
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from fault_vendor import FaultVendor
from hconfig import ENV_VALUE, Keys, hardening_toml
from helpers import GatewayProcess, free_port
from mock_vendor import MockVendor

from store import usage
from store.db import Store
from tui.cli import main as aigw_main

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "Hello, please introduce yourself."}]
#: Statuses the gateway may answer with itself (docs/reference.md, plus 405); 5xx only 502/504 by design.
GATEWAY_STATUSES = frozenset({200, 400, 401, 403, 404, 405, 408, 413, 414, 417, 429, 431, 502, 504})


@dataclass
class HGw:
    proc: GatewayProcess
    db: Path
    keys: Keys
    vendor: MockVendor
    fault: FaultVendor

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def data_dir(self) -> Path:
        return self.db.parent

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.keys.app}"}


def start_gateway(
    tmp: Path, vendor: MockVendor, fault: FaultVendor, *, env: dict[str, str] | None = None, db: Path | None = None
) -> HGw:
    """Import the hardening configuration into a fresh store and start ``aigw serve`` on it."""
    db = db or tmp / "data" / "aigw.db"
    keys = Keys()
    cfg = tmp / "aigw.toml"
    cfg.write_text(hardening_toml(vendor, fault.url, free_port(), keys))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, env={"AIGW_TEST_VENDOR_KEY": ENV_VALUE, **(env or {})})
    proc.env.pop("AIGW_TEST_MISSING_KEY", None)
    proc.start()
    return HGw(proc, db, keys, vendor, fault)


def raise_fd_limit(want: int = 8192) -> int:
    """Lift the soft ``RLIMIT_NOFILE`` (children inherit it) so a thousand sockets fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------ raw HTTP


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def raw_http(port: int, data: bytes, timeout: float = 15.0) -> RawResponse:
    """Send bytes as they are (httpx refuses bad headers); read one answer until the server closes.

    The request should say ``Connection: close`` (or be one the server closes after); the
    whole exchange is bounded by ``timeout`` — a hang is an assertion error.
    """
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no complete answer within {timeout}s to {data[:120]!r}")
            s.settimeout(left)
            try:
                got = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no complete answer within {timeout}s to {data[:120]!r}") from None
            except ConnectionResetError:
                break
            if not got:
                break
            chunks.append(got)
            resp = _parse(b"".join(chunks))
            if resp is not None:
                return resp
    raw = b"".join(chunks)
    resp = _parse(raw, eof=True)
    if resp is None:
        raise AssertionError(f"incomplete HTTP answer {raw[:300]!r} to {data[:120]!r}")
    return resp


def _parse(raw: bytes, eof: bool = False) -> RawResponse | None:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(rest) < n:
            return None
        return RawResponse(status, headers, rest[:n], raw)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
        if body is None:
            return None
        return RawResponse(status, headers, body, raw)
    return RawResponse(status, headers, rest, raw) if eof else None


def _dechunk(data: bytes) -> bytes | None:
    out: list[bytes] = []
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        size = int(line.split(b";")[0] or b"0", 16)
        if size == 0:
            return b"".join(out)
        if len(data) < size + 2:
            return None
        out.append(data[:size])
        data = data[size + 2 :]


# ------------------------------------------------------------------ checks


def assert_error_shape(status: int, content_type: str, body: bytes, *, what: str = "") -> dict[str, Any]:
    """The answer is an OpenAI-shaped JSON error with a non-empty message, and no traceback."""
    assert b"Traceback" not in body and b'File "' not in body, f"traceback in body {what}: {body[:500]!r}"
    assert content_type.startswith("application/json"), (
        f"error {status} {what} is {content_type!r}, not JSON: {body[:300]!r}"
    )
    obj = orjson.loads(body)
    assert isinstance(obj, dict) and isinstance(obj.get("error"), dict), f"{what}: {body[:300]!r}"
    err = obj["error"]
    assert isinstance(err.get("message"), str) and err["message"], f"{what}: {body[:300]!r}"
    assert "type" in err and "code" in err, f"{what}: {body[:300]!r}"
    return err  # type: ignore[no-any-return]


def records_by_id(st: Store, prefix: str = "") -> dict[str, dict[str, Any]]:
    with st.session() as s:
        return {r.request_id: usage.record_dict(r) for r in usage.recent(s, 100_000) if r.request_id.startswith(prefix)}


def count_records(st: Store) -> int:
    with st.session() as s:
        return len(usage.recent(s, 1_000_000))


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connections_of(pid: int, port: int) -> int:
    """Established TCP connections of ``pid`` on local ``port`` (from /proc, no psutil)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    hexport = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[1].endswith(":" + hexport) and parts[3] == "01" and parts[9] in inodes:
                n += 1
    return n
