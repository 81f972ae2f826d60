"""RELP, the pure part: frames as librelp writes them, offers, transaction numbers, and
hostile streams (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translog.errors import RelpFrameError, RelpFrameTooLargeError
from translog.formats.relp import (
    MAX_TXNR,
    SERVER_CLOSE,
    RelpFrame,
    RelpFramer,
    check_txnr,
    encode_frame,
    open_answer,
    parse_offers,
    response,
)

# The first three frames rsyslog 8.2302 (librelp 1.11.0) sent to a test server.
LIBRELP_OPEN = (
    b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
    b"commands=syslog\n"
)
LIBRELP_SYSLOG = b"2 syslog 57 <86>1 2026-09-21T10:00:00+00:00 web1 sshd 1 - -  hello 0\n\n"
LIBRELP_CLOSE = b"3 close 0\n"


def test_librelp_frames_are_read_whole_and_byte_by_byte() -> None:
    stream = LIBRELP_OPEN + LIBRELP_SYSLOG + LIBRELP_CLOSE
    expected = [
        RelpFrame(
            1,
            "open",
            b"relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
            b"commands=syslog",
        ),
        RelpFrame(2, "syslog", b"<86>1 2026-09-21T10:00:00+00:00 web1 sshd 1 - -  hello 0\n"),
        RelpFrame(3, "close", b""),
    ]
    assert RelpFramer(8192).feed(stream) == expected
    framer = RelpFramer(8192)
    got = [f for i in range(len(stream)) for f in framer.feed(stream[i : i + 1])]
    assert got == expected
    assert framer.buffered == 0
    framer.end()


def test_frames_are_written_as_the_specification_and_librelp_write_them() -> None:
    assert encode_frame(7, "rsp", b"200 OK") == b"7 rsp 6 200 OK\n"
    assert encode_frame(3, "rsp") == b"3 rsp 0\n"  # librelp's answer to close
    assert SERVER_CLOSE == b"0 serverclose 0\n"
    assert response(2, 200, "OK") == b"2 rsp 6 200 OK\n"
    assert response(1, 200, "OK", b"relp_version=0") == b"1 rsp 21 200 OK\nrelp_version=0\n"
    long = response(5, 500, "x " * 100)
    assert long.startswith(b"5 rsp 84 500 ") and len(long.split(b" ", 3)[3]) == 85  # 80 + LF


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (b"x open 0\n", "bad header"),
        (b"1 op3n 0\n", "bad header"),
        (b"1234567890 syslog 1 x\n", "bad header"),
        (b"1 " + b"a" * 33 + b" 0\n", "bad header"),
        (b"1 syslog 3 abcX", "no LF after"),
        (b"1 syslog 0 \n", "DATALEN 0 followed by SP"),
        (b"1 syslog 3\nabc\n", "DATALEN 3 followed by LF"),
        (b"1  syslog 3 abc\n", "bad header"),
    ],
)
def test_malformed_frames_are_refused_with_the_reason(stream: bytes, match: str) -> None:
    with pytest.raises(RelpFrameError, match=match):
        RelpFramer(64).feed(stream)


def test_a_frame_over_the_limit_is_refused_when_its_header_is_read() -> None:
    framer = RelpFramer(100)
    assert framer.feed(b"1 syslog 100 " + b"a" * 100 + b"\n")[0].data == b"a" * 100
    with pytest.raises(RelpFrameTooLargeError, match="101 data bytes exceeds the 100-byte"):
        framer.feed(b"2 syslog 101 ")


def test_frames_before_a_broken_one_are_kept_and_the_error_stays() -> None:
    framer = RelpFramer(64)
    assert framer.feed(b"1 syslog 1 a\n2 syslog 1 bX") == [RelpFrame(1, "syslog", b"a")]
    with pytest.raises(RelpFrameError, match="frame 2"):
        framer.check()
    with pytest.raises(RelpFrameError):
        framer.feed(b"3 close 0\n")


def test_a_stream_ending_inside_a_frame_is_an_error() -> None:
    framer = RelpFramer(64)
    framer.feed(b"1 syslog 5 ab")
    with pytest.raises(RelpFrameError, match="ended inside a frame"):
        framer.end()
    header_only = RelpFramer(64)
    header_only.feed(b"1 sys")
    with pytest.raises(RelpFrameError, match="ended inside"):
        header_only.end()


def test_offers_and_the_open_answer() -> None:
    offers = parse_offers(RelpFramer(8192).feed(LIBRELP_OPEN)[0].data)
    assert offers == {
        "relp_version": ["0"],
        "relp_software": ["librelp", "1.11.0", "http://librelp.adiscon.com"],
        "commands": ["syslog"],
    }
    assert open_answer(offers, "0.1.0") == (
        b"relp_version=0\nrelp_software=translog,0.1.0\ncommands=syslog"
    )
    # a client of the specification's version 1 gets 1; a newer one is answered 1
    assert open_answer(parse_offers(b"relp_version=1\ncommands=syslog"), "v").startswith(
        b"relp_version=1\n"
    )
    assert open_answer(parse_offers(b"relp_version=7\ncommands=x,syslog"), "v").startswith(
        b"relp_version=1\n"
    )
    with pytest.raises(RelpFrameError, match="relp_version"):
        open_answer(parse_offers(b"commands=syslog"), "v")
    with pytest.raises(RelpFrameError, match="relp_version"):
        open_answer(parse_offers(b"relp_version=x\ncommands=syslog"), "v")
    with pytest.raises(RelpFrameError, match="syslog command"):
        open_answer(parse_offers(b"relp_version=0\ncommands=eventlog"), "v")
    with pytest.raises(RelpFrameError, match="offers"):
        parse_offers(b"\n".join(b"o%d=1" % i for i in range(40)))
    with pytest.raises(RelpFrameError, match="UTF-8"):
        parse_offers(b"relp_version=\xff")


def test_transaction_numbers_must_increase_and_may_wrap() -> None:
    check_txnr(0, 1)
    check_txnr(1, 2)
    check_txnr(5, 9)
    check_txnr(MAX_TXNR, 1)
    for previous, txnr in ((3, 3), (3, 2), (500, 1)):
        with pytest.raises(RelpFrameError, match="must increase"):
            check_txnr(previous, txnr)
    with pytest.raises(RelpFrameError, match="reserved for hints"):
        check_txnr(0, 0)


frames = st.builds(
    RelpFrame,
    st.integers(1, MAX_TXNR),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=32),
    st.binary(max_size=80),
)


@given(st.lists(frames, max_size=20), st.integers(1, 60))
def test_fuzz_frames_round_trip_in_any_chunks(sent: list[RelpFrame], size: int) -> None:
    stream = b"".join(encode_frame(*f) for f in sent)
    framer = RelpFramer(80)
    got = [f for i in range(0, len(stream), size) for f in framer.feed(stream[i : i + size])]
    assert got == sent
    framer.end()


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"1 syslog 3 ", b"abc\n", b"2 close 0\n", b" ", b"\n", b"99999"]),
        )
    )
)
def test_fuzz_hostile_streams_give_frames_or_a_framing_error(chunks: list[bytes]) -> None:
    framer = RelpFramer(64)
    try:
        for chunk in chunks:
            for f in framer.feed(chunk):
                assert len(f.data) <= 64 and 1 <= len(f.command) <= 32
            assert framer.buffered <= 64 + 1 + 53
    except (RelpFrameError, RelpFrameTooLargeError):
        pass


@given(st.binary(max_size=300))
def test_fuzz_offers_parse_or_refuse(data: bytes) -> None:
    try:
        offers = parse_offers(data)
        open_answer(offers, "v")
    except RelpFrameError:
        pass
