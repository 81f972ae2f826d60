"""Syslog framing (RFC 6587 octet counting), RFC 5424 and RFC 3164 parsing, the event mapping.

The RFC 5424 messages are the examples of its section 6.5; the RFC 3164 ones of its section
5.4. Hypothesis fuzzes the framer and both parsers: they return or raise a TranslogError.
"""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from translog.errors import SyslogFrameError, SyslogFrameTooLargeError, SyslogMessageError
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import MAX_EVENT_BYTES, parse_event
from translog.formats.syslog import (
    OctetFramer,
    frame,
    parse_message,
    parse_rfc3164,
    parse_rfc5424,
    parse_timestamp,
    syslog_event,
)

NOW = 1_790_000_000_000  # 2026-09-21
BOM = b"\xef\xbb\xbf"

EXAMPLE_1 = (
    b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - "
    + BOM
    + b"'su root' failed for lonvick on /dev/pts/8"
)
EXAMPLE_2 = (
    b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - "
    b"%% It's time to make the do-nuts."
)
EXAMPLE_3 = (
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] '
    + BOM
    + b"An application event log entry..."
)
EXAMPLE_4 = (
    b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    b'[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    b'[examplePriority@32473 class="high"]'
)


def event_of(raw: bytes, **kw: object) -> dict[str, object]:
    args: dict[str, object] = {
        "event_id": "e1",
        "tenant": "acme",
        "received_ms": NOW,
        "client": "CN=relay1,O=Acme",
        "peer": ("192.0.2.9", 40000),
    }
    args.update(kw)
    event = syslog_event(parse_message(raw, NOW), **args)  # type: ignore[arg-type]
    parse_event(encode_event(event))  # a valid translog.event/v1, within the size limit
    return event


# -- framing ----------------------------------------------------------------------------------


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    messages = [EXAMPLE_1, EXAMPLE_2, b"x", EXAMPLE_3, EXAMPLE_4]
    stream = b"".join(frame(m) for m in messages)
    for size in (1, 2, 3, 7, 64, len(stream)):
        framer = OctetFramer(8192)
        got = []
        for i in range(0, len(stream), size):
            got += framer.feed(stream[i : i + size])
        assert got == messages
        assert framer.buffered == 0
        framer.end()


@pytest.mark.parametrize(
    "stream",
    [b"abc def", b"012 x", b"0 ", b" x", b"12x ", b"-3 abc", b"<34>1 2003-10-11T22:14:15Z"],
)
def test_malformed_frames_are_refused(stream: bytes) -> None:
    with pytest.raises(SyslogFrameError, match="MSG-LEN"):
        OctetFramer(8192).feed(stream)


def test_a_frame_over_the_limit_is_refused_as_soon_as_its_length_is_read() -> None:
    framer = OctetFramer(100)
    assert framer.feed(b"100 " + b"a" * 100) == [b"a" * 100]
    with pytest.raises(SyslogFrameTooLargeError, match="101 bytes exceeds the 100-byte"):
        framer.feed(b"101 ")
    with pytest.raises(SyslogFrameTooLargeError):
        OctetFramer(100).feed(b"9999")  # more digits than the limit has: no SP needed


def test_frames_before_a_broken_one_are_returned_then_the_error() -> None:
    framer = OctetFramer(100)
    assert framer.feed(b"2 ok1 ax3 abc") == [b"ok", b"a"]
    with pytest.raises(SyslogFrameError, match="bad MSG-LEN b'x3'"):
        framer.check()
    with pytest.raises(SyslogFrameError):
        framer.feed(b"1 a")


def test_a_stream_ending_inside_a_frame_is_an_error() -> None:
    framer = OctetFramer(100)
    framer.feed(b"10 abc")
    with pytest.raises(SyslogFrameError, match="ended inside a frame"):
        framer.end()
    after_length = OctetFramer(100)  # the MSG-LEN and SP read, none of the message
    after_length.feed(b"10 ")
    assert after_length.buffered == 0
    with pytest.raises(SyslogFrameError, match="ended inside a frame"):
        after_length.end()


# -- RFC 5424, section 6.5 -------------------------------------------------------------------


def test_rfc5424_example_1_bom_and_nil_fields() -> None:
    m = parse_rfc5424(EXAMPLE_1)
    assert (m.format, m.facility, m.severity, m.version) == ("rfc5424", 4, 2, 1)
    assert m.timestamp == "2003-10-11T22:14:15.003Z"
    assert m.time_ms == 1065910455003
    assert (m.hostname, m.app_name, m.procid, m.msgid) == (
        "mymachine.example.com",
        "su",
        None,
        "ID47",
    )
    assert m.structured_data == {}
    assert m.bom and m.msg == b"'su root' failed for lonvick on /dev/pts/8"


