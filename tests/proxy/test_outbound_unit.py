"""Which proxy a vendor call takes: the environment read as curl and httpx read it, and a service's own setting."""

from __future__ import annotations

import pytest

from proxy.outbound import ProxyChooser, ProxyConfigError, parse_proxy_url

P = "http://proxy.internal:3128"


def choose(env: dict[str, str], url: str, setting: str = "") -> str | None:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found = ProxyChooser(env).choose(setting, parts.scheme, parts.hostname or "", port)
    return found.shown if found else None


def test_scheme_specific_then_all_proxy_lower_case_first() -> None:
    assert choose({"HTTPS_PROXY": P}, "https://api.x.com") == P
    assert choose({"https_proxy": P, "HTTPS_PROXY": "http://other:1"}, "https://api.x.com") == P
    assert choose({"HTTPS_PROXY": P}, "http://api.x.com") is None  # https_proxy is for https vendors
    assert choose({"http_proxy": P}, "http://api.x.com") == P
    assert choose({"ALL_PROXY": P}, "https://api.x.com") == P
    assert choose({"all_proxy": "http://other:1", "HTTPS_PROXY": P}, "https://api.x.com") == P
    assert choose({"HTTPS_PROXY": "proxy.internal:3128"}, "https://api.x.com") == P  # no scheme: http://
    assert choose({}, "https://api.x.com") is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("*", "https://api.x.com", True),
        ("x.com", "https://api.x.com", True),  # a domain and its subdomains
        ("x.com", "https://x.com", True),
        (".x.com", "https://api.x.com", True),
        ("x.com", "https://notx.com", False),  # a suffix only at a dot
        ("api.x.com:8443", "https://api.x.com:8443", True),
        ("api.x.com:8443", "https://api.x.com", False),
        ("10.0.0.0/8", "http://10.1.2.3:8000", True),
        ("10.0.0.0/8", "http://11.1.2.3", False),
        ("192.168.1.5", "http://192.168.1.5", True),
        ("::1", "http://[::1]:8000", True),
        ("[::1]:8000", "http://[::1]:8000", True),
        ("fd00::/8", "http://[fd00::5]", True),
        ("localhost other.org", "http://localhost:9", True),  # spaces separate, as curl
        ("API.X.COM", "https://api.x.com", True),
    ],
)
def test_no_proxy(no_proxy: str, url: str, direct: bool) -> None:
    env = {"HTTPS_PROXY": P, "HTTP_PROXY": P, "no_proxy": no_proxy}
    assert (choose(env, url) is None) is direct


def test_service_setting_wins() -> None:
    env = {"HTTPS_PROXY": P, "NO_PROXY": "x.com"}
    assert choose(env, "https://api.y.com", "none") is None
    assert choose(env, "https://api.x.com", "http://mine:8080") == "http://mine:8080"  # NO_PROXY is the environment's


def test_credentials_kept_out_of_what_is_shown() -> None:
    p = parse_proxy_url("http://us%40er:p%3Ass@proxy:3128", "HTTPS_PROXY")
    assert p.shown == "http://proxy:3128"
    assert p.auth_line == b"proxy-authorization: Basic dXNAZXI6cDpzcw==\r\n"  # us@er:p:ss


@pytest.mark.parametrize("url", ["https://proxy:3128", "socks5://proxy:1080", "http://:3128", "http://proxy:99999"])
def test_unusable_proxies_are_refused_with_the_variable_named(url: str) -> None:
    with pytest.raises(ProxyConfigError, match="HTTPS_PROXY"):
        ProxyChooser({"HTTPS_PROXY": url}).choose("", "https", "api.x.com", 443)
