"""Syslog over TLS (RFC 5425), the pure part: framing, parsing, and the event mapping.

* :class:`OctetFramer` splits a byte stream into RFC 6587 octet-counted frames
  (``MSG-LEN SP SYSLOG-MSG``), incrementally, holding at most one frame's bytes.
* :func:`parse_rfc5424` parses an RFC 5424 message fully (PRI, VERSION, TIMESTAMP, HOSTNAME,
  APP-NAME, PROCID, MSGID, STRUCTURED-DATA, MSG with its BOM) and refuses anything else;
  :func:`parse_rfc3164` parses the BSD format as well as it allows and never fails;
  :func:`parse_message` tries the first, then the second.
* :func:`syslog_event` maps one message onto a ``translog.event/v1`` event that keeps the
  message's original bytes (docs/EVENTS.md, "Syslog over TLS").

No I/O here: the listener is :mod:`translog.ingest.syslog`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from translog.errors import SyslogFrameError, SyslogFrameTooLargeError, SyslogMessageError
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import MAX_EVENT_BYTES, MAX_TIME, SCHEMA
from translog.formats.framing import StreamFramer

SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
"""RFC 5424 severity names, by code (the ``action`` is ``syslog.<name>``)."""
FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
"""RFC 5424 facility names, by code."""
AUTH_FACILITIES = frozenset({4, 10})
"""auth and authpriv: their events get the ``authentication`` category."""
BOM = b"\xef\xbb\xbf"
MAX_MSG_LEN_DIGITS = 9
"""MSG-LEN is at most this many digits, whatever the configured limit (< 1 GB)."""

_PRI = re.compile(rb"<([0-9]{1,3})>")
_HEADER = re.compile(
    rb"<([0-9]{1,3})>([1-9][0-9]{0,2}) ([!-~]+) ([!-~]{1,255}) ([!-~]{1,48}) "
    rb"([!-~]{1,128}) ([!-~]{1,32}) "
)
_RFC3339 = re.compile(
    rb"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]{1,6})?"
    rb"(Z|[+-][0-9]{2}:[0-9]{2})"
)
_MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct",
           b"Nov", b"Dec")  # fmt: skip
_BSD_TIME = re.compile(
    rb"(" + b"|".join(_MONTHS) + rb") ([ 0-3][0-9]) ([0-9]{2}):([0-9]{2}):([0-9]{2}) "
)
_ISO_PREFIX = re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2}T[!-~]+ ")
_TOKEN = re.compile(rb"([!-~]{1,255}) ")
_TAG = re.compile(rb"([A-Za-z0-9_./-]{1,48})(?:\[([!-Z^-~]{1,128})\])?: ?")
_SD_NAME = re.compile(rb"[!#-<>-\\^-~]{1,32}")  # PRINTUSASCII except = SP ] "
_TEXT_OK = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")
_RAW_OK = re.compile(r"[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*")  # tab, LF and CR too


class OctetFramer(StreamFramer[bytes]):
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG``, MSG-LEN a decimal without a
    leading zero. A broken frame raises :class:`SyslogFrameError`, a frame over
    ``max_frame`` bytes :class:`SyslogFrameTooLargeError` (as soon as its length is read);
    :class:`StreamFramer` has the rules for what comes after."""

    __slots__ = ("_digits", "_max", "_need")

    def __init__(self, max_frame: int) -> None:
        super().__init__()
        self._max = max_frame
        self._digits = min(len(str(max_frame)), MAX_MSG_LEN_DIGITS)
        self._need = -1
        """The length of the frame being read, or -1 while reading a MSG-LEN."""

    def next_frame(self, buf: bytearray, pos: int) -> tuple[bytes | None, int]:
        if self._need < 0:
            space = buf.find(b" ", pos, pos + self._digits + 1)
            if space < 0:
                self._check_length(buf[pos : min(len(buf), pos + self._digits + 1)], False)
                return None, pos
            self._need = self._check_length(buf[pos:space], True)
            pos = space + 1
        if len(buf) - pos < self._need:
            return None, pos
        end = pos + self._need
        self._need = -1
        return bytes(buf[pos:end]), end

    def in_frame(self) -> bool:
        return self._need >= 0

    def broken(self, reason: str) -> SyslogFrameError:
        return SyslogFrameError(f"octet-counted framing: {reason}")

    def _check_length(self, digits: bytearray, complete: bool) -> int:
        """The MSG-LEN ``digits`` (complete: followed by SP); raise if it cannot be one."""
        if digits[:1] == b"0" or not digits.isdigit():
            if not digits and not complete:
                return 0
            raise self.broken(f"bad MSG-LEN {bytes(digits[:16])!r}")
        if len(digits) > self._digits or int(digits) > self._max:
            raise SyslogFrameTooLargeError(
                f"octet-counted framing: frame of {int(digits[: self._digits + 1])}"
                f"{'+' if len(digits) > self._digits else ''} bytes exceeds the "
                f"{self._max}-byte limit"
            )
        return int(digits) if complete else 0