def test_rfc5424_example_2_offset_and_microseconds() -> None:
    m = parse_rfc5424(EXAMPLE_2)
    assert (m.facility, m.severity) == (20, 5)
    assert m.time_ms == 1061727255000  # 12:14:15.000003 UTC
    assert (m.hostname, m.app_name, m.procid, m.msgid) == ("192.0.2.1", "myproc", "8710", None)
    assert not m.bom and m.msg == b"%% It's time to make the do-nuts."


def test_rfc5424_examples_3_and_4_structured_data() -> None:
    m = parse_rfc5424(EXAMPLE_3)
    assert m.structured_data == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application", "eventID": "1011"}
    }
    assert m.msg == b"An application event log entry..."
    m = parse_rfc5424(EXAMPLE_4)
    assert m.structured_data["examplePriority@32473"] == {"class": "high"}
    assert len(m.structured_data) == 2 and m.msg == b""


def test_rfc5424_param_escapes_and_repeated_names() -> None:
    raw = b'<13>1 - - - - - [a@1 p="q\\"uo\\]te\\\\d" p="2" u="\xc3\xa9"] hi'
    m = parse_rfc5424(raw)
    assert m.structured_data == {"a@1": {"p": ['q"uo]te\\d', "2"], "u": "é"}}
    assert m.time_ms is None and m.hostname is None and m.msg == b"hi"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"<192>1 - - - - - -", "PRI 192"),
        (b"<13>1 2003-13-11T22:14:15Z h a - - -", "no such time"),
        (b"<13>1 2003-10-11 h a - - -", "not RFC 3339"),
        (b"<13>1 - h a - - x", "expected STRUCTURED-DATA"),
        (b"<13>1 - h a - - [a b=1]", "PARAM-NAME"),
        (b'<13>1 - h a - - [a b="1"', "closing SD-ELEMENT"),
        (b'<13>1 - h a - - [a b="1]"]', "unescaped"),
        (b"<13>1 - h a - - [a][a]", "appears twice"),
        (b"<13>1 - h a - - -x", "SP before MSG"),
        (b"<13>1 - h a - - - " + BOM + b"\xff", "not UTF-8"),
    ],
)
def test_rfc5424_violations_name_the_part(raw: bytes, reason: str) -> None:
    with pytest.raises(SyslogMessageError, match=reason):
        parse_rfc5424(raw)
    kept = parse_message(raw, NOW)  # still kept, as RFC 3164, with the reason
    assert kept.format == "rfc3164" and kept.raw == raw
    assert kept.parse_error is not None and reason.split()[0] in kept.parse_error


def test_timestamps() -> None:
    assert parse_timestamp(b"1970-01-01T00:00:00Z") == 0
    assert parse_timestamp(b"1985-04-12T23:20:50.52Z") == 482196050520
    assert parse_timestamp(b"1985-04-12T19:20:50.52-04:00") == 482196050520
    for bad in (b"2003-10-11T22:14:60Z", b"2003-10-11T22:14:15+24:00", b"0000-01-01T00:00:00Z"):
        with pytest.raises(SyslogMessageError):
            parse_timestamp(bad)


# -- RFC 3164 ---------------------------------------------------------------------------------


def test_rfc3164_with_every_part() -> None:
    raw = b"<34>Oct 11 22:14:15 mymachine su[231]: 'su root' failed for lonvick on /dev/pts/8"
    m = parse_message(raw, NOW)
    assert (m.format, m.facility, m.severity) == ("rfc3164", 4, 2)
    assert m.timestamp == "Oct 11 22:14:15"
    assert m.time_ms == 1760220855000  # 2025: October 2026 would be in the future
    assert (m.hostname, m.app_name, m.procid) == ("mymachine", "su", "231")
    assert m.msg == b"'su root' failed for lonvick on /dev/pts/8"


def test_rfc3164_as_far_as_it_goes() -> None:
    m = parse_rfc3164(b"Use the BFG!", NOW)
    assert (m.facility, m.severity, m.timestamp, m.hostname, m.msg) == (
        1,
        5,
        None,
        None,
        b"Use the BFG!",
    )
    m = parse_rfc3164(b"<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!", NOW)
    assert (m.hostname, m.app_name, m.msg) == ("10.0.0.99", None, b"Use the BFG!")
    m = parse_rfc3164(b"<13>Feb 30 17:32:18 host app: x", NOW)
    assert m.timestamp == "Feb 30 17:32:18" and m.time_ms is None  # no such day
    m = parse_rfc3164(b"<86>2026-09-21T10:00:00+02:00 web sshd[7]: Accepted key", NOW)
    assert m.time_ms == parse_timestamp(b"2026-09-21T08:00:00Z")
    assert (m.facility, m.hostname, m.app_name, m.procid) == (10, "web", "sshd", "7")


