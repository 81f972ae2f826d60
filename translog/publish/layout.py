"""What a published log looks like in a store: object names, headers and private formats.

Public store (``objstore.url``), exactly the C2SP tlog-tiles read path::

    checkpoint                      the latest published checkpoint note
    tile/<L>/<N>[.p/<W>]            hash tiles, for every size ever published
    tile/entries/<N>[.p/<W>]        entry bundles (the leaves)

Private store (``objstore.private_url``), never readable by the public::

    payloads/<N>[.p/<W>]            payload bundles: salt and payload of each entry of
                                    level-0 tile N (docs/FORMATS.md)
    checkpoints/<size, 20 digits>   checkpoint history: "<timestamp ms>\\n" then the note
    lease                           the single-writer lease (translog.publish.lease)

Headers match the HTTP read path (translog/http/read.py): the checkpoint is
``text/plain; charset=utf-8`` with ``public, max-age=1``; tiles and bundles are
``application/octet-stream`` with ``public, max-age=31536000, immutable``. Private objects are
``private, no-store``.
"""

from __future__ import annotations

from collections.abc import Sequence

from translog.core.tiles import TILE_HEIGHT, TILE_WIDTH, TileRef, format_index
from translog.errors import MalformedError

CHECKPOINT_KEY = "checkpoint"
LEASE_KEY = "lease"
CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
CHECKPOINT_CACHE = "public, max-age=1"
TILE_CACHE = "public, max-age=31536000, immutable"
PRIVATE_CACHE = "private, no-store"
SALT_SIZE = 32

_NONE, _COMMITTED, _ERASED = 0, 1, 2


def tiles_between(old: int, new: int, *, entries: bool = False) -> list[TileRef]:
    """Tiles (or entry bundles) a tree of ``new`` leaves has that one of ``old`` lacked.

    At each level: the full tiles completed since ``old`` (including the one that was partial
    at ``old``) and the partial tile at ``new``. Tiles of ``old`` itself are not repeated.
    """
    if not 0 <= old <= new:
        raise MalformedError(f"invalid size range {old}..{new}")
    refs: list[TileRef] = []
    level = 0
    while new >> (TILE_HEIGHT * level):
        shift = TILE_HEIGHT * (level + 1)
        first = old >> shift  # the tile that was partial (or absent) at old
        full = new >> shift
        refs += [TileRef(level, n, TILE_WIDTH, entries) for n in range(first, full)]
        width = (new >> (TILE_HEIGHT * level)) % TILE_WIDTH
        old_width = (old >> (TILE_HEIGHT * level)) % TILE_WIDTH
        if width and not (full == first and width == old_width):
            refs.append(TileRef(level, full, width, entries))
        if entries:
            break
        level += 1
    return refs


def payloads_key(ref: TileRef) -> str:
    """The private object holding the payloads of entry bundle ``ref``."""
    tail = "" if ref.width == TILE_WIDTH else f".p/{ref.width}"
    return "payloads/" + format_index(ref.index) + tail


def history_key(size: int) -> str:
    """The private object holding the first checkpoint published at ``size``."""
    return f"checkpoints/{size:020d}"


def encode_history(timestamp_ms: int, note: bytes) -> bytes:
    """A checkpoint history object: the timestamp line, then the signed note."""
    return f"{timestamp_ms}\n".encode() + note


def decode_history(data: bytes) -> tuple[int, bytes]:
    """Parse :func:`encode_history` output strictly."""
    head, sep, note = data.partition(b"\n")
    if not sep or not head.isdigit() or not note:
        raise MalformedError("checkpoint history object: expected '<ms>\\n<note>'")
    return int(head), note


def encode_payloads(items: Sequence[tuple[bytes | None, bytes | None, bool]]) -> bytes:
    """A payload bundle: per entry ``(salt, payload, committed)``.

    Each record is one byte: 0 (inline leaf, nothing follows), 1 (committed: 32-byte salt,
    big-endian u32 length, payload) or 2 (committed, payload erased).
    """
    out = bytearray()
    for salt, payload, committed in items:
        if not committed:
            out.append(_NONE)
        elif salt is None or payload is None:
            out.append(_ERASED)
        else:
            if len(salt) != SALT_SIZE:
                raise MalformedError(f"salt must be {SALT_SIZE} bytes")
            out.append(_COMMITTED)
            out += salt
            out += len(payload).to_bytes(4, "big")
            out += payload
    return bytes(out)


def decode_payloads(data: bytes) -> list[tuple[bytes | None, bytes | None, bool]]:
    """Parse a payload bundle strictly (a truncated or unknown record raises)."""
    out: list[tuple[bytes | None, bytes | None, bool]] = []
    pos, end = 0, len(data)
    while pos < end:
        tag = data[pos]
        pos += 1
        if tag == _NONE:
            out.append((None, None, False))
        elif tag == _ERASED:
            out.append((None, None, True))
        elif tag == _COMMITTED:
            if pos + SALT_SIZE + 4 > end:
                raise MalformedError(f"payload bundle truncated at byte {pos}")
            salt = data[pos : pos + SALT_SIZE]
            n = int.from_bytes(data[pos + SALT_SIZE : pos + SALT_SIZE + 4], "big")
            pos += SALT_SIZE + 4
            if pos + n > end:
                raise MalformedError(f"payload bundle truncated at byte {pos}")
            out.append((salt, data[pos : pos + n], True))
            pos += n
        else:
            raise MalformedError(f"payload bundle: unknown record type {tag} at byte {pos - 1}")
    return out
