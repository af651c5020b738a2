"""How the stream relay cuts what the vendor sends into complete events, read by read."""

from __future__ import annotations

import random

from proxy.relay import _complete_events


def relay_reads(reads: list[bytes]) -> tuple[list[bytes], bytes]:
    pending = bytearray()
    out = [_complete_events(pending, r) for r in reads]
    return out, bytes(pending)


def test_a_read_of_whole_events_is_passed_on_as_it_is() -> None:
    read = b"data: 1\n\ndata: 2\n\n"
    pending = bytearray()
    assert _complete_events(pending, read) is read  # no copy
    assert pending == b""


def test_an_event_cut_by_reads_is_held_until_its_end() -> None:
    out, rest = relay_reads([b"data: 1\n\ndata: ", b"2\n", b"\n", b"data: 3"])
    assert out == [b"data: 1\n\n", b"", b"data: 2\n\n", b""]
    assert rest == b"data: 3"


def test_crlf_events_and_a_boundary_split_between_reads() -> None:
    out, rest = relay_reads([b"data: 1\r\n\r\n", b"data: 2\r\n", b"\r\n", b"data: 3\n", b"\ndata: 4\n\n"])
    assert b"".join(out) == b"data: 1\r\n\r\ndata: 2\r\n\r\ndata: 3\n\ndata: 4\n\n"
    assert out[1] == b"" and rest == b""


def test_any_cutting_gives_the_same_events() -> None:
    stream = b"".join(b'data: {"n": %d}\n\n' % i for i in range(200)) + b"data: [DONE]\n\n"
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        reads = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        out, rest = relay_reads(reads)
        assert b"".join(out) == stream and rest == b""
        assert all(o == b"" or o.endswith(b"\n\n") for o in out)  # only whole events leave
