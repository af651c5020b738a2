"""Run ``wrk`` with a generated Lua script (POST body and auth header) and parse its summary."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .loadgen import Target

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PCT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)


@dataclass
class WrkResult:
    rate: float
    requests: int
    errors: int
    #: Latency percentiles in milliseconds (with ``--latency``): 50, 75, 90, 99.
    percentiles: dict[int, float]


def available() -> bool:
    return shutil.which("wrk") is not None


def lua_script(target: Target, body: bytes) -> str:
    text = body.decode()
    if "]==]" in text:
        raise ValueError("body cannot be quoted for Lua")
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{text}]==]", 'wrk.headers["Content-Type"] = "application/json"']
    if target.key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {target.key}"')
    # The target's own header lines (Portkey routes by them): without them every request fails.
    for line in target.headers.decode().split("\r\n"):
        if line:
            name, _, value = line.partition(":")
            lines.append(f'wrk.headers["{name.strip()}"] = "{value.strip()}"')
    return "\n".join(lines) + "\n"


def parse(out: str) -> WrkResult:
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m or not n:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = 0
    if e := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        errors += int(e.group(1))
    if s := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(x) for x in s.groups())
    pct = {int(p): float(v) * _UNITS[u] for p, v, u in _PCT.findall(out)}
    return WrkResult(float(m.group(1)), int(n.group(1)), errors, pct)


def run(
    target: Target,
    body: bytes,
    connections: int,
    duration: float,
    *,
    latency: bool = False,
    cpu: int | None = None,
    threads: int = 1,
) -> WrkResult:
    """One wrk run (``threads`` threads, pinned to ``cpu`` when given)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua_script(target, body))
        script = Path(f.name)
    try:
        cmd = [
            "wrk",
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
        ]
        if latency:
            cmd.append("--latency")
        cmd.append(f"http://{target.host}:{target.port}{target.path}")
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return parse(proc.stdout)
    finally:
        script.unlink(missing_ok=True)
