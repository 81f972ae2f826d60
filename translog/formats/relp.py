"""RELP, the Reliable Event Logging Protocol (librelp's ``doc/relp.md``), the pure part.

* :class:`RelpFramer` splits a byte stream into frames, ``TXNR SP COMMAND SP DATALEN
  [SP DATA] LF``, incrementally, holding at most one frame's bytes.
* :func:`encode_frame` and :func:`response` write frames (``rsp`` is the server's answer to
  a command, with the command's TXNR).
* :func:`parse_offers` reads the offers of an ``open`` command; :func:`open_answer` is the
  server's ``rsp`` data for them, or raises if the session cannot be opened.
* :func:`check_txnr` enforces that a client's transaction numbers increase.

No I/O here: the listener is :mod:`translog.ingest.relp`; docs/FORMATS.md has the bytes.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from translog.errors import RelpFrameError, RelpFrameTooLargeError
from translog.formats.framing import StreamFramer

MAX_TXNR = 999_999_999
"""TXNR is 1-9 digits; after 999,999,999 a client starts again at 1."""
WRAP_SLACK = 1_000_000
"""A TXNR lower than the previous one is a wrap only if the previous one was this close to
:data:`MAX_TXNR` (librelp's window is far smaller)."""
MAX_OFFERS = 32
"""Most offers (lines) in an ``open``; librelp sends three."""
MAX_OFFER_BYTES = 4096
"""Largest ``open`` data; a longer one is refused."""
RELP_VERSIONS = (0, 1)
"""relp_version values spoken: librelp sends 0 (its experimental version, the one every
deployed librelp uses); the specification calls the same protocol 1."""
SOFTWARE = "translog"
"""The first field of our ``relp_software`` offer."""

_HEADER = re.compile(rb"([0-9]{1,9}) ([A-Za-z]{1,32}) ([0-9]{1,9})([ \n])")
_PARTIAL = re.compile(rb"[0-9]{0,9}(?: (?:[A-Za-z]{0,32}(?: [0-9]{0,9})?)?)?")
_HEADER_MAX = 9 + 1 + 32 + 1 + 9 + 1
_VERSION = re.compile(r"[0-9]{1,9}")


class RelpFrame(NamedTuple):
    """One frame: its transaction number, command (as sent, ASCII letters) and data."""

    txnr: int
    command: str
    data: bytes


class RelpFramer(StreamFramer[RelpFrame]):
    """RELP framing. A malformed header or a missing trailer raises
    :class:`RelpFrameError`, DATALEN over ``max_data`` :class:`RelpFrameTooLargeError` (as
    soon as the header is read); :class:`StreamFramer` has the rules for what comes after."""

    __slots__ = ("_header", "_max")

    def __init__(self, max_data: int) -> None:
        super().__init__()
        self._max = max_data
        self._header: tuple[int, str, int] | None = None
        """The header of the frame whose data is being read."""

    def next_frame(self, buf: bytearray, pos: int) -> tuple[RelpFrame | None, int]:
        if self._header is None:
            m = _HEADER.match(buf, pos)
            if m is None:
                rest = bytes(buf[pos : pos + _HEADER_MAX])
                if len(rest) < _HEADER_MAX and _PARTIAL.fullmatch(rest):
                    return None, pos
                raise self.broken(f"bad header {rest[:40]!r}")
            self._header = self._check_header(m)
            pos = m.end()
        txnr, command, length = self._header
        if length == 0:
            self._header = None
            return RelpFrame(txnr, command, b""), pos
        if len(buf) - pos < length + 1:
            return None, pos
        if buf[pos + length] != 0x0A:
            raise self.broken(f"frame {txnr} ({command}): no LF after its {length} data bytes")
        self._header = None
        return RelpFrame(txnr, command, bytes(buf[pos : pos + length])), pos + length + 1

    def in_frame(self) -> bool:
        return self._header is not None

    def broken(self, reason: str) -> RelpFrameError:
        return RelpFrameError(f"RELP framing: {reason}")

    def _check_header(self, m: re.Match[bytes]) -> tuple[int, str, int]:
        txnr, length = int(m[1]), int(m[3])
        command = m[2].decode("ascii")
        if length > self._max:
            raise RelpFrameTooLargeError(
                f"RELP framing: frame {txnr} ({command}) of {length} data bytes exceeds "
                f"the {self._max}-byte limit"
            )
        ends_header = m[4] == b"\n"
        if ends_header != (length == 0):
            after = "LF" if ends_header else "SP"
            raise self.broken(f"frame {txnr} ({command}): DATALEN {length} followed by {after}")
        return txnr, command, length


def encode_frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    """One frame: ``TXNR SP COMMAND SP DATALEN [SP DATA] LF``."""
    head = b"%d %s %d" % (txnr, command.encode("ascii"), len(data))
    return head + b" " + data + b"\n" if data else head + b"\n"


def response(txnr: int, code: int, text: str, extra: bytes = b"") -> bytes:
    """The ``rsp`` frame answering ``txnr``: ``CODE SP TEXT [LF extra]`` (200 OK, 500 error).
    ``text`` is one line; it is cut to 80 characters, as the specification bounds it."""
    line = " ".join(text.split())[:80]
    data = b"%d %s" % (code, line.encode("utf-8", "replace"))
    return encode_frame(txnr, "rsp", data + b"\n" + extra if extra else data)


SERVER_CLOSE = encode_frame(0, "serverclose")
"""The hint a server sends before it closes a session (TXNR 0, never answered)."""


def check_txnr(previous: int, txnr: int) -> None:
    """Raise unless ``txnr`` may follow ``previous`` (0: none yet) in one session: it must
    increase, wrapping to a small number only near :data:`MAX_TXNR`."""
    if txnr == 0:
        raise RelpFrameError("RELP: TXNR 0 is reserved for hints, and no client hint is defined")
    if txnr > previous:
        return
    if previous > MAX_TXNR - WRAP_SLACK and txnr < WRAP_SLACK:
        return
    raise RelpFrameError(f"RELP: TXNR {txnr} after {previous}: transaction numbers must increase")


def parse_offers(data: bytes) -> dict[str, list[str]]:
    """The offers of an ``open``: ``name[=value[,value...]]`` lines. Raise on data that is
    not UTF-8, too long, or has too many offers."""
    if len(data) > MAX_OFFER_BYTES:
        raise RelpFrameError(f"RELP open: {len(data)} bytes of offers (at most {MAX_OFFER_BYTES})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RelpFrameError(f"RELP open: offers are not UTF-8: {e}") from e
    lines = [line for line in text.split("\n") if line]
    if len(lines) > MAX_OFFERS:
        raise RelpFrameError(f"RELP open: {len(lines)} offers (at most {MAX_OFFERS})")
    offers: dict[str, list[str]] = {}
    for line in lines:
        name, _, values = line.partition("=")
        offers.setdefault(name, []).extend(v for v in values.split(",") if v)
    return offers


def open_answer(offers: dict[str, list[str]], version: str) -> bytes:
    """The ``rsp`` data (after ``200 OK``'s LF) accepting a client's offers: the
    relp_version both speak, our software, and the one command we take, ``syslog``.
    Raise :class:`RelpFrameError` (to be answered 500) without a usable relp_version or
    without ``syslog`` among the client's commands."""
    versions = offers.get("relp_version", [])
    if len(versions) != 1 or not _VERSION.fullmatch(versions[0]):
        raise RelpFrameError(f"RELP open: need one numeric relp_version offer, got {versions!r}")
    chosen = min(int(versions[0]), max(RELP_VERSIONS))
    if "syslog" not in offers.get("commands", []):
        raise RelpFrameError("RELP open: the client does not offer the syslog command")
    return (f"relp_version={chosen}\nrelp_software={SOFTWARE},{version}\ncommands=syslog").encode(
        "ascii"
    )
