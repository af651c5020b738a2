"""Redis URLs as logs and ``/healthz`` may show them.

Apart from :mod:`proxy.redis_link` so a gateway without Redis never imports the client
(with its dependencies, ~6 MB of every idle worker's memory).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def masked(url: str) -> str:
    """``url`` without its password: what logs and ``/healthz`` may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
