"""Entry records of the LMDB backend, and the node hashes of a batch that it stores.

Entry records (docs/FORMATS.md §7) come in three shapes, told apart by the byte at offset 9,
where a leaf has its kind:

* **inline leaf**: the leaf itself (kind 0);
* **committed, with payload**: the leaf's first 9 bytes (version, timestamp), the byte 0x81,
  salt(32), payload. The 32-byte commitment is not stored: it is ``SHA-256(salt || payload)``,
  recomputed on read, and the leaf is the 9 bytes, 0x01 and that commitment. This makes a
  200-byte-payload record 242 bytes, 15 to a 4 KiB page instead of 13;
* **committed, erased**: the 42-byte leaf (kind 1), which keeps the commitment, so the tree and
  every proof stay valid without the payload.

Records written before this layout (kind 1 followed by salt and payload) are still read.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Callable, Sequence
from typing import cast

from translog.core.merkle import NodeLevels
from translog.errors import StorageCorruptError
from translog.storage.base import EntryColumns, NewEntry, StoredEntry, WriteBatch

COMMITTED_LEAF = 42  # translog leaf v1, kind 1: 1 + 8 + 1 + 32
COMPACT = 0x81
"""Kind byte of a committed record that stores salt || payload instead of the commitment."""
_COMPACT_BYTE = bytes([COMPACT])
_HEAD = slice(9)
"""A leaf's version and timestamp: the first bytes of a compact record."""
_slice = cast(Callable[[bytes, slice], bytes], operator.getitem)
KIND_COMMITTED_BYTE = b"\x01"
_sha256 = hashlib.sha256


def entry_record(e: NewEntry) -> bytes:
    """The ``entries`` record of a new entry (see the module docstring)."""
    if e.salt is None:
        return e.leaf
    return e.leaf[:9] + _COMPACT_BYTE + e.salt + (e.payload or b"")


def entry_records(entries: Sequence[NewEntry]) -> list[bytes]:
    """The ``entries`` records of a batch, in order (:func:`entry_record` of each entry)."""
    if not isinstance(entries, EntryColumns):
        return list(map(entry_record, entries))
    leaves, salts, payloads = entries.leaves, entries.salts, entries.payloads
    if None in salts or None in payloads:
        return list(map(entry_record, entries))
    # Every entry committed with its payload (the sequencer's usual batch): header (9 bytes
    # of the leaf), 0x81, salt, payload, joined in C with no Python code per entry.
    heads = map(_slice, leaves, itertools.repeat(_HEAD))
    parts = zip(
        heads,
        itertools.repeat(_COMPACT_BYTE),
        cast(list[bytes], salts),
        cast(list[bytes], payloads),
    )
    return list(map(b"".join, parts))


def even_levels(batch: WriteBatch, new_size: int) -> dict[int, Sequence[bytes]]:
    """The batch's new node hashes of the even levels (the stored ones), by level.

    Checks that there are exactly as many as the batch's size calls for at every level:
    ``(new_size >> level) - (start >> level)``, the leaf hashes being one per entry.
    """
    start = batch.start
    nodes = batch.nodes
    levels: Sequence[Sequence[bytes]]
    if isinstance(nodes, NodeLevels) and nodes.start == start:
        levels = nodes.levels
    else:
        grouped: list[list[bytes]] = []
        for level, _index, value in nodes:
            while len(grouped) <= level:
                grouped.append([])
            grouped[level].append(value)
        levels = grouped
    got0 = len(levels[0]) if levels else 0
    if got0 != new_size - start:
        raise StorageCorruptError(
            f"batch at {start} brings {new_size - start} entries and {got0} leaf hashes"
        )
    top = max(len(levels), (new_size ^ start).bit_length())
    by_level: dict[int, Sequence[bytes]] = {}
    for level in range(0, top, 2):
        values = levels[level] if level < len(levels) else ()
        want = (new_size >> level) - (start >> level)
        if len(values) != want:
            raise StorageCorruptError(
                f"batch at {start} brings {len(values)} nodes at level {level}, expected {want}"
            )
        if want:
            by_level[level] = values
    return by_level


def parse_entry(index: int, value: bytes) -> StoredEntry:
    """The entry ``index`` stored as the record ``value`` (any of the three shapes)."""
    if len(value) >= COMMITTED_LEAF:
        kind = value[9]
        if kind == COMPACT:
            body = value[10:]
            leaf = value[:9] + KIND_COMMITTED_BYTE + _sha256(body).digest()
            return StoredEntry(index, leaf, body[:32], body[32:])
        if kind == 1 and len(value) > COMMITTED_LEAF:  # the layout before the compact record
            rest = value[COMMITTED_LEAF:]
            return StoredEntry(index, value[:COMMITTED_LEAF], rest[:32], rest[32:])
    return StoredEntry(index, value)
