"""The benchmark's processes: the fast vendor, the bare relay, ``aigw serve`` on a real store.

Every process is started here, pinned to a CPU when asked, measured through
``/proc/<pid>/status`` and stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

API_PATH = "/bench/v1/chat/completions"
#: Limits high enough never to refuse, but every check runs (rpm, tpm and quota counted).
RPM = 1_000_000_000
TPM = 1_000_000_000_000
QUOTA = 1e15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of ``pid`` in MB (``VmHWM`` = the peak so far)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants (LiteLLM runs a master and its workers)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            total += rss_mb(p)
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return total


def post_once(port: int, path: str, body: bytes, key: str | None, timeout: float = 5.0) -> int:
    """One blocking POST on a new connection: the status (raises ``OSError`` if not listening)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class Proc:
    """A child process we started: pinned, measured, stopped by pid."""

    def __init__(
        self, name: str, cmd: list[str], port: int, *, cpu: int | None, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        #: Count the RSS of the process's children too (a multi-process server).
        self.tree = False
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or os.environ.copy(),
                cwd=ROOT,
            )
        self.started = time.perf_counter()
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.popen.pid, {cpu})

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self, field: str = "VmRSS") -> float:
        return rss_mb(self.pid, field) if not self.tree else tree_rss_mb(self.pid)

    def wait_answer(self, path: str, body: bytes, key: str | None, timeout: float = 30.0) -> float:
        """Poll until a POST answers 200: seconds since the process was started."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.popen.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                status = post_once(self.port, path, body, key)
            except OSError:
                status = 0
            if status == 200:
                return time.perf_counter() - self.started
            if status not in (0, 502, 503):
                raise RuntimeError(f"{self.name} answered {status}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer within {timeout} s; see {self.log}")
            time.sleep(0.005)

    def stop(self, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def start_upstream(workdir: Path, cpu: int | None) -> Proc:
    port = free_port()
    p = Proc(
        "upstream", [sys.executable, str(HERE / "upstream.py"), str(port)], port, cpu=cpu, log=workdir / "upstream.log"
    )
    p.wait_answer("/v1/chat/completions", b"{}", None)
    return p


#: LiteLLM's path for the same call (it serves the OpenAI paths at its root).
LITELLM_PATH = "/v1/chat/completions"


def start_litellm(workdir: Path, upstream: Proc, cpu: int | None, exe: str, key: str, workers: int = 2) -> Proc:
    """LiteLLM's proxy as the issue measured it: ``workers`` uvicorn workers, no database,
    one model routed to the same benchmark vendor (its own install: ``pip install 'litellm[proxy]'``).
    Its master key is the benchmark's consumer key, so it authenticates every request as aigw does."""
    cfg = workdir / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: bench-model\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: http://127.0.0.1:{upstream.port}/v1\n"
        "      api_key: sk-bench-vendor\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {key}\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }  # no fetch of the cost map at start
    env.pop("DATABASE_URL", None)
    p = Proc(
        "litellm",
        [exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--num_workers", str(workers)],
        port,
        cpu=cpu,
        log=workdir / "litellm.log",
        env=env,
    )
    p.tree = True
    return p


def start_relay(workdir: Path, upstream: Proc, cpu: int | None) -> Proc:
    port = free_port()
    return Proc(
        "bare relay",
        [sys.executable, str(HERE / "bare_relay.py"), str(port), f"http://127.0.0.1:{upstream.port}"],
        port,
        cpu=cpu,
        log=workdir / "relay.log",
    )


def gateway_toml(upstream_port: int, consumer_key: str) -> str:
    return f"""
[[model_keys]]
name = "bench-key"
credential = "sk-bench-vendor-{secrets.token_hex(8)}"

[[model_services]]
name = "bench-svc"
vendor = "custom"
address = "http://127.0.0.1:{upstream_port}/v1"
keys = ["bench-key"]
default_model = "bench-model"
[model_services.prices.bench-model]
input = 0.8
output = 2.0

[[model_apis]]
name = "bench-api"
base_path = "/bench"
services = ["bench-svc"]

[[consumers]]
name = "bench-app"
api_keys = ["{consumer_key}"]
quota = {QUOTA:.0f}
quota_unit = "tokens"
quota_period = "month"

[[consumer_groups]]
name = "bench-group"
consumers = ["bench-app"]
model_apis = ["bench-api"]
requests_per_minute = {RPM}
tokens_per_minute = {TPM}
"""


class Gateway:
    """A store configured for the benchmark, and ``aigw serve`` processes on it."""

    def __init__(self, workdir: Path, upstream: Proc) -> None:
        self.workdir = workdir
        self.db = workdir / "data" / "aigw.db"
        self.key = "sk-aigw-bench-" + secrets.token_urlsafe(32)
        cfg = workdir / "bench.toml"
        cfg.write_text(gateway_toml(upstream.port, self.key))
        res = subprocess.run(self._aigw("import", str(cfg)), capture_output=True, text=True, cwd=ROOT)
        if res.returncode != 0:
            raise RuntimeError(f"aigw import failed: {res.stderr}")
        self.admin_port = 0

    def _aigw(self, *args: str) -> list[str]:
        exe = Path(sys.executable).parent / "aigw"
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "tui.cli"]
        return [*base, "--db", str(self.db), *args]

    def start(self, cpu: int | None) -> Proc:
        port, self.admin_port = free_port(), free_port()
        return Proc(
            "aigw",
            self._aigw("serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{self.admin_port}"),
            port,
            cpu=cpu,
            log=self.workdir / "serve.out",
        )

    def health(self) -> dict[str, object]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/healthz")
            return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
        finally:
            conn.close()

    def metric(self, name: str) -> float:
        """One unlabelled value from the admin ``/metrics`` (Prometheus text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)

    def stored_records(self) -> int:
        """Request records in the store (read after the gateway stopped: all flushed)."""
        sys.path.insert(0, str(ROOT))
        from store import usage
        from store.db import open_store

        st = open_store(str(self.db))
        try:
            with st.session() as s:
                return sum(r["requests"] for r in usage.totals(s, "consumer"))
        finally:
            st.dispose()
