"""The admin token guarding the admin listener's ``/events``, ``/reload`` and ``/limits``.

Created on first start in ``admin.token`` (0600) in the data directory. The gateway
creates it; the console and ``aigw logs --follow`` read it to talk to any gateway
sharing this store. A store other than SQLite (gateways on several machines) keeps the
token in the database (``store.nodes.shared_admin_token``), and each gateway copies it
into its own ``admin.token``.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILENAME = "admin.token"
GATEWAY_LOG = "gateway.log"


def token_path(data_dir: Path) -> Path:
    return data_dir / FILENAME


def read_token(data_dir: Path) -> str | None:
    try:
        return token_path(data_dir).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_or_create(data_dir: Path) -> str:
    """The existing token, or a new random one written with mode 0600 (never wider)."""
    existing = read_token(data_dir)
    if existing:
        return existing
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = "aigw-admin-" + secrets.token_urlsafe(32)
    path = token_path(data_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    try:
        os.link(tmp, path)  # atomic and refuses to overwrite a token another process just made
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_token(data_dir) or token


def keep_local_copy(data_dir: Path, token: str) -> None:
    """Write the store's shared token (several machines) to ``admin.token`` here too, mode
    0600, so the console and ``aigw logs --follow`` on this machine find it."""
    if read_token(data_dir) == token:
        return
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = token_path(data_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token + "\n")
    os.replace(tmp, path)


def check(expected: str, authorization: str | None) -> bool:
    """Constant-time check of an ``Authorization: Bearer <token>`` header."""
    if not authorization or not expected:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
