"""A small synchronous client for the gateway's admin listener (``/healthz``, ``/reload``, ``/limits``,
``/cache/clear``).

Synchronous on purpose: the console calls it only from thread workers, so a slow or
absent gateway can never block the UI, and the same client serves tests and scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from store.admin_token import read_token
from store.spec import loopback_url

#: Short: the admin listener is loopback; a gateway that takes longer is "not answering".
TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Health:
    """What ``GET /healthz`` said; unknown fields are ignored."""

    version: str
    revision: int
    listen: str
    admin_listen: str
    public_url: str
    pid: int
    started_at: float
    requests_total: int
    in_flight: int
    db: str
    #: Each model service's circuit (``state``: healthy, open, half-open, unknown) and each
    #: model key's slots (``in_flight``, ``max_concurrency``, ``queued``), by name.
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Health:
        return cls(
            version=str(d.get("version", "")),
            revision=int(d.get("revision", 0) or 0),
            listen=str(d.get("listen", "")),
            admin_listen=str(d.get("admin_listen", "")),
            public_url=str(d.get("public_url", "")),
            pid=int(d.get("pid", 0) or 0),
            started_at=float(d.get("started_at", 0) or 0),
            requests_total=int(d.get("requests_total", 0) or 0),
            in_flight=int(d.get("in_flight", 0) or 0),
            db=str(d.get("db", "")),
            services=_named_dicts(d.get("services")),
            keys=_named_dicts(d.get("keys")),
        )


def _named_dicts(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, dict)}


class AdminClient:
    """Talks to one admin address; the token is read from the store's data folder each time.

    Reading the token lazily matters: a gateway started after the console creates it.
    """

    def __init__(
        self, admin_listen: str, data_dir: Path, *, base_url: str | None = None, timeout: float = TIMEOUT_S
    ) -> None:
        """``base_url`` overrides the URL made from ``admin_listen`` (another node's listener,
        reached by its host name)."""
        self.admin_listen = admin_listen
        self.data_dir = data_dir
        self._base_url = base_url
        # One pooled client: the console polls /healthz every second, and a fresh
        # httpx client per call loads the CA bundle (~175 ms of CPU) for a plain-http
        # loopback address that never uses TLS.
        self._http = httpx.Client(timeout=timeout, verify=False)

    def close(self) -> None:
        self._http.close()

    @property
    def base_url(self) -> str:
        return self._base_url or loopback_url(self.admin_listen)

    def token(self) -> str | None:
        return read_token(self.data_dir)

    def health(self) -> Health | None:
        """``None`` when nothing answers (or something that is not an aigw gateway does)."""
        try:
            r = self._http.get(f"{self.base_url}/healthz")
            if r.status_code != 200:
                return None
            data = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("status") != "ok":
            return None
        return Health.from_json(data)

    def reload(self) -> int | None:
        """Ask the gateway to rebuild its snapshot now; the new revision, or ``None`` if unreachable.

        Best effort: the gateway also polls the revision, so a missed reload only costs time.
        """
        token = self.token()
        if not token:
            return None
        try:
            r = self._http.post(f"{self.base_url}/reload", headers={"Authorization": f"Bearer {token}"})
            if r.status_code != 200:
                return None
            return int(r.json().get("revision", 0))
        except (httpx.HTTPError, ValueError):
            return None

    def limits(self) -> dict[str, Any] | None:
        """``GET /limits``: each consumer's limits and current use in the running gateway.

        ``{"revision": N, "consumers": {name: {"apis": {api: {"requests_per_minute":
        {"limit", "used"}, "tokens_per_minute": {...}}}, "quota": {...} | None}}}``;
        ``None`` when no gateway answers or it does not accept this store's admin token.
        """
        token = self.token()
        if not token:
            return None
        try:
            r = self._http.get(f"{self.base_url}/limits", headers={"Authorization": f"Bearer {token}"})
            if r.status_code != 200:
                return None
            data = r.json()
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("consumers"), dict):
            return None
        return data

    def clear_cache(self, api: str | None = None) -> int | None:
        """``POST /cache/clear``: drop cached answers (one API's, or all); how many, or ``None``
        when no gateway answers, it refuses this store's admin token, or it does not know ``api``."""
        token = self.token()
        if not token:
            return None
        try:
            r = self._http.post(
                f"{self.base_url}/cache/clear",
                params={"api": api} if api else None,
                headers={"Authorization": f"Bearer {token}"},
            )
            if r.status_code != 200:
                return None
            return int(r.json().get("cleared", 0))
        except (httpx.HTTPError, ValueError):
            return None
