"""Which forward proxy, if any, a vendor call goes through: the service's ``proxy`` or the environment.

The environment is read the way curl and httpx read it: ``https_proxy`` for ``https://``
vendors, ``http_proxy`` for ``http://`` ones, ``all_proxy`` for either when the specific
one is unset, each in lower case first, then upper case; ``no_proxy`` lists the vendors
reached directly. A service's own ``proxy`` wins over the environment: ``"none"`` never
uses one, an ``http://`` URL always does.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: The service ``proxy`` value that turns proxies off for it, whatever the environment says.
NO_PROXY_VALUE = "none"


class ProxyConfigError(ValueError):
    """A proxy URL the gateway cannot use; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: where it listens, its credentials, and where the setting came from."""

    host: str
    port: int
    #: ``Proxy-Authorization`` header line, ready to send (empty: no credentials).
    auth_line: bytes
    #: Where the setting came from (``HTTPS_PROXY``, ``the service's proxy``), for messages.
    source: str

    @property
    def shown(self) -> str:
        """The proxy's address without its credentials: safe for errors and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def key(self) -> str:
        """Tells pooled connections apart: same address and credentials, same connections."""
        return f"{self.shown}#{hash(self.auth_line):x}" if self.auth_line else self.shown


def parse_proxy_url(url: str, source: str) -> Proxy:
    """An ``http://[user:password@]host[:port]`` proxy URL (no scheme = ``http://``, as curl)."""
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    try:
        parts = urlsplit(raw)
        port = parts.port or 80
    except ValueError:
        raise ProxyConfigError(f"{source}: not a valid proxy URL") from None
    if parts.scheme.lower() != "http":
        raise ProxyConfigError(
            f"{source}: proxy scheme {parts.scheme!r} is not supported; use an http:// forward proxy"
        )
    if not parts.hostname:
        raise ProxyConfigError(f"{source}: the proxy URL has no host")
    auth = b""
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        auth = b"proxy-authorization: Basic " + base64.b64encode(pair) + b"\r\n"
    return Proxy(parts.hostname, port, auth, source)


def _env(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """(value, the variable it came from); lower case wins, as curl and httpx read it."""
    for var in (name.lower(), name.upper()):
        value = environ.get(var, "").strip()
        if value:
            return value, var
    return "", ""


@dataclass(frozen=True, slots=True)
class _Bypass:
    """One ``NO_PROXY`` entry: a host or domain suffix, an IP network, optionally one port."""

    host: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    port: int | None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.network is not None:
            try:
                return ipaddress.ip_address(host) in self.network
            except ValueError:
                return False
        return host == self.host or host.endswith("." + self.host)


def _parse_no_proxy(value: str) -> tuple[bool, tuple[_Bypass, ...]]:
    """(every host bypasses, the entries); commas or spaces separate entries, as curl."""
    out: list[_Bypass] = []
    for item in value.replace(" ", ",").split(","):
        entry = item.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True, ()
        port: int | None = None
        if entry.startswith("["):  # [v6]:port or [v6]
            inner, _, rest = entry[1:].partition("]")
            entry = inner
            if rest.startswith(":") and rest[1:].isdigit():
                port = int(rest[1:])
        elif entry.count(":") == 1:  # host:port (a bare v6 address has several colons)
            name, _, p = entry.partition(":")
            if p.isdigit():
                entry, port = name, int(p)
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            network = None
        out.append(_Bypass(entry.lstrip(".").rstrip("."), network, port))
    return False, tuple(out)


class ProxyChooser:
    """The proxy of each (service setting, vendor scheme, host, port), from the environment read once."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._env: dict[str, Proxy | ProxyConfigError | None] = {}
        for scheme in ("http", "https"):
            value, var = _env(environ, f"{scheme}_proxy")
            if not value:
                value, var = _env(environ, "all_proxy")
            try:
                self._env[scheme] = parse_proxy_url(value, var) if value else None
            except ProxyConfigError as exc:
                self._env[scheme] = exc
        self._bypass_all, self._bypass = _parse_no_proxy(_env(environ, "no_proxy")[0])

    def bypassed(self, host: str, port: int) -> bool:
        """Whether ``NO_PROXY`` sends this vendor direct."""
        if self._bypass_all:
            return True
        h = host.lower().rstrip(".")
        return any(b.matches(h, port) for b in self._bypass)

    def choose(self, setting: str, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for one vendor; raises :class:`ProxyConfigError` for an unusable one."""
        setting = setting.strip()
        if setting.lower() == NO_PROXY_VALUE:
            return None
        if setting:
            return parse_proxy_url(setting, "the service's proxy")
        found = self._env.get(scheme)
        if found is None or self.bypassed(host, port):
            return None
        if isinstance(found, ProxyConfigError):
            raise found
        return found