def frame(message: bytes) -> bytes:
    """``message`` octet-counted (what a sender writes)."""
    return b"%d %s" % (len(message), message)


@dataclass(frozen=True)
class SyslogMessage:
    """One parsed syslog message; absent (NILVALUE) fields are None."""

    raw: bytes
    format: str
    """``rfc5424`` or ``rfc3164``."""
    facility: int
    severity: int
    version: int | None = None
    timestamp: str | None = None
    """The TIMESTAMP as sent."""
    time_ms: int | None = None
    """TIMESTAMP in UTC ms since the epoch, when it could be read."""
    hostname: str | None = None
    app_name: str | None = None
    procid: str | None = None
    msgid: str | None = None
    structured_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    """SD-ID → PARAM-NAME → value (a list when a name repeats)."""
    msg: bytes = b""
    bom: bool = False
    parse_error: str | None = None
    """Why a message with an RFC 5424 header was read as RFC 3164."""


def _pri(value: bytes) -> tuple[int, int]:
    prival = int(value)
    if prival > 191:
        raise SyslogMessageError(f"PRI {prival} is over 191")
    return prival >> 3, prival & 7


def parse_timestamp(text: bytes) -> int:
    """An RFC 5424 / RFC 3339 TIMESTAMP in UTC ms; SyslogMessageError if it is not one."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise SyslogMessageError(f"TIMESTAMP {text[:40]!r}: not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, offset = m.group(7), m.group(8)
    try:
        tz = UTC
        if offset != b"Z":
            oh, om = int(offset[1:3]), int(offset[4:6])
            if oh > 23 or om > 59:
                raise ValueError("offset")
            delta = timedelta(hours=oh, minutes=om)
            tz = timezone(-delta if offset[:1] == b"-" else delta)
        micros = int((frac or b".0")[1:].ljust(6, b"0"))
        when = datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
    except (ValueError, OverflowError):
        raise SyslogMessageError(f"TIMESTAMP {text[:40]!r}: no such time") from None
    delta_ms = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    return int(delta_ms)


def _nil(value: bytes) -> str | None:
    return None if value == b"-" else value.decode("ascii")


def parse_rfc5424(raw: bytes) -> SyslogMessage:
    """Parse an RFC 5424 message; SyslogMessageError naming the part that breaks it."""
    m = _HEADER.match(raw)
    if m is None:
        raise SyslogMessageError("not an RFC 5424 header (PRI VERSION and six fields)")
    facility, severity = _pri(m.group(1))
    stamp = m.group(3)
    time_ms = None if stamp == b"-" else parse_timestamp(stamp)
    sd, pos = _structured_data(raw, m.end())
    msg = b""
    if pos < len(raw):
        if raw[pos : pos + 1] != b" ":
            raise SyslogMessageError(f"byte {pos}: expected SP before MSG")
        msg = raw[pos + 1 :]
    bom = msg.startswith(BOM)
    if bom:
        msg = msg[3:]
        try:
            msg.decode("utf-8")
        except UnicodeDecodeError:
            raise SyslogMessageError("MSG: a BOM, then bytes that are not UTF-8") from None
    return SyslogMessage(
        raw,
        "rfc5424",
        facility,
        severity,
        version=int(m.group(2)),
        timestamp=_nil(stamp),
        time_ms=time_ms,
        hostname=_nil(m.group(4)),
        app_name=_nil(m.group(5)),
        procid=_nil(m.group(6)),
        msgid=_nil(m.group(7)),
        structured_data=sd,
        msg=msg,
        bom=bom,
    )


def _structured_data(raw: bytes, pos: int) -> tuple[dict[str, dict[str, Any]], int]:
    """STRUCTURED-DATA from ``pos``: NILVALUE or SD-ELEMENTs; the data and where it ends."""
    if raw[pos : pos + 1] == b"-":
        return {}, pos + 1
    if raw[pos : pos + 1] != b"[":
        raise SyslogMessageError(f"byte {pos}: expected STRUCTURED-DATA ('-' or '[')")
    data: dict[str, dict[str, Any]] = {}
    while raw[pos : pos + 1] == b"[":
        m = _SD_NAME.match(raw, pos + 1)
        if m is None:
            raise SyslogMessageError(f"byte {pos + 1}: expected an SD-ID")
        sd_id = m.group().decode("ascii")
        if sd_id in data:
            raise SyslogMessageError(f"SD-ID {sd_id!r} appears twice")
        params: dict[str, Any] = {}
        pos = m.end()
        while raw[pos : pos + 1] == b" ":
            m = _SD_NAME.match(raw, pos + 1)
            if m is None or raw[m.end() : m.end() + 2] != b'="':
                raise SyslogMessageError(f'byte {pos + 1}: expected PARAM-NAME="')
            name = m.group().decode("ascii")
            value, pos = _param_value(raw, m.end() + 2)
            prior = params.get(name)
            if prior is None:
                params[name] = value
            elif isinstance(prior, list):
                prior.append(value)
            else:
                params[name] = [prior, value]
        if raw[pos : pos + 1] != b"]":
            raise SyslogMessageError(f"byte {pos}: expected ']' closing SD-ELEMENT {sd_id!r}")
        data[sd_id] = params
        pos += 1
    return data, pos


def _param_value(raw: bytes, pos: int) -> tuple[str, int]:
    """PARAM-VALUE from ``pos`` up to its closing quote; unescaped, and past the quote."""
    out = bytearray()
    n = len(raw)
    while pos < n:
        c = raw[pos]
        if c == 0x22:  # "
            try:
                return out.decode("utf-8"), pos + 1
            except UnicodeDecodeError:
                raise SyslogMessageError("PARAM-VALUE: not UTF-8") from None
        if c == 0x5C and pos + 1 < n and raw[pos + 1] in b'"\\]':
            out.append(raw[pos + 1])
            pos += 2
            continue
        if c == 0x5D:  # ] must be escaped
            raise SyslogMessageError(f"byte {pos}: unescaped ']' in PARAM-VALUE")
        out.append(c)
        pos += 1
    raise SyslogMessageError("PARAM-VALUE: no closing quote")


def parse_rfc3164(raw: bytes, received_ms: int, *, parse_error: str | None = None) -> SyslogMessage:
    """The BSD format (``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG``) as far as it goes.

    Never fails: a missing PRI is ``<13>`` (user.notice, RFC 3164 section 4.3.3); a timestamp
    without a year takes the year of ``received_ms`` (the one before, if that puts it more
    than a day ahead), in UTC; what cannot be read stays in MSG.
    """
    facility, severity, pos = 1, 5, 0
    m = _PRI.match(raw)
    if m is not None and int(m.group(1)) <= 191:
        facility, severity = _pri(m.group(1))
        pos = m.end()
    timestamp = None
    time_ms = None
    hostname = None
    t = _BSD_TIME.match(raw, pos)
    if t is not None:
        timestamp = t.group()[:-1].decode("ascii")
        time_ms = _bsd_time(t, received_ms)
        pos = t.end()
    else:
        iso = _ISO_PREFIX.match(raw, pos)
        if iso is not None:
            try:
                time_ms = parse_timestamp(iso.group()[:-1])
                timestamp = iso.group()[:-1].decode("ascii")
                pos = iso.end()
            except SyslogMessageError:
                pass
    if timestamp is not None:
        host = _TOKEN.match(raw, pos)
        if host is not None and not host.group(1).endswith(b":") and b"[" not in host.group(1):
            hostname = host.group(1).decode("ascii")
            pos = host.end()
    app_name = procid = None
    tag = _TAG.match(raw, pos)
    if tag is not None:
        app_name = tag.group(1).decode("ascii")
        procid = None if tag.group(2) is None else tag.group(2).decode("ascii")
        pos = tag.end()
    return SyslogMessage(
        raw,
        "rfc3164",
        facility,
        severity,
        timestamp=timestamp,
        time_ms=time_ms,
        hostname=hostname,
        app_name=app_name,
        procid=procid,
        msg=raw[pos:],
        parse_error=parse_error,
    )


def _bsd_time(t: re.Match[bytes], received_ms: int) -> int | None:
    received = datetime.fromtimestamp(max(received_ms, 0) / 1000, UTC)
    month = _MONTHS.index(t.group(1)) + 1
    day, hour, minute, second = (int(t.group(i)) for i in range(2, 6))
    for year in (received.year, received.year - 1):
        try:
            when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:
            continue  # 29 Feb in another year, 31 Apr, 25:00, ...
        if when <= received + timedelta(days=1):
            return int(when.timestamp() * 1000)
    return None


def parse_message(raw: bytes, received_ms: int) -> SyslogMessage:
    """RFC 5424 if the message has its header; otherwise, or if it breaks RFC 5424 after its
    header, RFC 3164 (with the reason in ``parse_error``). Never fails."""
    if _HEADER.match(raw) is None:
        return parse_rfc3164(raw, received_ms)
    try:
        return parse_rfc5424(raw)
    except SyslogMessageError as e:
        return parse_rfc3164(raw, received_ms, parse_error=str(e))


# -- the event ---------------------------------------------------------------------------------


def _field(value: str | None, limit: int) -> str | None:
    """``value`` if the event schema takes it as an identifier (no control characters)."""
    if value is None or not 1 <= len(value) <= limit or not _TEXT_OK.fullmatch(value):
        return None
    return value


def _text_or_base64(data: bytes, name: str) -> dict[str, str]:
    """``{name: text}`` for UTF-8 without control characters (tab, LF, CR excepted), else
    ``{name_base64: ...}``: the bytes either way, exactly."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _RAW_OK.fullmatch(text):
        return {name: text}
    return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def syslog_event(
    message: SyslogMessage,
    *,
    event_id: str,
    tenant: str,
    received_ms: int,
    client: str | None,
    peer: tuple[str, int] | None,
    protocol: str = "syslog-tls",
) -> dict[str, Any]:
    """The ``translog.event/v1`` event for ``message`` (docs/EVENTS.md has the table).

    ``client`` is the TLS client certificate's subject (None: no certificate), ``peer`` the
    connection's address, ``protocol`` the transport (``syslog-tls``, ``relp-tls``). The
    event keeps the original bytes (``details.raw`` or ``details.raw_base64``); if the parsed
    fields would take it past the event size limit, they are left out
    (``details.syslog.omitted``), never the original.
    """
    peer_ip = peer[0] if peer else None
    actor = _field(message.hostname, 256) or peer_ip or "unknown"
    syslog: dict[str, Any] = {
        "format": message.format,
        "facility": message.facility,
        "severity": message.severity,
    }
    parsed: dict[str, Any] = {
        k: v
        for k, v in (
            ("version", message.version),
            ("timestamp", message.timestamp),
            ("hostname", message.hostname),
            ("app_name", message.app_name),
            ("procid", message.procid),
            ("msgid", message.msgid),
            ("structured_data", message.structured_data or None),
            ("parse_error", message.parse_error),
        )
        if v is not None
    }
    if message.format == "rfc5424":
        parsed["bom"] = message.bom
    parsed["msg"] = message.msg.decode("utf-8", "replace")
    transport: dict[str, Any] = {"protocol": protocol}
    if client is not None:
        transport["client_subject"] = client
    if peer is not None:
        transport["peer"] = f"{peer[0]}:{peer[1]}"
    time_ms = message.time_ms
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "id": event_id,
        "time": time_ms if time_ms is not None and 0 <= time_ms <= MAX_TIME else received_ms,
        "actor": {"type": "host", "id": actor},
        "action": f"syslog.{SEVERITIES[message.severity]}",
        "category": "authentication" if message.facility in AUTH_FACILITIES else "system",
        "outcome": {"result": "unknown"},
        "tenant": tenant,
        "service": _field(message.app_name, 128) or "syslog",
        "details": {
            "syslog": syslog | parsed,
            "transport": transport,
            **_text_or_base64(message.raw, "raw"),
        },
    }
    if peer_ip is not None:
        event["source"] = {"ip": peer_ip}
    # Escaped JSON is at most 6 bytes per raw byte for the parsed fields and 2 for the raw
    # text (4/3 as base64): only a long message can pass the limit, so only one is measured.
    if len(message.raw) * 8 + 8192 > MAX_EVENT_BYTES and len(encode_event(event)) > MAX_EVENT_BYTES:
        event["details"]["syslog"] = syslog | {"omitted": "parsed fields: event size limit"}
    return event
