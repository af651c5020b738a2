"""A real ``aigw serve`` with one service and one API per vendor case, for the vendor-client suites.

Each case gets its own service (so ``gateway.log``'s once-a-minute line per service and
reason is that case's) and its own API at ``/<case>``; one consumer may call them all.
Also: a self-signed certificate made with the ``openssl`` command, and calls that time
themselves.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hconfig import CRED, new_key
from helpers import GatewayProcess, wait_for

from store.admin_token import GATEWAY_LOG
from tui.cli import main as aigw_main

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hello"}]


@dataclass
class Case:
    """One service + API: the vendor address and any extra service fields (TOML lines)."""

    name: str
    address: str
    timeout_s: float = 5.0
    extra: str = ""


@dataclass
class VendorGw:
    proc: GatewayProcess
    db: Path
    key: str
    cases: dict[str, Case] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.db.parent / GATEWAY_LOG

    def call(self, case: str, timeout: float = 60) -> tuple[httpx.Response, float, str]:
        """POST a chat request to the case's API: (answer, seconds it took, request id)."""
        rid = f"vc-{case}-{uuid.uuid4().hex[:8]}"
        headers = {"Authorization": f"Bearer {self.key}", "x-request-id": rid}
        t0 = time.monotonic()
        r = httpx.post(f"{self.proc.url}/{case}{CHAT}", json={"messages": MSG}, headers=headers, timeout=timeout)
        return r, time.monotonic() - t0, rid

    def logged(self, words: str, timeout: float = 10) -> str:
        """The gateway.log line holding ``words`` (the log is written as it happens: poll)."""

        def find() -> str | None:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            return next((ln for ln in text.splitlines() if words in ln), None)

        return wait_for(find, timeout, interval=0.1, what=f"{words!r} in gateway.log")  # type: ignore[no-any-return]


def start(tmp: Path, cases: list[Case], env: dict[str, str] | None = None) -> VendorGw:
    key = new_key("vc")
    parts = [f'[[model_keys]]\nname = "k1"\ncredential = "{CRED["k1"]}"\n\n']
    for c in cases:
        parts.append(
            f'[[model_services]]\nname = "s-{c.name}"\nvendor = "custom"\naddress = "{c.address}"\n'
            f'keys = ["k1"]\ndefault_model = "m"\ntimeout_s = {c.timeout_s}\n{c.extra}\n'
            f'[[model_apis]]\nname = "a-{c.name}"\nscenario = "text-generation"\n'
            f'routes = ["{CHAT}"]\nbase_path = "/{c.name}"\nservices = ["s-{c.name}"]\n\n'
        )
    apis = ", ".join(f'"a-{c.name}"' for c in cases)
    parts.append(f'[[consumers]]\nname = "app"\napi_keys = ["{key}"]\n\n')
    parts.append(f'[[consumer_groups]]\nname = "all"\nconsumers = ["app"]\nmodel_apis = [{apis}]\n')
    db = tmp / "data" / "aigw.db"
    cfg = tmp / "aigw.toml"
    cfg.write_text("".join(parts))
    assert aigw_main(["--db", str(db), "import", str(cfg)]) == 0
    proc = GatewayProcess(db, env=env).start()
    return VendorGw(proc, db, key, {c.name: c for c in cases})


def self_signed(folder: Path, cn: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) PEM files of a self-signed certificate for ``cn`` (an IP)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / "vendor-cert.pem", folder / "vendor-key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={cn}", "-addext", f"subjectAltName=IP:{cn}"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
