"""Bad input against a real ``aigw serve``: random paths, methods, headers and bodies.

Properties (hypothesis, a few hundred inputs each): the gateway never answers 500
itself, never puts a traceback in a body, never hangs (every exchange is bounded), and
every error it makes is OpenAI-shaped JSON. Requests are sent as raw bytes over a
socket where httpx would refuse them. Path tricks never reach another API: the mock
vendor serves two APIs on two different paths, and a consumer granted only ``alpha``
must never cause a call on ``beta``'s path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import figures
import httpx
import orjson
import pytest
from hhelpers import CHAT, GATEWAY_STATUSES, MSG, HGw, RawResponse, assert_error_shape, raw_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mock_vendor import MockVendor

from store.admin_token import GATEWAY_LOG

EXAMPLES = 200
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def _reset(vendor: MockVendor) -> Iterator[None]:
    vendor.reset()
    yield


def request_bytes(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("latin-1", "replace"), b"Host: 127.0.0.1"]
    lines += [k + b": " + v for k, v in headers]
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def check_answer(resp: RawResponse, what: str) -> None:
    """The invariants every answer keeps, whoever produced it (the HTTP parser included)."""
    assert resp.status != 500, f"500 for {what}: {resp.body[:400]!r}"
    assert b"Traceback" not in resp.raw and b'File "/' not in resp.raw, f"traceback for {what}"
    assert "x-request-id" in resp.headers, f"no x-request-id on {resp.status} for {what}: {resp.raw[:300]!r}"
    assert resp.status in GATEWAY_STATUSES, f"unexpected {resp.status} for {what}: {resp.body[:300]!r}"
    if resp.status >= 400 and resp.body:
        err = assert_error_shape(resp.status, resp.headers.get("content-type", ""), resp.body, what=what)
        if err["code"] == "bad_http_request":  # not HTTP aiohttp's parser accepts: refused before routing
            figures.add("bad_input.parser_rejections")


def assert_only_alpha_reached(vendor: MockVendor) -> None:
    for rec in vendor.requests:
        path = rec.path.split("?")[0]
        assert path in ("/alpha/v1/chat/completions", "/alpha/v1/completions"), (
            f"a request of the alpha-only consumer reached {rec.path!r}"
        )


# ------------------------------------------------------------------ strategies

SEGMENTS = st.sampled_from(
    [
        "alpha",
        "beta",
        "ALPHA",
        "Beta",
        "v1",
        "V1",
        "chat",
        "completions",
        "models",
        "embeddings",
        "hunyuan",
        "..",
        ".",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e",
        "%2f",
        "%2F",
        "%5c",
        "\\",
        "%00",
        "%20",
        "%ff",
        "%",
        "%zz",
        "",
        ";",
        ";beta",
        "chat%2fcompletions",
        "..%2fbeta",
        "%2e%2e%2fbeta",
        "~",
        "v1%2fchat%2fcompletions",
        "alpha%00",
        "*",
        "?",
        "#",
    ]
)
TEXT_SEGMENT = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"), max_size=12)
PATHS = st.builds(
    lambda segs, trail, query: "/" + "/".join(segs) + ("/" if trail else "") + query,
    st.lists(st.one_of(SEGMENTS, TEXT_SEGMENT), min_size=0, max_size=8),
    st.booleans(),
    st.sampled_from(["", "?", "?a=1", "?model=x&stream=true", "?%00=%ff", "?" + "q" * 3000]),
)
TRICK_PATHS = st.builds(
    lambda prefix, middle, tail: prefix + middle + tail,
    st.sampled_from(
        [
            "/alpha",
            "/ALPHA",
            "/alpha/",
            "//alpha",
            "/alpha/.",
            "",
            "/./alpha",
            "/beta",
            "/alpha/..",
            "/alpha/%2e%2e",
            "/alpha%2f..",
            "/Alpha",
        ]
    ),
    st.sampled_from(
        [
            "",
            "/..",
            "/%2e%2e",
            "/%2E%2e",
            "/../beta",
            "/%2e%2e/beta",
            "/..%2fbeta",
            "%2f..%2fbeta",
            "//beta",
            "/./",
            "/.%2e/beta",
            "/v1/../../beta",
            "/%2fbeta",
            "/v1/..%2f..%2fbeta",
        ]
    ),
    st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "/v1//chat/completions",
            "/v1/chat%2fcompletions",
            "/v1/./chat/completions",
            "/V1/chat/completions",
            "/v1/chat/completions%00",
            "/v1/completions",
            "/v1/chat/completions?x=/beta",
        ]
    ),
)
METHODS = st.one_of(
    st.sampled_from(
        ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "post", "Post", "BREW"]
    ),
    st.from_regex(r"\A[A-Z]{1,12}\Z"),
)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.text(max_size=50)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=5), st.dictionaries(st.text(max_size=10), kids, max_size=5)),
    max_leaves=30,
)


def deep(depth: int) -> str:
    """JSON nested ``depth`` levels (built as text: the json module itself stops near 1000)."""
    opens = "".join("[" if i % 2 else '{"k": ' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opens + '"x"' + closes


BODIES = st.one_of(
    # a plausible chat body with wrong types where it matters
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.one_of(st.text(max_size=40), JSON_VALUES),
            "stream": st.one_of(st.booleans(), JSON_VALUES),
            "messages": st.one_of(st.just(MSG), JSON_VALUES),
            "stream_options": st.one_of(st.just({"include_usage": True}), JSON_VALUES),
            "extra": JSON_VALUES,
        },
    ).map(lambda d: json.dumps(d).encode()),  # json, not orjson: integers beyond 64 bits too
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),  # any JSON at all (arrays, strings, numbers …)
    st.binary(max_size=300),  # not JSON
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1, 1100).map(lambda d: f'{{"model": "m", "messages": {json.dumps(MSG)}, "x": {deep(d)}}}'.encode()),
    st.integers(1, 1100).map(lambda d: f'{{"messages": {deep(d)}}}'.encode()),
    st.integers(0, 3_000_000).map(lambda n: orjson.dumps({"messages": [{"role": "user", "content": "a" * n}]})),
    st.sampled_from(
        [
            b"",
            b"{",
            b"}",
            b"null",
            b"[]",
            b'"x"',
            b"1e999999",
            b'{"model": NaN}',
            b'{"model": "a", "model": 5}',
            b"\xef\xbb\xbf{}",
            b'{"stream": "true"}',
            b'{"a": "\\ud800"}',
            b'{"model": "\x00"}',
        ]
    ),
)
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            b"X-Api-Key",
            b"api-key",
            b"Authorization",
            b"x-request-id",
            b"Content-Type",
            b"Accept-Encoding",
            b"Connection",
            b"Upgrade",
            b"Expect",
            b"Cookie",
            b"TE",
            b"Host",
            b"Transfer-Encoding",
            b"X-Forwarded-For",
            b"Accept",
        ]
    ),
    st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,40}\Z"),
    st.binary(min_size=1, max_size=20),
)
HEADER_VALUES = st.one_of(
    st.binary(max_size=100),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),  # non-ASCII as UTF-8
    st.text(st.characters(max_codepoint=255), max_size=60).map(lambda t: t.encode("latin-1")),
    st.integers(0, 20_000).map(lambda n: b"v" * n),  # huge
    st.sampled_from(
        [
            b"a\r\nX-Injected: 1",
            b"a\rb",
            b"a\nb",
            b"\r\n",
            b"close",
            b"keep-alive, Upgrade",
            b"100-continue",
            b"chunked",
            b"gzip, br",
            b"h2c",
            b"\x00",
            b"Bearer",
            b"Bearer ",
            "Bearer ключ".encode(),
            "😀".encode(),
        ]
    ),
)
HEADERS = st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6)


# ------------------------------------------------------------------ properties


@SETTINGS
@given(method=METHODS, path=PATHS)
def test_any_path_and_method(hgw: HGw, vendor: MockVendor, method: str, path: str) -> None:
    figures.add("bad_input.paths_methods")
    body = orjson.dumps({"model": "x", "messages": MSG})
    head_only = method == "HEAD"
    data = request_bytes(
        method,
        path,
        [(b"Authorization", f"Bearer {hgw.keys.alpha_only}".encode()), (b"Content-Type", b"application/json")],
        body,
    )
    resp = raw_http(hgw.port, data) if not head_only else _head(hgw, data)
    check_answer(resp, f"{method} {path!r}")
    assert_only_alpha_reached(vendor)


def _head(hgw: HGw, data: bytes) -> RawResponse:
    """HEAD answers carry a Content-Length but no body: read the head only."""
    import socket

    with socket.create_connection(("127.0.0.1", hgw.port), timeout=15) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = s.recv(65536)
            if not got:
                break
            buf += got
    head = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in head[1:])}
    return RawResponse(int(head[0].split()[1]), headers, b"", buf)


@SETTINGS
@given(path=TRICK_PATHS, method=st.sampled_from(["POST", "GET"]))
def test_path_tricks_never_reach_another_api(hgw: HGw, vendor: MockVendor, path: str, method: str) -> None:
    figures.add("bad_input.path_tricks")
    data = request_bytes(
        method,
        path,
        [(b"Authorization", f"Bearer {hgw.keys.alpha_only}".encode()), (b"Content-Type", b"application/json")],
        orjson.dumps({"model": "m", "messages": MSG}),
    )
    resp = raw_http(hgw.port, data)
    check_answer(resp, f"{method} {path!r}")
    assert_only_alpha_reached(vendor)
    if resp.status == 200:
        figures.add("bad_input.path_tricks_served_by_alpha")


@pytest.mark.parametrize(
    "path",
    [
        "/alpha/v1/../../beta/v1/chat/completions",
        "/alpha/%2e%2e/beta/v1/chat/completions",
        "/alpha/..%2fbeta/v1/chat/completions",
        "/alpha%2f..%2fbeta/v1/chat/completions",
        "//beta/v1/chat/completions",
        "/BETA/v1/chat/completions",
        "/beta/v1/chat/completions/",
        "/./beta/v1/chat/completions",
        "/alpha/v1/chat/completions/../../../beta/v1/chat/completions",
        "/beta%2fv1%2fchat%2fcompletions",
    ],
)
def test_named_path_tricks_to_beta_are_refused(hgw: HGw, vendor: MockVendor, path: str) -> None:
    """Every way of spelling ``beta`` from an alpha-only consumer ends in 403/404, never at beta."""
    data = request_bytes(
        "POST", path, [(b"Authorization", f"Bearer {hgw.keys.alpha_only}".encode())], orjson.dumps({"messages": MSG})
    )
    resp = raw_http(hgw.port, data)
    check_answer(resp, path)
    assert resp.status in (400, 403, 404), (path, resp.status, resp.body[:200])
    assert not vendor.requests, f"{path} reached the vendor at {vendor.requests[0].path}"


@pytest.mark.parametrize(
    "path",
    [
        "/Alpha/v1/chat/completions",
        "/alpha/V1/chat/completions",
        "/alpha/v1/chat/completions/",
        "/alpha//v1/chat/completions",
        "/alpha/v1/chat%2fcompletions",
        "/alpha%2fv1/chat/completions",
    ],
)
def test_near_miss_paths_are_404_not_a_different_route(hgw: HGw, vendor: MockVendor, path: str) -> None:
    """Routes match exactly: case, slashes and encodings are not folded into a route."""
    data = request_bytes(
        "POST", path, [(b"Authorization", f"Bearer {hgw.keys.app}".encode())], orjson.dumps({"messages": MSG})
    )
    resp = raw_http(hgw.port, data)
    check_answer(resp, path)
    if resp.status == 200:  # only acceptable if it is the very route, normalised by the HTTP layer
        assert [r.path for r in vendor.requests] == ["/alpha/v1/chat/completions"], path
    else:
        assert resp.status == 404 and not vendor.requests, (path, resp.status)


@SETTINGS
@given(headers=HEADERS, which=st.sampled_from(["alpha-only", "app", "none"]))
def test_any_headers(hgw: HGw, vendor: MockVendor, headers: list[tuple[bytes, bytes]], which: str) -> None:
    figures.add("bad_input.headers")
    auth = {"alpha-only": hgw.keys.alpha_only, "app": hgw.keys.app, "none": ""}[which]
    sent = ([(b"Authorization", f"Bearer {auth}".encode())] if auth else []) + headers
    sent = [(k, v) for k, v in sent if k.lower() not in (b"content-length", b"transfer-encoding")]
    data = request_bytes("POST", "/alpha" + CHAT, sent, orjson.dumps({"messages": MSG}))
    resp = raw_http(hgw.port, data)
    check_answer(resp, f"headers {headers!r}"[:300])
    assert_only_alpha_reached(vendor)


@SETTINGS
@given(
    body=BODIES,
    route=st.sampled_from(
        ["/hunyuan" + CHAT, "/poll" + CHAT, "/emb/v1/embeddings", "/hunyuan/v1/completions", "/bymodel" + CHAT]
    ),
    chunked=st.booleans(),
)
def test_any_body(hgw: HGw, body: bytes, route: str, chunked: bool) -> None:
    figures.add("bad_input.bodies")
    headers = [(b"Authorization", f"Bearer {hgw.keys.app}".encode()), (b"Content-Type", b"application/json")]
    if chunked:
        data = (
            f"POST {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n".encode()
            + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            + b"\r\n"
            + (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"")
            + b"0\r\n\r\n"
        )
    else:
        data = request_bytes("POST", route, headers, body)
    resp = raw_http(hgw.port, data, timeout=30)
    check_answer(resp, f"{route} body {body[:200]!r}")
    if resp.status == 200:
        figures.add("bad_input.bodies_forwarded")


def test_deeply_nested_body_that_must_be_rewritten(hgw: HGw, vendor: MockVendor) -> None:
    """A valid body orjson can read (depth ≤ 1024) but the gateway must re-serialise (new model)."""
    for depth in (100, 300, 600, 1000):
        body = f'{{"model": "not-the-default", "messages": {json.dumps(MSG)}, "x": {deep(depth)}}}'.encode()
        r = httpx.post(
            hgw.url + "/hunyuan" + CHAT,
            content=body,
            timeout=30,
            headers={**hgw.auth(), "Content-Type": "application/json"},
        )
        assert r.status_code in (200, 400), (depth, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert_error_shape(400, r.headers["content-type"], r.content, what=f"depth {depth}")


def test_deep_messages_without_vendor_usage_are_estimated(hgw: HGw, vendor: MockVendor) -> None:
    """Token estimates walk the messages: a deep structure must not crash the accounting."""
    vendor.behave(usage="none")
    for stream in (False, True):
        body = (
            f'{{"model": "hunyuan-turbos-latest", "messages": {deep(900)}, "stream": {json.dumps(stream)}}}'
        ).encode()
        r = httpx.post(
            hgw.url + "/hunyuan" + CHAT,
            content=body,
            timeout=30,
            headers={**hgw.auth(), "Content-Type": "application/json", "x-request-id": f"deep-est-{stream}"},
        )
        assert r.status_code == 200, (stream, r.status_code, r.text[:300])


def test_request_smuggling_shapes_are_refused(hgw: HGw, vendor: MockVendor) -> None:
    """Two lengths, or a length with chunked: refused (400) by the HTTP layer, never forwarded twice."""
    auth = f"Authorization: Bearer {hgw.keys.alpha_only}\r\n".encode()
    body = orjson.dumps({"messages": MSG})
    cases = [
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 5\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body,
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        + b"POST /beta/v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        + auth
        + b"Transfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n",
    ]
    for data in cases:
        resp = raw_http(hgw.port, data)
        check_answer(resp, repr(data[:80]))
        assert resp.status == 400, (data[:200], resp.status)
    assert not vendor.requests


def test_malformed_http_is_json_and_never_echoes_or_logs_the_key(hgw: HGw) -> None:
    """aiohttp's own parser errors quote the bad line — with the API key in it — in the body and
    the log; the gateway answers them in its JSON shape and keeps the bytes out of gateway.log."""
    key = hgw.keys.app.encode()
    cases = [
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key
        + b"\x00zz\r\nConnection: close\r\n\r\n",
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-A: a\rb " + key + b"\r\n\r\n",
        b"POST /alpha/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key
        + b"\r\n"
        + b"X-Big: "
        + b"v" * 20000
        + b"\r\n\r\n",
        b"GET /a b " + key + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + key + b"\r\n\r\n",  # TLS to the HTTP port
    ]
    for data in cases:
        resp = raw_http(hgw.port, data)
        check_answer(resp, repr(data[:60]))
        big = b"X-Big: " in data  # a header line over 8,190 bytes: 431
        assert resp.status == (431 if big else 400) and key not in resp.raw, resp.raw[:300]
    log = (hgw.data_dir / GATEWAY_LOG).read_text(errors="replace")
    assert hgw.keys.app not in log and "Traceback" not in log, log[-2000:]


def test_gateway_still_healthy_and_no_internal_errors_logged(hgw: HGw) -> None:
    """Run last in the module: after all of the above, the gateway answers and logged no bug."""
    r = httpx.post(hgw.url + "/alpha" + CHAT, json={"messages": MSG}, headers=hgw.auth(), timeout=30)
    assert r.status_code == 200
    log = (hgw.data_dir / GATEWAY_LOG).read_text(errors="replace")
    assert "unexpected error handling" not in log, log[log.find("unexpected error") :][:3000]
    assert hgw.proc.proc is not None and hgw.proc.proc.poll() is None
