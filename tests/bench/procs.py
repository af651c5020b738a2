"""The benchmark's processes: the vendor, the proxies beside aigw, ``aigw serve`` on a real store.

Every process is started here, pinned to a CPU when asked, measured through ``/proc``
(memory, CPU time and open files of the process and all its children: nginx, LiteLLM
and Portkey run more than one) and stopped by its own pid.
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
#: The same service behind a model API with the response cache on.
CACHED_PATH = "/cached/v1/chat/completions"
#: The same service behind an Anthropic Messages API: every request and answer translated.
MESSAGES_PATH = "/bench-anthropic/v1/messages"
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


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its descendants (LiteLLM and nginx run a master and workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
    return out


def tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and all its descendants."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            total += rss_mb(p)
    return total


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants, every thread (``/proc/<pid>/stat``)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def open_fds(pid: int) -> int:
    """File descriptors open in ``pid`` and its descendants."""
    n = 0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            n += len(os.listdir(f"/proc/{p}/fd"))
    return n


def post_once(
    port: int, path: str, body: bytes, key: str | None, timeout: float = 5.0, headers: dict[str, str] | None = None
) -> int:
    """One blocking POST on a new connection: the status (raises ``OSError`` if not listening)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", **(headers or {})}
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

    def rss(self) -> float:
        return tree_rss_mb(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def fds(self) -> int:
        return open_fds(self.pid)

    def wait_answer(
        self, path: str, body: bytes, key: str | None, timeout: float = 30.0, headers: dict[str, str] | None = None
    ) -> float:
        """Poll until a POST answers 200: seconds since the process was started."""
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited {self.popen.returncode}: {self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                status = post_once(self.port, path, body, key, headers=headers)
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


def start_upstream(workdir: Path, cpu: int | None, chunk_gap_ms: float = 0.0) -> Proc:
    port = free_port()
    cmd = [sys.executable, str(HERE / "upstream.py"), str(port)]
    if chunk_gap_ms:
        cmd += ["--chunk-gap-ms", str(chunk_gap_ms)]
    p = Proc("upstream", cmd, port, cpu=cpu, log=workdir / "upstream.log")
    p.wait_answer("/v1/chat/completions", b"{}", None)
    return p


class RedisProc(Proc):
    """``redis-server`` without persistence, for the limits shared through Redis."""

    def __init__(self, workdir: Path, cpu: int | None) -> None:
        port = free_port()
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        super().__init__("redis", [*cmd, "--dir", str(workdir)], port, cpu=cpu, log=workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ping(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.popen.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer within {timeout} s")


class Joined:
    """A target whose cost is several processes: the gateway and the Redis it counts in.
    CPU, memory and files are summed; everything else is the gateway's."""

    def __init__(self, main: Proc, *others: Proc) -> None:
        self.main = main
        self.all = (main, *others)

    def __getattr__(self, name: str) -> object:
        return getattr(self.main, name)

    def cpu(self) -> float:
        return sum(p.cpu() for p in self.all)

    def rss(self) -> float:
        return sum(p.rss() for p in self.all)

    def fds(self) -> int:
        return sum(p.fds() for p in self.all)

    def stop(self, timeout: float = 20.0) -> int:
        code = self.main.stop(timeout)
        for p in self.all[1:]:
            p.stop(timeout)
        return code


#: LiteLLM's path for the same call (it serves the OpenAI paths at its root).
LITELLM_PATH = "/v1/chat/completions"


def start_litellm(
    workdir: Path, upstream: Proc, cpu: int | None, exe: str, key: str, models: list[str], workers: int = 1
) -> Proc:
    """LiteLLM's proxy: ``workers`` uvicorn workers, no database, the models routed to the same
    benchmark vendor (its own install: ``pip install 'litellm[proxy]'``). Its master key is the
    benchmark's consumer key, so it authenticates every request as aigw does.

    One worker: the proxy under test is pinned to one core, where a second worker adds no rate,
    and uvicorn 0.55 kills a worker that has not answered its health check within 5 s, which a
    LiteLLM worker (20+ s importing on a loaded machine) never has: with two it never came up."""
    cfg = workdir / "litellm.yaml"
    entries = "".join(
        f"  - model_name: {m}\n"
        "    litellm_params:\n"
        f"      model: openai/{m}\n"
        f"      api_base: http://127.0.0.1:{upstream.port}/v1\n"
        "      api_key: sk-bench-vendor\n"
        for m in models
    )
    cfg.write_text(
        "model_list:\n" + entries + f"litellm_settings:\n  telemetry: false\ngeneral_settings:\n  master_key: {key}\n"
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


def start_raw_relay(workdir: Path, upstream: Proc, cpu: int | None) -> Proc:
    port = free_port()
    return Proc(
        "raw relay",
        [sys.executable, "-m", "tests.bench.raw_relay", str(port), f"http://127.0.0.1:{upstream.port}/v1"],
        port,
        cpu=cpu,
        log=workdir / "raw_relay.log",
    )


def nginx_conf(workdir: Path, port: int, upstream_port: int) -> str:
    """The least a proxy hop costs: one worker, keep-alive to the vendor, nothing buffered, no log."""
    tmp = workdir / "nginx"
    return f"""worker_processes 1;
worker_rlimit_nofile 20000;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 10000; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream vendor {{
    server 127.0.0.1:{upstream_port};
    keepalive 1024;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://vendor;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 120s;
    }}
  }}
}}
"""


def start_nginx(workdir: Path, upstream: Proc, cpu: int | None, exe: str) -> Proc:
    """nginx as a child (``daemon off``), its prefix, config and logs in the run's directory."""
    port = free_port()
    tmp = workdir / "nginx"
    tmp.mkdir(exist_ok=True)
    (tmp / "nginx.conf").write_text(nginx_conf(workdir, port, upstream.port))
    cmd = [exe, "-p", str(tmp), "-c", str(tmp / "nginx.conf"), "-e", str(tmp / "error.log"), "-g", "daemon off;"]
    return Proc("nginx", cmd, port, cpu=cpu, log=workdir / "nginx.out")


#: Where the benchmark looks for Portkey's gateway when ``--portkey`` names no folder:
#: a folder where ``npm install @portkey-ai/gateway`` was run.
PORTKEY_DIR = Path("/tmp/portkey")
PORTKEY_ENTRY = Path("node_modules/@portkey-ai/gateway/build/start-server.js")
PORTKEY_PATH = "/v1/chat/completions"


def portkey_headers(upstream: Proc) -> dict[str, str]:
    """Portkey routes by header: the OpenAI provider, sent to our vendor as its custom host."""
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{upstream.port}/v1"}


def start_portkey(workdir: Path, folder: Path, cpu: int | None, node: str) -> Proc:
    """Portkey's gateway on Node (``--headless``: no console UI), no config file: routing is per request."""
    port = free_port()
    env = {**os.environ, "NODE_ENV": "production"}
    return Proc(
        "Portkey",
        [node, str(folder / PORTKEY_ENTRY), f"--port={port}", "--headless"],
        port,
        cpu=cpu,
        log=workdir / "portkey.log",
        env=env,
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
model_policy = "passthrough"
models = ["bench-*"]
[model_services.prices."bench-*"]
input = 0.8
output = 2.0

[[model_apis]]
name = "bench-api"
base_path = "/bench"
services = ["bench-svc"]

[[model_apis]]
name = "bench-cached"
base_path = "/cached"
services = ["bench-svc"]
cache_ttl_s = 3600

[[model_apis]]
name = "bench-anthropic"
protocol = "anthropic"
base_path = "/bench-anthropic"
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
model_apis = ["bench-api", "bench-cached", "bench-anthropic"]
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

    def start(self, cpu: int | None, *more: str) -> Proc:
        """``aigw serve`` (``more``: ``--workers 2``, ``--redis-url …``), pinned to ``cpu``
        with every process it starts (workers inherit the affinity)."""
        port, self.admin_port = free_port(), free_port()
        return Proc(
            "aigw",
            self._aigw(
                "serve", "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{self.admin_port}", *more
            ),
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

    def clear_cache(self) -> None:
        """``POST /cache/clear`` on the admin listener, with the store's admin token."""
        sys.path.insert(0, str(ROOT))
        from store.admin_token import read_token

        token = read_token(self.db.parent)
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request("POST", "/cache/clear", headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"/cache/clear answered {resp.status}")
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

    def overhead_buckets(self) -> list[tuple[float, float]]:
        """``aigw_overhead_seconds`` of plain (non-streaming) vendor calls: (le, cumulative
        count) per bucket, ``+Inf`` as infinity."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        head = 'aigw_overhead_seconds_bucket{outcome="vendor",stream="false",le="'
        out = []
        for line in text.splitlines():
            if line.startswith(head):
                le, _, value = line[len(head) :].partition('"} ')
                out.append((float("inf") if le == "+Inf" else float(le), float(value)))
        return out

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
