"""Rebuild a tree's hash tiles from its entries, keeping only the right edge (pure).

:class:`TreeBuilder` is the monitor's and the auditor's model of a log: leaf hashes go in, in
order; every hash tile the log should serve comes out, full tiles as they complete and the
partial tiles of the current size on request; the root comes from the edge. The state is the
*edge*: for each tile level, the hashes of its incomplete tile (at most 255 hashes per level),
so resuming a tree of any size needs a few kilobytes, and extending it costs one SHA-256 per
new node.

Hashing calls :mod:`hashlib` directly on byte slices (no per-node objects): this loop is the
audit's hot path (see benchmarks/bench_audit.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from translog.core.merkle import HASH_SIZE, tree_hash
from translog.core.tiles import TILE_HEIGHT, TILE_WIDTH, TileHashReader, TileRef, partial_width
from translog.errors import MalformedError

TILE_BYTES = TILE_WIDTH * HASH_SIZE
_sha256 = hashlib.sha256


def bundle_leaf_hashes(data: bytes) -> tuple[bytes, int]:
    """The leaf hashes of an entry bundle, concatenated, and the number of entries.

    Decodes strictly (a truncated length or entry raises ``MalformedError``) and hashes each
    entry as it goes.
    """
    sha = _sha256
    out: list[bytes] = []
    append = out.append
    pos = 0
    end = len(data)
    while pos < end:
        if pos + 2 > end:
            raise MalformedError(f"entry bundle truncated in the length of entry {len(out)}")
        size = (data[pos] << 8) | data[pos + 1]
        pos += 2
        if pos + size > end:
            raise MalformedError(
                f"entry bundle truncated in entry {len(out)}: expected {size} bytes, "
                f"got {end - pos}"
            )
        append(sha(b"\x00" + data[pos : pos + size]).digest())
        pos += size
    return b"".join(out), len(out)


def tile_root(data: bytes) -> bytes:
    """The root of a full tile: 256 hashes (8 levels) folded pairwise."""
    sha = _sha256
    buf = data
    while len(buf) > HASH_SIZE:
        buf = b"".join([sha(b"\x01" + buf[i : i + 64]).digest() for i in range(0, len(buf), 64)])
    return buf


def split_edge(size: int, blob: bytes) -> list[bytes]:
    """Split a stored edge (the partial tiles of ``size``, level 0 first) into its levels."""
    out: list[bytes] = []
    pos = 0
    level = 0
    while size >> (TILE_HEIGHT * level):
        width = partial_width(size, level) * HASH_SIZE
        out.append(blob[pos : pos + width])
        pos += width
        level += 1
    if pos != len(blob):
        raise MalformedError(f"stored edge has {len(blob)} bytes, size {size} needs {pos}")
    return out


class TreeBuilder:
    """The right edge of a tree, extended by leaf hashes; emits the tiles a log must serve."""

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        """Resume at ``size`` with its edge (see :func:`split_edge`); default: the empty tree."""
        self.size = size
        self._edge = [bytes(e) for e in edge]
        levels = 0
        while size >> (TILE_HEIGHT * levels):
            levels += 1
        if len(self._edge) != levels:
            raise MalformedError(f"an edge for size {size} has {levels} levels, not {len(edge)}")
        for level, e in enumerate(self._edge):
            if len(e) != partial_width(size, level) * HASH_SIZE:
                raise MalformedError(f"edge level {level} has the wrong width for size {size}")

    def edge_blob(self) -> bytes:
        """The edge as one byte string, for storage (:func:`split_edge` reads it back)."""
        return b"".join(self._edge)

    def level0(self) -> bytes:
        """The hashes of the current partial level-0 tile (the leaves after the last full one)."""
        return self._edge[0] if self._edge else b""

    def extend(self, leaf_hashes: bytes) -> list[tuple[TileRef, bytes]]:
        """Append leaf hashes (concatenated); return each hash tile they complete, in order."""
        if len(leaf_hashes) % HASH_SIZE:
            raise MalformedError("leaf hashes must be a multiple of 32 bytes")
        done: list[tuple[TileRef, bytes]] = []
        self._push(0, leaf_hashes, done)
        self.size += len(leaf_hashes) // HASH_SIZE
        return done

    def _push(self, level: int, hashes: bytes, done: list[tuple[TileRef, bytes]]) -> None:
        edge = self._edge
        while len(edge) <= level:
            edge.append(b"")
        pos = 0
        total = len(hashes)
        up: list[bytes] = []
        # Hashes at this level before the extension: one per full tile of the level below.
        tile_index = (self.size >> (TILE_HEIGHT * level)) // TILE_WIDTH
        while pos < total:
            current = edge[level]
            take = min(TILE_BYTES - len(current), total - pos)
            current += hashes[pos : pos + take]
            pos += take
            if len(current) == TILE_BYTES:
                done.append((TileRef(level, tile_index, TILE_WIDTH), current))
                up.append(tile_root(current))
                tile_index += 1
                current = b""
            edge[level] = current
        if up:
            self._push(level + 1, b"".join(up), done)

    def partial_tiles(self) -> list[tuple[TileRef, bytes]]:
        """The partial tile of each level for the current size (the ones a log serves now)."""
        out = []
        for level, e in enumerate(self._edge):
            if e:
                width = len(e) // HASH_SIZE
                index = (self.size >> (TILE_HEIGHT * level)) // TILE_WIDTH
                out.append((TileRef(level, index, width), e))
        return out

    def root(self) -> bytes:
        """The root of the tree of the current size, from the edge alone."""
        edge = self._edge

        def fetch(ref: TileRef) -> bytes:
            data = edge[ref.level] if ref.level < len(edge) else b""
            if len(data) != ref.width * HASH_SIZE:
                raise MalformedError(f"the edge does not hold tile {ref.path}")  # pragma: no cover
            return data

        return tree_hash(self.size, TileHashReader(self.size, fetch))
