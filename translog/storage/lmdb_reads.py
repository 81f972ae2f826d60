"""Reads of the LMDB backend: node hashes from their chunks (with caches), entries, leaves,
dedupe keys, and seeks over the ``index`` sub-database."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import os
from collections.abc import Iterator, Sequence
from typing import Any, cast

import lmdb

from translog.errors import NotFoundError, StorageCorruptError, StorageError
from translog.storage.base import StoredEntry
from translog.storage.lmdb_env import (
    CHUNK,
    CHUNK_BYTES,
    LMDBEnv,
    map_error,
    pack_u64,
    unpack_u64,
)
from translog.storage.lmdb_records import (
    COMMITTED_LEAF,
    COMPACT,
    KIND_COMMITTED_BYTE,
    parse_entry,
)

_NODE_CACHE_LEVEL = 8
"""Nodes at this level and above are cached: every proof reads about 1.5 per level, and there
are at most size / 2**(level - 1) of them in the tree (see benchmarks/RESULTS.md)."""
_NODE_CACHE_MAX = 1 << 17
"""About 30 MiB of cached node hashes at most (FIFO eviction)."""
_CHUNK_CACHE_LEVEL = 4
"""Full hash chunks of even levels from here to ``_NODE_CACHE_LEVEL`` are cached as copies:
a proof needs about one node per level, so this saves about five chunk reads per proof."""
_CHUNK_CACHE_MAX = 1 << 14
"""About 32 MiB of cached chunks at most (FIFO): every chunk of levels 4 and 6 up to 10^7."""
_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"  # RFC 6962 interior node: SHA-256(0x01 || left || right)
_Buffer = bytes | memoryview


class LMDBReads(LMDBEnv):
    """The read side of :class:`~translog.storage.lmdb.LMDBStorage`, with its hash caches."""

    def __init__(self, path: str | os.PathLike[str], **env: Any) -> None:
        """Open the environment (``env``: the options of :class:`LMDBEnv`), caches empty."""
        # Complete nodes never change, so their hashes can be cached across transactions.
        self._nodes: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._chunk_cache: collections.OrderedDict[tuple[int, int], bytes] = (
            collections.OrderedDict()
        )
        super().__init__(path, **env)

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        # The hot path of every proof: _read() spelled out without context managers.
        if self._closed:
            raise StorageError("storage is closed")
        self._gate.enter()
        try:
            with self._env.begin(buffers=True) as txn:
                return self._read_hashes(txn, nodes)
        except lmdb.Error as e:
            raise map_error("read", e) from e
        finally:
            self._gate.leave()

    def _read_hashes(self, txn: lmdb.Transaction, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Resolve ``nodes`` in one read transaction (see :meth:`read_hashes`).

        The transaction has ``buffers=True``: chunks are views into the map, valid only until
        it ends, so every hash that leaves here is a copy (``bytes``) or a fresh digest.
        """
        raw = txn.get(b"size", db=self._meta)
        size = unpack_u64(raw)[0] if raw else 0
        run = self._run(txn, size, nodes)
        if run is not None:
            return run
        chunks: dict[tuple[int, int], _Buffer] = {}
        cache = self._nodes
        cached = cache.get
        out: list[bytes] = []
        for node in nodes:
            # A cached node is complete in every later tree: no bounds check needed for it.
            value = cached(node)
            if value is None:
                level, index = node
                if index < 0 or level < 0 or (index + 1) << level > size:
                    raise NotFoundError(
                        f"no hash at level {level} index {index} in a tree of size {size}"
                    )
                value = self._node(txn, chunks, size, level, index)
                if level >= _NODE_CACHE_LEVEL:
                    if len(cache) >= _NODE_CACHE_MAX:
                        with contextlib.suppress(KeyError):
                            cache.popitem(last=False)
                    cache[node] = value
            out.append(value)
        return out

    def _run(
        self, txn: lmdb.Transaction, size: int, nodes: Sequence[tuple[int, int]]
    ) -> list[bytes] | None:
        """Consecutive nodes of one even level below the cache (a hash tile, the leaf hashes
        of an entry bundle): sliced straight from their chunks. None for anything else."""
        n = len(nodes)
        if n < 8:
            return None
        level, first = nodes[0]
        if level & 1 or level >= _NODE_CACHE_LEVEL or first < 0:
            return None
        if nodes[-1] != (level, first + n - 1) or nodes != [(level, first + i) for i in range(n)]:
            return None
        if (first + n) << level > size:
            return None  # the node loop names the missing node
        out: list[bytes] = []
        end = first + n
        index = first
        while index < end:
            chunk, slot = divmod(index, CHUNK)
            data = self._chunk(txn, size, level, chunk)
            take = min(CHUNK - slot, end - index)
            if len(data) < (slot + take) * 32:
                raise StorageCorruptError(f"hash at level {level} index {index} is missing")
            view = bytes(data[slot * 32 : (slot + take) * 32])
            out += [view[i : i + 32] for i in range(0, take * 32, 32)]
            index += take
        return out

    def _node(
        self,
        txn: lmdb.Transaction,
        chunks: dict[tuple[int, int], _Buffer],
        size: int,
        level: int,
        index: int,
    ) -> bytes:
        """The hash of the complete node ``(level, index)``, from its chunk."""
        # An odd-level node is the hash of its two children, which sit side by side in one
        # chunk of the even level below (CHUNK is even): read 64 bytes, hash once.
        odd = level & 1
        even = level - odd
        chunk, slot = divmod(index << odd, CHUNK)
        data = chunks.get((even, chunk))
        if data is None:
            data = chunks[even, chunk] = self._chunk(txn, size, even, chunk)
        width = 32 << odd
        value = data[slot * 32 : slot * 32 + width]
        if len(value) != width:
            raise StorageCorruptError(f"hash at level {level} index {index} is missing")
        return _sha256(_NODE_PREFIX + value).digest() if odd else bytes(value)

    def _chunk(self, txn: lmdb.Transaction, size: int, level: int, chunk: int) -> _Buffer:
        """Chunk ``chunk`` of the even ``level``: a full one (a view, or a cached copy from
        level 4 up) or the tail (a copy)."""
        if chunk >= (size >> level) // CHUNK:
            return bytes(txn.get(bytes([level]), db=self._tail_db) or b"")
        cacheable = level >= _CHUNK_CACHE_LEVEL
        if cacheable:
            hit = self._chunk_cache.get((level, chunk))
            if hit is not None:
                return hit
        data = txn.get(pack_u64(chunk), db=self._levels[level >> 1])
        if data is None or len(data) != CHUNK_BYTES:
            raise StorageCorruptError(f"hash chunk {chunk} of level {level} is bad")
        if cacheable:  # full chunks never change
            cache = self._chunk_cache
            if len(cache) >= _CHUNK_CACHE_MAX:
                with contextlib.suppress(KeyError):
                    cache.popitem(last=False)
            data = cache[level, chunk] = bytes(data)
        return data

    def get_entries(self, start: int, end: int) -> list[StoredEntry]:
        with self._read() as txn:
            raw = txn.get(b"size", db=self._meta)
            size = unpack_u64(raw)[0] if raw else 0
            if start < 0 or end < start or end > size:
                raise NotFoundError(f"entries [{start}, {end}) not in a log of {size}")
            out = []
            if end > start:
                with txn.cursor(db=self._entries) as cur:
                    if not cur.set_key(pack_u64(start)):
                        raise StorageCorruptError(f"entry {start} is missing")
                    for index in range(start, end):
                        key, value = cur.item()
                        if key != pack_u64(index):
                            raise StorageCorruptError(f"entry {index} is missing")
                        out.append(parse_entry(index, bytes(value)))
                        cur.next()
            return out

    def get_leaves(self, start: int, end: int) -> list[bytes] | None:
        # The entry-bundle path: leaves only, no StoredEntry per entry. A compact record's
        # leaf is rebuilt from its salt and payload (one hash), so a payload corrupted on disk
        # changes the leaf and the caller's leaf-hash check catches it.
        with self._read() as txn:
            raw = txn.get(b"size", db=self._meta)
            size = unpack_u64(raw)[0] if raw else 0
            if start < 0 or end < start or end > size:
                raise NotFoundError(f"entries [{start}, {end}) not in a log of {size}")
            out: list[bytes] = []
            if end == start:
                return out
            sha = _sha256
            committed = KIND_COMMITTED_BYTE
            with txn.cursor(db=self._entries) as cur:
                if not cur.set_key(pack_u64(start)):
                    raise StorageCorruptError(f"entry {start} is missing")
                values = cast(Iterator[bytes], cur.iternext(keys=False))  # buffers=False
                records = list(itertools.islice(values, end - start))
                # Keys are distinct and sorted: the first is start, so the records are exactly
                # [start, end) when there are end - start of them and the last one is end - 1.
                if len(records) != end - start or cur.key() != pack_u64(end - 1):
                    raise StorageCorruptError(f"an entry in [{start}, {end}) is missing")
            for value in records:
                if len(value) >= COMMITTED_LEAF:
                    kind = value[9]
                    if kind == COMPACT:
                        value = value[:9] + committed + sha(value[10:]).digest()
                    elif kind == 1 and len(value) > COMMITTED_LEAF:
                        return None  # the older layout keeps the payload beside the leaf
                out.append(value)
            return out

    def lookup_dedupe(self, key: bytes) -> int | None:
        with self._read() as txn:
            raw = txn.get(key, db=self._dedupe)
        return None if raw is None else int(unpack_u64(raw)[0])

    def lookup_dedupe_many(self, keys: Sequence[bytes]) -> list[int | None]:
        db = self._dedupe
        with self._read() as txn:
            raws = [txn.get(key, db=db) for key in keys]
        return [None if raw is None else int(unpack_u64(raw)[0]) for raw in raws]

    @contextlib.contextmanager
    def index_reader(self) -> Iterator[_LMDBIndexReader]:
        with self._read() as txn, txn.cursor(db=self._index_db) as cur:
            yield _LMDBIndexReader(cur)


class _LMDBIndexReader:
    """Seeks over the ``index`` sub-database inside one read transaction."""

    def __init__(self, cursor: lmdb.Cursor) -> None:
        self._cur = cursor

    def get(self, key: bytes) -> bytes | None:
        cur = self._cur
        return bytes(cur.value()) if cur.set_key(key) else None

    def seek(self, key: bytes) -> tuple[bytes, bytes] | None:
        cur = self._cur
        if not cur.set_range(key):
            return None
        return bytes(cur.key()), bytes(cur.value())

    def seek_before(self, key: bytes) -> tuple[bytes, bytes] | None:
        cur = self._cur
        found = cur.prev() if cur.set_range(key) else cur.last()
        if not found:
            return None
        return bytes(cur.key()), bytes(cur.value())