# -- the event ---------------------------------------------------------------------------------


def test_event_of_an_rfc5424_message_keeps_every_field_and_the_original_bytes() -> None:
    event = event_of(EXAMPLE_3)
    assert event["time"] == 1065910455003
    assert event["actor"] == {"type": "host", "id": "mymachine.example.com"}
    assert (event["action"], event["category"], event["service"]) == (
        "syslog.notice",
        "system",
        "evntslog",
    )
    assert event["source"] == {"ip": "192.0.2.9"}
    details = event["details"]
    assert isinstance(details, dict)
    assert details["transport"] == {
        "protocol": "syslog-tls",
        "client_subject": "CN=relay1,O=Acme",
        "peer": "192.0.2.9:40000",
    }
    assert details["raw"] == EXAMPLE_3.decode()
    syslog = details["syslog"]
    assert syslog["structured_data"]["exampleSDID@32473"]["eventID"] == "1011"
    assert syslog["msg"] == "An application event log entry..." and syslog["bom"] is True
    assert syslog["msgid"] == "ID47" and "procid" not in syslog


def test_event_categories_and_fallbacks() -> None:
    event = event_of(EXAMPLE_1)
    assert (event["action"], event["category"]) == ("syslog.crit", "authentication")
    event = event_of(b"\x00\xffno header", client=None, peer=None)
    assert event["actor"] == {"type": "host", "id": "unknown"}
    assert event["time"] == NOW and event["service"] == "syslog" and "source" not in event
    details = event["details"]
    assert isinstance(details, dict)
    assert base64.b64decode(details["raw_base64"]) == b"\x00\xffno header"
    assert "client_subject" not in details["transport"]


def test_an_oversized_event_keeps_the_original_bytes_not_the_parsed_fields() -> None:
    raw = b'<13>1 - h a - - [x@1 v="' + b'\\"' * 3000 + b'"] ' + b"\x01" * 10_000
    event = event_of(raw)
    details = event["details"]
    assert isinstance(details, dict)
    assert base64.b64decode(details["raw_base64"]) == raw
    assert "omitted" in details["syslog"]
    assert len(encode_event(event)) <= MAX_EVENT_BYTES


# -- fuzzing ----------------------------------------------------------------------------------

SAMPLES = [EXAMPLE_1, EXAMPLE_2, EXAMPLE_3, EXAMPLE_4, b"<34>Oct 11 22:14:15 mymachine su: x"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b" ", b"[", b"]", b'"', b"\\", b"=", b"-", BOM]))
        elif op == "delete" and data:
            del data[i]
        else:
            del data[i:]
    return bytes(data)


@given(st.one_of(st.binary(max_size=400), mutated()))
@example(b"<191>999 9999-12-31T23:59:59.999999-23:59 h a p m - x")
@example(b"<0>1 0001-01-01T00:00:00+23:59 h a p m -")
def test_fuzz_parsers_never_crash_and_events_stay_valid(raw: bytes) -> None:
    with contextlib.suppress(SyslogMessageError):
        parse_rfc5424(raw)
    message = parse_message(raw, NOW)
    assert message.raw == raw
    event = syslog_event(
        message, event_id="f", tenant="t", received_ms=NOW, client="CN=x", peer=("::1", 1)
    )
    payload = encode_event(event)
    parse_event(payload)
    details = json.loads(payload)["details"]
    kept = details.get("raw", "").encode() or base64.b64decode(details.get("raw_base64", ""))
    assert kept == raw


@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"3 abc", b"1 x", b" "]))))
def test_fuzz_framer_returns_frames_or_a_framing_error(chunks: list[bytes]) -> None:
    framer = OctetFramer(64)
    try:
        for chunk in chunks:
            for f in framer.feed(chunk):
                assert 1 <= len(f) <= 64
            assert framer.buffered <= 64 + 3
    except (SyslogFrameError, SyslogFrameTooLargeError):
        pass


@given(st.lists(st.binary(min_size=1, max_size=80), max_size=20), st.integers(1, 50))
def test_fuzz_framer_round_trips(messages: list[bytes], size: int) -> None:
    stream = b"".join(frame(m) for m in messages)
    framer = OctetFramer(80)
    got = []
    for i in range(0, len(stream), size):
        got += framer.feed(stream[i : i + size])
    assert got == messages
