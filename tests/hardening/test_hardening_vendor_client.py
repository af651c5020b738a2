"""The vendor client against large, hostile, encoded and TLS answers, through a real ``aigw serve``.

Every failure must come back as a 502 in the OpenAI error shape, within the service's
``timeout_s``, saying what the vendor did wrong, recorded, and logged in ``gateway.log``
without the model key's credential; every good answer (a 5 MB one too) must pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fault_vendor import OK_BODY, FaultVendor, big_body
from hconfig import CRED
from helpers import record_for
from hhelpers import assert_error_shape
from vendor_gw import Case, VendorGw, start

from store.db import Store, open_store

MAX_ANSWER = 64 * 1024 * 1024
#: (case, mode, words the 502's message and gateway.log must hold)
HOSTILE = [
    ("huge-head", "huge_head", "head is longer than 64 KiB"),
    ("many-headers", "many_headers", "more than 100 header lines"),
    ("gzip-bomb", "gzip_bomb", "larger than 64 MiB"),
    ("too-big", f"big-{MAX_ANSWER + 1024}", "larger than 64 MiB"),
    ("many-continues", "many_continues", "more than 10 interim (1xx) answers"),
    ("switch", "switch_protocols", "tried to switch protocols"),
    ("brotli", "br", "Content-Encoding 'br'"),
]


@pytest.fixture(scope="module")
def gw(
    fault: FaultVendor, tls_vendor: FaultVendor, certs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VendorGw]:
    cases = [
        Case("big-1500000", fault.mode_url("big-1500000")),
        Case("big-5000000", fault.mode_url("big-5000000")),
        *(Case(name, fault.mode_url(mode)) for name, mode, _ in HOSTILE),
        Case("flood", fault.mode_url("continue_flood"), timeout_s=2),
        Case("extra", fault.mode_url("extra_after_body")),
        Case("gzip", fault.mode_url("gzip")),
        Case("deflate", fault.mode_url("deflate")),
        Case("tls-untrusted", tls_vendor.mode_url("ok")),
        Case("tls-trusted", tls_vendor.mode_url("ok"), extra=f'ca_file = "{certs[0]}"\n'),
        Case("tls-wrong-host", tls_vendor.mode_url("ok", host="localhost"), extra=f'ca_file = "{certs[0]}"\n'),
    ]
    g = start(tmp_path_factory.mktemp("vc"), cases)
    try:
        yield g
    finally:
        g.proc.stop()


@pytest.fixture(scope="module")
def st(gw: VendorGw) -> Iterator[Store]:
    s = open_store(str(gw.db))
    yield s
    s.dispose()


def expect_502(gw: VendorGw, st: Store, case: str, words: str) -> str:
    r, took, rid = gw.call(case)
    assert r.status_code == 502, (r.status_code, r.content[:300])
    err = assert_error_shape(502, r.headers.get("content-type", ""), r.content)
    assert words in err["message"] and f"s-{case}" in err["message"], err
    assert took < gw.cases[case].timeout_s + 3, f"502 after {took:.1f} s"
    rec = record_for(st, rid)
    assert rec["status"] == 502 and words in rec["error"], rec
    line = gw.logged(words)
    assert CRED["k1"] not in line and CRED["k1"] not in err["message"]
    return str(err["message"])


@pytest.mark.parametrize("size", [1_500_000, 5_000_000])
def test_large_answers_pass_whole(gw: VendorGw, st: Store, size: int) -> None:
    """More than the 1 MiB streaming buffer: read to the end, not paused until the deadline."""
    r, _, rid = gw.call(f"big-{size}")
    assert r.status_code == 200, (r.status_code, r.content[:300])
    assert r.content == big_body(size)
    assert record_for(st, rid)["status"] == 200


@pytest.mark.parametrize(("case", "mode", "words"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_answers_are_clear_502s(
    gw: VendorGw, st: Store, fault: FaultVendor, case: str, mode: str, words: str
) -> None:
    expect_502(gw, st, case, words)
    assert fault.seen and any(s.mode == mode for s in fault.seen)
    out = gw.proc.output() + gw.log_path.read_text(errors="replace")
    assert "Traceback" not in out, out[-3000:]


def test_interim_answers_never_extend_the_deadline(gw: VendorGw, st: Store) -> None:
    """``100 Continue`` every half second for a minute: 504 after timeout_s (2 s), not after the minute."""
    r, took, rid = gw.call("flood")
    assert r.status_code == 504, (r.status_code, r.content[:300])
    assert_error_shape(504, r.headers.get("content-type", ""), r.content)
    assert took < gw.cases["flood"].timeout_s + 3, f"504 after {took:.1f} s"
    assert record_for(st, rid)["status"] == 504


def test_bytes_after_the_answer_are_discarded(gw: VendorGw, st: Store, fault: FaultVendor) -> None:
    """A second answer smuggled after the first is no answer: the first stands, the connection goes."""
    fault.seen.clear()
    for _ in range(2):
        r, _, rid = gw.call("extra")
        assert r.status_code == 200 and r.content == OK_BODY, (r.status_code, r.content[:300])
        assert record_for(st, rid)["status"] == 200
    conns = [s.conn_no for s in fault.seen if s.mode == "extra_after_body"]
    assert len(conns) == 2 and conns[0] != conns[1], "a connection with stray bytes was reused"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_gzip_and_deflate_are_asked_for_and_decoded(gw: VendorGw, fault: FaultVendor, encoding: str) -> None:
    fault.seen.clear()
    r, _, _ = gw.call(encoding)
    assert r.status_code == 200 and orjson.loads(r.content)["choices"][0]["message"]["content"] == "hi", r.content
    assert "content-encoding" not in r.headers
    head = fault.seen[-1].head.lower()
    assert b"\r\naccept-encoding: gzip, deflate\r\n" in head, head


def test_untrusted_certificate_is_named(gw: VendorGw, st: Store) -> None:
    msg = expect_502(gw, st, "tls-untrusted", "self-signed certificate")
    assert "certificate of 127.0.0.1" in msg and "ca_file" in msg, msg


def test_ca_file_trusts_the_vendor(gw: VendorGw, st: Store) -> None:
    r, _, rid = gw.call("tls-trusted")
    assert r.status_code == 200 and r.content == OK_BODY, (r.status_code, r.content[:300])
    assert record_for(st, rid)["status"] == 200


def test_certificate_for_another_host_is_named(gw: VendorGw, st: Store) -> None:
    msg = expect_502(gw, st, "tls-wrong-host", "Hostname mismatch")
    assert "certificate of localhost" in msg, msg
