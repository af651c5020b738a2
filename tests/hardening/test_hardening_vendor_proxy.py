"""Outbound forward proxies through a real ``aigw serve`` and a real proxy process (``tests/forward_proxy.py``).

The gateway runs with ``https_proxy`` (lower case) and ``HTTP_PROXY`` (upper case) set to
a proxy that wants credentials, and ``NO_PROXY=localhost``: an ``http://`` vendor is
reached with absolute-form requests, an ``https://`` one through a CONNECT tunnel, a
``NO_PROXY`` host and a service with ``proxy = "none"`` directly. A proxy that refuses
(wrong credentials, no way to the vendor, not running) is a 502 naming the proxy,
never its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_vendor import OK_BODY, FaultVendor
from forward_proxy import ForwardProxy
from helpers import free_port, record_for
from hhelpers import assert_error_shape
from vendor_gw import Case, VendorGw, start

from store.db import Store, open_store

PROXY_AUTH = "gw-user:s3cret-proxy-pw"
WRONG_AUTH = "gw-user:WRONG-proxy-pw"


@pytest.fixture(scope="module")
def fproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    p = ForwardProxy(tmp_path_factory.mktemp("proxy"), auth=PROXY_AUTH).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gw(
    fault: FaultVendor,
    tls_vendor: FaultVendor,
    fproxy: ForwardProxy,
    certs: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[VendorGw]:
    ca = f'ca_file = "{certs[0]}"\n'
    http, https = f"http://127.0.0.1:{fault.port}", f"https://127.0.0.1:{tls_vendor.port}"
    wrong = f'proxy = "{fproxy.url(WRONG_AUTH)}"\n'
    cases = [
        Case("http-env", f"{http}/m/ok/http-env/v1"),
        Case("https-env", f"{https}/m/ok/https-env/v1", extra=ca),
        Case("bypass", f"http://localhost:{fault.port}/m/ok/bypass/v1"),
        Case("none", f"{http}/m/ok/none/v1", extra='proxy = "none"\n'),
        # NO_PROXY says direct, the service's own proxy says otherwise: the service wins
        Case("own-proxy", f"http://localhost:{fault.port}/m/ok/own/v1", extra=f'proxy = "{fproxy.url()}"\n'),
        Case("wrong-http", f"{http}/m/ok/wrong/v1", extra=wrong),
        Case("wrong-https", f"{https}/m/ok/wrong/v1", extra=ca + wrong),
        Case("no-way", f"https://127.0.0.1:{free_port()}/v1"),
        Case("proxy-down", f"{http}/m/ok/down/v1", extra=f'proxy = "http://127.0.0.1:{free_port()}"\n'),
    ]
    env = {"https_proxy": fproxy.url(), "HTTP_PROXY": fproxy.url(), "NO_PROXY": "localhost, example.invalid"}
    g = start(tmp_path_factory.mktemp("vp"), cases, env=env)
    try:
        yield g
    finally:
        g.proc.stop()


@pytest.fixture(scope="module")
def st(gw: VendorGw) -> Iterator[Store]:
    s = open_store(str(gw.db))
    yield s
    s.dispose()


def proxied(fproxy: ForwardProxy, part: str) -> list[dict[str, object]]:
    return [e for e in fproxy.seen() if part in str(e["target"])]


def test_http_vendor_through_the_proxy_in_absolute_form(gw: VendorGw, fproxy: ForwardProxy, fault: FaultVendor) -> None:
    r, _, _ = gw.call("http-env")
    assert r.status_code == 200 and r.content == OK_BODY, (r.status_code, r.content[:300])
    (seen,) = proxied(fproxy, "/http-env/")
    assert seen["method"] == "POST" and seen["auth_ok"] is True
    assert seen["target"] == f"http://127.0.0.1:{fault.port}/m/ok/http-env/v1/chat/completions"
    vendor_head = next(s.head for s in fault.seen if b"/http-env/" in s.head).lower()
    assert b"proxy-authorization" not in vendor_head  # the proxy's, not the vendor's


def test_https_vendor_through_a_connect_tunnel(gw: VendorGw, fproxy: ForwardProxy, tls_vendor: FaultVendor) -> None:
    r, _, _ = gw.call("https-env")
    assert r.status_code == 200 and r.content == OK_BODY, (r.status_code, r.content[:300])
    tunnels = [e for e in fproxy.seen() if e["target"] == f"127.0.0.1:{tls_vendor.port}" and e["auth_ok"]]
    assert tunnels and tunnels[0]["method"] == "CONNECT"
    assert any(b"/https-env/" in s.head for s in tls_vendor.seen)


@pytest.mark.parametrize("case", ["bypass", "none"])
def test_no_proxy_and_proxy_none_go_direct(gw: VendorGw, fproxy: ForwardProxy, fault: FaultVendor, case: str) -> None:
    r, _, _ = gw.call(case)
    assert r.status_code == 200 and r.content == OK_BODY, (r.status_code, r.content[:300])
    assert any(f"/{case}/".encode() in s.head for s in fault.seen)
    assert not proxied(fproxy, f"/{case}/")


def test_service_proxy_overrides_the_environment(gw: VendorGw, fproxy: ForwardProxy) -> None:
    r, _, _ = gw.call("own-proxy")
    assert r.status_code == 200, (r.status_code, r.content[:300])
    (seen,) = proxied(fproxy, "/own/")
    assert str(seen["target"]).startswith("http://localhost:")


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("wrong-http", "refused the request (407 Proxy Authentication Required)"),
        ("wrong-https", "refused to open a tunnel to 127.0.0.1"),
        ("no-way", "(502 Bad Gateway)"),
        ("proxy-down", "cannot reach the proxy http://127.0.0.1:"),
    ],
)
def test_a_refusing_proxy_is_a_502_naming_it(
    gw: VendorGw, st: Store, fproxy: ForwardProxy, case: str, words: str
) -> None:
    r, took, rid = gw.call(case)
    assert r.status_code == 502, (r.status_code, r.content[:300])
    err = assert_error_shape(502, r.headers.get("content-type", ""), r.content)
    assert words in err["message"] and "proxy" in err["message"], err
    assert took < gw.cases[case].timeout_s + 3
    assert record_for(st, rid)["status"] == 502
    line = gw.logged(words)
    if case != "proxy-down":
        assert f"http://127.0.0.1:{fproxy.port}" in err["message"]
    for secret in ("s3cret-proxy-pw", "WRONG-proxy-pw"):
        assert secret not in err["message"] and secret not in line


def test_proxy_credentials_never_logged(gw: VendorGw) -> None:
    out = gw.proc.output() + gw.log_path.read_text(errors="replace")
    assert "s3cret-proxy-pw" not in out and "WRONG-proxy-pw" not in out
    assert "Traceback" not in out, out[-3000:]
