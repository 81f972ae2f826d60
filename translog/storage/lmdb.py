"""The LMDB backend: one environment per log, named sub-databases, one writer thread.

Layout (all integers big-endian, so keys sort in append order and every append uses
``MDB_APPEND``, which fills B-tree pages completely):

========================  ==========================  ==========================================
sub-database              key                         value
========================  ==========================  ==========================================
``meta``                  ``size``, ``ts``, ...       u64 tree size; u64 last timestamp (ms);
                                                      ``latest`` = u64 size || u64 ts || note;
                                                      ``rewrite`` || u64 tile = u64 generation:
                                                      tiles whose published payload bundles
                                                      must be rewritten after an erasure
``entries``               u64 index                   an entry record (below)
``h00`` ``h02`` … ``h62``  u64 chunk number            62 consecutive hashes (1,984 bytes) of
                                                      tree level 0, 2, 4, … (even levels only)
``tail``                  u8 level                    the hashes of that level past its last
                                                      full chunk (rewritten by every batch)
``dedupe``                16-byte key digest          u64 index
``leafidx``               u32 run id || u64 item      sorted runs of the leaf-hash index (see
                                                      ``translog.storage.leafindex``) written by
                                                      batches
``leafbig``               u32 run id || u64 item      runs built by the background merger
``checkpoints``           u64 size                    u64 ts || signed note (first per size)
``promised``              u64 promise sequence        u8 key length || key || entry value
                                                      (accepted with ?wait=0, not yet sequenced)
``index``                 tag byte || ...             secondary indexes of audit events
                                                      (translog/log/event_index.py owns the keys)
========================  ==========================  ==========================================

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

Why this shape (see docs/ARCHITECTURE.md and benchmarks/RESULTS.md for the figures):

* Hashes are stored in chunks of 62, because two 1,984-byte values fill a 4 KiB page with no
  overflow pages, so a stored hash costs about 33 bytes on disk rather than ~50 as a record of
  its own.
* Only even levels are stored. An odd-level node is ``node_hash`` of its two children, which
  sit next to each other in one chunk of the level below: one extra SHA-256 per odd level in a
  proof, in exchange for about a third less hash storage.
* Only full chunks go into the ``hNN`` trees, with ``MDB_APPEND``; the partial chunk of each
  level lives in ``tail`` and is rewritten each batch. Growing a record in place would split
  pages in the middle and leave them half empty.

Every write transaction runs on the caller's thread (the sequencer's single writer thread)
and is committed with ``fsync`` before ``append`` returns. Read transactions are short and never
cross an ``await`` or a thread. The map grows by doubling when full, up to ``max_map_size``;
resizing waits until no read transaction is open in this process.

**The merger.** Merges of the leaf-hash index larger than ``inline_merge_max`` items run on a
thread of their own, started by the first ``append`` that leaves one due: it reads the input
runs in short read transactions, slice by slice, and writes the merged run in write
transactions of at most ``leafindex.WRITE_ITEMS`` items, then installs it (see
``translog.storage.leafindex``). Every write transaction, the merger's included, holds one
lock with the in-memory index state (``_runs``, ``_next_rid``) and map growth, so the
sequencer waits at most for one such short transaction. While a merge runs, batches only merge
the runs after its inputs. ``close`` stops the merger between two slices; an unfinished merged
run is deleted when the store is next opened writable, and the merge is redone later.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import operator
import os
import struct
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import lmdb

from translog.core.merkle import NodeLevels
from translog.core.tiles import TILE_WIDTH
from translog.errors import NotFoundError, StorageCorruptError, StorageError, StorageFullError
from translog.storage import leafindex
from translog.storage.base import (
    EntryColumns,
    NewEntry,
    PromisedEntry,
    StoredCheckpoint,
    StoredEntry,
    WriteBatch,
)

CHUNK = 62
"""Hashes per stored chunk: two chunk records fill one 4 KiB LMDB leaf page."""
_CHUNK_BYTES = CHUNK * 32
_MAX_LEVEL = 64
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")
_REWRITE = b"rewrite"
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
_COMMITTED_LEAF = 42  # translog leaf v1, kind 1: 1 + 8 + 1 + 32
_COMPACT = 0x81
"""Kind byte of a committed record that stores salt || payload instead of the commitment."""
_COMPACT_BYTE = bytes([_COMPACT])
_HEAD = slice(9)
"""A leaf's version and timestamp: the first bytes of a compact record."""
_slice = cast(Callable[[bytes, slice], bytes], operator.getitem)
_KIND_COMMITTED_BYTE = b"\x01"

_pack = _U64.pack
_sha256 = hashlib.sha256
_NODE_PREFIX = b"\x01"  # RFC 6962 interior node: SHA-256(0x01 || left || right)
_unpack = _U64.unpack
_Buffer = bytes | memoryview
_CATCH_UP = 1 << 20
"""Entries per run when the leaf-hash index is built from stored hashes at open."""
log = logging.getLogger("translog.storage")
_MERGE_BACKOFF_MAX = 30.0
"""Seconds between attempts of a merger that keeps failing (a full disk, say)."""
_MERGER_LOCK = "merger.lock"
"""Held (``flock``) by the one writable open that may merge in the background and reclaim
spare runs: another writable open of the same store (``translog fsck`` or a maintenance
command next to a running server) must not delete the run a live merger is building."""


def _try_lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path`` (created 0600), or None when another open holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.warning("couldn't lock %s (%s): leaf-hash index merges stay inline", path, e)
        return None
    return fd


class _Stopped(Exception):
    """The merger was asked to stop (``close``)."""


_MERGING: weakref.WeakSet[LMDBStorage] = weakref.WeakSet()
"""Storages whose merger thread runs: stopped at interpreter exit if nobody closed them, so
the (daemon) thread is never inside LMDB while the environment goes away."""


@atexit.register
def _stop_mergers() -> None:
    for storage in list(_MERGING):
        storage._stop_merger()


def _record(e: NewEntry) -> bytes:
    """The ``entries`` record of a new entry (see the module docstring)."""
    if e.salt is None:
        return e.leaf
    return e.leaf[:9] + _COMPACT_BYTE + e.salt + (e.payload or b"")


def _records(entries: Sequence[NewEntry]) -> list[bytes]:
    """The ``entries`` records of a batch, in order (:func:`_record` of each entry)."""
    if not isinstance(entries, EntryColumns):
        return list(map(_record, entries))
    leaves, salts, payloads = entries.leaves, entries.salts, entries.payloads
    if None in salts or None in payloads:
        return list(map(_record, entries))
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


def _even_levels(batch: WriteBatch, new_size: int) -> dict[int, Sequence[bytes]]:
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


def _parse_entry(index: int, value: bytes) -> StoredEntry:
    if len(value) >= _COMMITTED_LEAF:
        kind = value[9]
        if kind == _COMPACT:
            body = value[10:]
            leaf = value[:9] + _KIND_COMMITTED_BYTE + _sha256(body).digest()
            return StoredEntry(index, leaf, body[:32], body[32:])
        if kind == 1 and len(value) > _COMMITTED_LEAF:  # the layout before the compact record
            rest = value[_COMMITTED_LEAF:]
            return StoredEntry(index, value[:_COMMITTED_LEAF], rest[:32], rest[32:])
    return StoredEntry(index, value)


class _Gate:
    """Readers share the map; a resize waits until no reader is inside.

    ``enter``/``leave`` are plain methods (no generator-based context manager) because every
    proof passes through them: they cost about a tenth of what the context managers did.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._resizing = False

    def enter(self) -> None:
        """Register a reader, waiting while a resize is in progress."""
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1

    def leave(self) -> None:
        """Unregister a reader; wake a waiting resize when it was the last one."""
        with self._cond:
            self._readers -= 1
            if self._readers == 0 and self._resizing:
                self._cond.notify_all()

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


def _map_error(action: str, e: lmdb.Error, path: Path | None = None, need: int = 0) -> StorageError:
    text = str(e)
    if isinstance(e, lmdb.MapFullError):
        return StorageFullError(f"couldn't {action}: the LMDB map is at its size limit")
    if "No space left" in text or getattr(e, "errno", None) == errno.ENOSPC:
        return StorageFullError(f"couldn't {action}: no space left on device")
    if path is not None and "Input/output error" in text and _disk_free(path) < need:
        # LMDB reports a short write (the file system filled up mid-commit) as EIO. The
        # commit wrote no meta page, so the environment still holds the previous state.
        return StorageFullError(f"couldn't {action}: no space left on device")
    if isinstance(e, lmdb.CorruptedError | lmdb.PageNotFoundError | lmdb.InvalidError):
        return StorageCorruptError(f"couldn't {action}: LMDB reports corruption: {text}")
    return StorageError(f"couldn't {action}: {text}")


def _disk_free(path: Path) -> int:
    """Bytes available to this process on the file system holding ``path``."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class LMDBStorage:
    """The production :class:`~translog.storage.base.Storage` backend."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = 1 << 30,
        max_map_size: int = 0,
        index_leaf_hashes: bool = True,
        readonly: bool = False,
        inline_merge_max: int = leafindex.INLINE_MAX,
    ) -> None:
        """Open (creating if needed) the environment in directory ``path``.

        ``max_map_size`` of 0 means no limit; otherwise growth stops there and appends fail
        with ``StorageFullError``. Leaf-hash index merges of more than ``inline_merge_max``
        items run on the background merger instead of inside ``append``. A writable open
        deletes the blocks of spare runs (an unfinished merge) first. Only one open of a
        store merges in the background (``merger.lock`` in ``path``); any other writable open
        leaves spare runs alone and merges inline.
        """
        self.path = Path(path)
        self._max_map_size = max_map_size
        self._index_leaf_hashes = index_leaf_hashes
        self._gate = _Gate()
        # Complete nodes never change, so their hashes can be cached across transactions.
        self._nodes: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._chunk_cache: collections.OrderedDict[tuple[int, int], bytes] = (
            collections.OrderedDict()
        )
        self._closed = False
        # Every write transaction and the index state below: the sequencer and the merger.
        self._wlock = threading.RLock()
        self._inline_max = max(0, inline_merge_max)
        self._frozen = 0
        """Runs ``[0, _frozen)`` are left alone by batches (the merger's inputs end there)."""
        self._building: int | None = None
        self._merger: threading.Thread | None = None
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._wanted = self._done = self._failed = 0
        """Merge requests made, served, and the last one whose attempt failed."""
        self._merge_error: BaseException | None = None
        self._merge_hook: Callable[[str], None] | None = None
        """Tests: called by the merger at "start", "slice", "chunk", "install", "collect"."""
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        self._readonly = readonly
        self._open_env(map_size)
        self._size, self._ts, self._tail = self._load_state()
        self._runs, self._next_rid, self._spare = self._load_index()
        # The parsed index directory of the last snapshot seen, as one tuple (thread-safe).
        self._dir: tuple[bytes, bytes, tuple[leafindex.Run, ...]] = (b"", b"", ())
        self._merger_lock = None if readonly else _try_lock(self.path / _MERGER_LOCK)
        if self._merger_lock is None:
            # Another open of this store owns the merger (or this one is read-only): leave
            # spare runs alone, and merge inline as before if this open ever appends.
            self._inline_max = leafindex.MAX_RUN
        try:
            if self._merger_lock is not None:
                while self._collect():
                    pass
            if not readonly:
                self._upgrade_index()
        except BaseException:
            self.close()
            raise

    def _open_env(self, map_size: int) -> None:
        readonly = self._readonly
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=_MAX_LEVEL // 2 + 12,
                subdir=True,
                sync=True,
                metasync=True,
                readahead=False,
                max_readers=512,
                readonly=readonly,
                create=not readonly,
            )
        except lmdb.Error as e:
            raise _map_error(f"open LMDB environment {self.path}", e) from e
        create = not readonly
        try:
            self._meta = self._env.open_db(b"meta", create=create)
            self._entries = self._env.open_db(b"entries", create=create)
            self._tail_db = self._env.open_db(b"tail", create=create)
            self._dedupe = self._env.open_db(b"dedupe", create=create)
            self._leafidx = self._open_optional(b"leafidx", create)
            self._leafbig = self._open_optional(b"leafbig", create)
            self._history = self._env.open_db(b"checkpoints", create=create)
            self._promised_db = self._env.open_db(b"promised", create=create)
            self._index_db = self._env.open_db(b"index", create=create)
            self._levels = [
                self._env.open_db(b"h%02d" % level, create=create)
                for level in range(0, _MAX_LEVEL, 2)
            ]
        except lmdb.Error as e:
            self._env.close()
            raise _map_error(f"open sub-databases in {self.path}", e) from e

    def _open_optional(self, name: bytes, create: bool) -> Any:
        """A sub-database that a read-only open of an older store may lack (None then)."""
        try:
            return self._env.open_db(name, create=create)
        except lmdb.NotFoundError:
            return None

    # -- state -------------------------------------------------------------------------

    def _load_index(self) -> tuple[tuple[leafindex.Run, ...], int, tuple[int, ...]]:
        with self._env.begin() as txn:
            raw = txn.get(leafindex.META_RUNS, db=self._meta)
            nxt = txn.get(leafindex.META_NEXT, db=self._meta)
            big = txn.get(leafindex.META_BIG, db=self._meta)
            spare = txn.get(leafindex.META_SPARE, db=self._meta)
        try:
            runs = leafindex.decode_runs(raw, big)
            spares = leafindex.decode_ids(spare)
        except ValueError as e:
            raise StorageCorruptError(str(e)) from e
        if runs and runs[-1].hi > self._size:
            raise StorageCorruptError(
                f"the leaf-hash index covers {runs[-1].hi} entries but the log has {self._size}"
            )
        return runs, (_unpack(nxt)[0] if nxt else 0), spares

    def _put_index(
        self, txn: lmdb.Transaction, runs: tuple[leafindex.Run, ...], nxt: int, big: bool = True
    ) -> None:
        """Store the index directory: the runs, the next id, and (``big``) which runs are big."""
        txn.put(leafindex.META_RUNS, leafindex.encode_runs(runs), db=self._meta)
        txn.put(leafindex.META_NEXT, _pack(nxt), db=self._meta)
        if big:
            ids = leafindex.encode_ids([r.rid for r in runs if r.big])
            if ids:
                txn.put(leafindex.META_BIG, ids, db=self._meta)
            else:
                txn.delete(leafindex.META_BIG, db=self._meta)

    def _put_spare(self, txn: lmdb.Transaction, spare: Sequence[int]) -> None:
        if spare:
            txn.put(leafindex.META_SPARE, leafindex.encode_ids(spare), db=self._meta)
        else:
            txn.delete(leafindex.META_SPARE, db=self._meta)

    def _upgrade_index(self) -> None:
        """Drop the pre-LSM ``byhash`` index; index what is not indexed yet (if enabled)."""
        legacy = self._open_optional(b"byhash", False)
        if legacy is not None:
            log.warning("dropping the old leaf-hash index (byhash); rebuilding it as runs")

            def drop(txn: lmdb.Transaction) -> None:
                txn.drop(legacy, delete=True)

            self._write("drop the old leaf-hash index", drop)
        upto = self._runs[-1].hi if self._runs else 0
        if not self._index_leaf_hashes or upto >= self._size:
            return
        log.warning("indexing leaf hashes of entries %d to %d", upto, self._size)
        while upto < self._size:
            end = min(self._size, upto + _CATCH_UP)
            hashes = self.read_hashes([(0, i) for i in range(upto, end)])
            self._index_write(upto, leafindex.new_run_items(hashes), f"index entries {upto}")
            upto = end

    def _index_write(self, lo: int, items: Any, action: str) -> None:
        with self._wlock:
            runs, nxt = self._runs, self._next_rid
            take = self._take(len(items))

            def fn(txn: lmdb.Transaction) -> tuple[tuple[leafindex.Run, ...], int]:
                return self._add_run(txn, runs, nxt, lo, items, take)

            estimate = self._index_estimate(len(items), take)
            self._runs, self._next_rid = self._write(action, fn, estimate)
        self._merge_if_due()

    def _take(self, new: int) -> int:
        """How many trailing runs (with the new one) a new run of ``new`` items is merged with
        inline: only runs after the merger's inputs, only up to ``inline_merge_max`` items."""
        sizes = [r.size for r in self._runs[self._frozen :]]
        return leafindex.plan([*sizes, new], self._inline_max)

    def _add_run(
        self,
        txn: lmdb.Transaction,
        runs: tuple[leafindex.Run, ...],
        nxt: int,
        lo: int,
        items: Any,
        take: int,
    ) -> tuple[tuple[leafindex.Run, ...], int]:
        dbs = (self._leafidx, self._leafbig)
        big = any(r.big for r in runs[len(runs) - take + 1 :])  # an inline merge took a big run
        runs, nxt = leafindex.add_run(txn, dbs, runs, nxt, lo, items, take)
        self._put_index(txn, runs, nxt, big)
        return runs, nxt

    def _index_estimate(self, new: int, take: int) -> int:
        """Bytes a run of ``new`` items may write, with the runs it is merged with."""
        merged = sum(r.size for r in self._runs[len(self._runs) - take + 1 :])
        return 9 * (new + merged) + 8192

    def _load_state(self) -> tuple[int, int, dict[int, bytes]]:
        with self._env.begin() as txn:
            raw = txn.get(b"size", db=self._meta)
            size = _unpack(raw)[0] if raw else 0
            raw = txn.get(b"ts", db=self._meta)
            ts = _unpack(raw)[0] if raw else 0
            tail = {k[0]: bytes(v) for k, v in txn.cursor(db=self._tail_db)}
        for level, data in tail.items():
            want = ((size >> level) % CHUNK) * 32
            if level % 2 or len(data) != want:
                raise StorageCorruptError(
                    f"tail of level {level} holds {len(data)} bytes, expected {want} "
                    f"for size {size}"
                )
        return size, ts, tail

    def size(self) -> int:
        return self._size

    def last_timestamp(self) -> int:
        return self._ts

    # -- writes ------------------------------------------------------------------------

    def _write(self, action: str, fn: Any, estimate: int = 0) -> Any:
        """Run ``fn(txn)`` in one durable write transaction.

        The map is grown *before* the transaction when ``estimate`` bytes might not fit:
        growing after an in-transaction ``MapFullError`` while other threads hold read
        transactions hung the next write transaction (py-lmdb 3.0), so that path is avoided.
        A batch that cannot fit under ``max_map_size`` is refused before LMDB is touched.
        """
        with self._wlock:
            self._reserve(action, estimate)
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.Error as e:
                need = 3 * estimate + (1 << 20)
                raise _map_error(action, e, self.path, need) from e

    def _reserve(self, action: str, estimate: int) -> None:
        info = self._env.info()
        psize = self._env.stat()["psize"]
        used = (info["last_pgno"] + 1) * psize
        # Copy-on-write touches a root-to-leaf path per sub-database, and pages freed while
        # readers pin old snapshots cannot be reused yet: keep a generous margin (smaller
        # under a tight cap, so small capped maps stay usable).
        margin = 256 * psize
        if self._max_map_size:
            margin = max(16 * psize, min(margin, self._max_map_size // 8))
        need = used + 3 * estimate + margin
        current = info["map_size"]
        if need <= current:
            return
        new = current
        while new < need:
            new *= 2
        if self._max_map_size and new > self._max_map_size:
            if need > self._max_map_size:
                raise StorageFullError(
                    f"couldn't {action}: the LMDB map limit of {self._max_map_size} bytes "
                    f"is reached ({used} bytes used)"
                )
            new = self._max_map_size
        with self._gate.exclusive():
            self._env.set_mapsize(new)

    def append(self, batch: WriteBatch) -> None:
        if self._closed:
            raise StorageError("storage is closed")
        if batch.start != self._size:
            raise StorageCorruptError(f"append at {batch.start} but the log has {self._size}")
        if batch.timestamp_ms < self._ts:
            raise StorageCorruptError(
                f"timestamp went backwards: {batch.timestamp_ms} < {self._ts}"
            )
        new_size = batch.start + len(batch.entries)
        by_level = _even_levels(batch, new_size)
        # Built once, outside the transaction: the values are the bulk of the batch, and their
        # lengths give the map-growth estimate without another pass over the entries.
        blobs = _records(batch.entries)
        items = list(zip(map(_pack, range(batch.start, new_size)), blobs, strict=True))
        index = self._index_leaf_hashes and new_size > batch.start
        run = leafindex.new_run_items(by_level[0]) if index else None
        with self._wlock:
            self._append(batch, new_size, by_level, blobs, items, run)
        if run is not None:
            self._merge_if_due()

    def _append(
        self,
        batch: WriteBatch,
        new_size: int,
        by_level: dict[int, Sequence[bytes]],
        blobs: list[bytes],
        items: list[tuple[bytes, bytes]],
        run: array[int] | None,
    ) -> None:
        """The write transaction of :meth:`append` (under ``_wlock``: the index state)."""
        runs, nxt = self._runs, self._next_rid
        if run is not None and (runs[-1].hi if runs else 0) != batch.start:
            raise StorageCorruptError(f"the leaf-hash index does not reach {batch.start}")
        take = self._take(len(run)) if run is not None else 1

        def fn(
            txn: lmdb.Transaction,
        ) -> tuple[dict[int, bytes], tuple[leafindex.Run, ...], int]:
            # Pure with respect to self: a MapFullError retry runs it again from scratch.
            new_tail = dict(self._tail)
            with txn.cursor(db=self._entries) as cur:
                cur.putmulti(items, append=True)
            for level, values in by_level.items():
                data = new_tail.get(level, b"") + b"".join(values)
                chunk0 = (batch.start >> level) // CHUNK
                full = len(data) // _CHUNK_BYTES
                if full:
                    chunks = [
                        (_pack(chunk0 + k), data[k * _CHUNK_BYTES : (k + 1) * _CHUNK_BYTES])
                        for k in range(full)
                    ]
                    with txn.cursor(db=self._levels[level >> 1]) as cur:
                        cur.putmulti(chunks, append=True)
                rest = data[full * _CHUNK_BYTES :]
                new_tail[level] = rest
                txn.put(bytes([level]), rest, db=self._tail_db)
            new_runs, new_nxt = runs, nxt
            if run is not None:
                new_runs, new_nxt = self._add_run(txn, runs, nxt, batch.start, run, take)
            for key, index in batch.dedupe.items():
                txn.put(key, _pack(index), db=self._dedupe)
            for seq in batch.promised_done:
                txn.delete(_pack(seq), db=self._promised_db)
            if batch.index_puts:
                with txn.cursor(db=self._index_db) as cur:
                    cur.putmulti(sorted(batch.index_puts))
            txn.put(b"size", _pack(new_size), db=self._meta)
            txn.put(b"ts", _pack(batch.timestamp_ms), db=self._meta)
            return new_tail, new_runs, new_nxt

        estimate = 40 * len(batch.nodes) + 24 * len(blobs) + sum(map(len, blobs))
        estimate += sum(len(k) + len(v) + 16 for k, v in batch.index_puts)
        if run is not None:
            estimate += self._index_estimate(len(run), take)
        action = f"append {len(batch.entries)} entries at {batch.start}"
        self._tail, self._runs, self._next_rid = self._write(action, fn, estimate)
        self._size = new_size
        self._ts = batch.timestamp_ms

    # -- the background merger of the leaf-hash index -------------------------------------

    def _merge_if_due(self) -> None:
        """Wake (or start) the merger when the index owes a merge or holds spare runs."""
        if self._merger_lock is None or self._closed or self._leafbig is None:
            return
        with self._wlock:
            if self._building is not None:
                return  # the merger looks again when this merge is installed
            if not self._spare and leafindex.due([r.size for r in self._runs]) is None:
                return
        self._kick()

    def _kick(self) -> None:
        with self._cond:
            if self._stopping:
                return
            self._wanted += 1
            if self._merger is None:
                self._merger = threading.Thread(
                    target=self._merger_main, name="tl-leafidx-merger", daemon=True
                )
                self._merger.start()
                _MERGING.add(self)
            self._cond.notify_all()

    def wait_for_merges(self, timeout: float | None = None) -> bool:
        """Block until the merger has done every merge due and deleted every spare run.

        Returns False when ``timeout`` seconds pass first; raises ``StorageError`` when the
        merger's attempt failed (it retries later). For benchmarks and tests.
        """
        if self._merger_lock is None or self._closed or self._leafbig is None:
            return True
        self._kick()
        with self._cond:
            target = self._wanted

            def settled() -> bool:
                return self._done >= target or self._failed >= target or self._stopping

            self._cond.wait_for(settled, timeout)
            if self._done < target and self._failed >= target:
                error = self._merge_error
                raise StorageError(f"the leaf-hash index merger failed: {error}") from error
            return self._done >= target

    def _merger_main(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while not self._stopping and self._done >= self._wanted:
                    self._cond.wait()
                if self._stopping:
                    return
                target = self._wanted
            try:
                while self._merge_step():
                    pass
            except _Stopped:
                return
            except Exception as e:  # a failed merge is retried later, never fatal
                if self._stopping:
                    return
                backoff = min(_MERGE_BACKOFF_MAX, max(1.0, 2 * backoff))
                log.warning(
                    "leaf-hash index merge failed, retrying in %.0f s: %s",
                    backoff,
                    e,
                    exc_info=not isinstance(e, StorageError),
                )
                with self._cond:
                    self._merge_error, self._failed = e, target
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._stopping, backoff)
                continue
            backoff = 0.0
            with self._cond:
                self._done = target
                self._cond.notify_all()

    def _step(self, stage: str) -> None:
        """A point where the merger may stop (and where tests hook in)."""
        if self._stopping:
            raise _Stopped
        hook = self._merge_hook
        if hook is not None:
            hook(stage)
            if self._stopping:
                raise _Stopped

    def _merge_step(self) -> bool:
        """Delete some spare blocks, or do the oldest due merge; False when nothing is left."""
        self._step("collect")
        if self._collect():
            return True
        with self._wlock:
            job = leafindex.due([r.size for r in self._runs])
            if job is None:
                return False
            i, j = job
            inputs = self._runs[i:j]
            rid = self._next_rid
            self._next_rid += 1
            self._frozen, self._building = j, rid
        try:
            self._build(leafindex.Run(rid, inputs[0].lo, inputs[-1].hi, True), inputs)
        finally:
            with self._wlock:
                self._frozen, self._building = 0, None
        return True

    def _build(self, run: leafindex.Run, inputs: tuple[leafindex.Run, ...]) -> None:
        """Merge ``inputs`` into ``run`` (in ``leafbig``) and install it."""
        self._step("start")
        started = time.perf_counter()
        pending = array("Q")
        first = True
        step = leafindex.ITEMS_PER_BLOCK
        for piece in leafindex.merge_stream(self._read_ranges, inputs, leafindex.MERGE_SLICE):
            self._step("slice")
            pending.extend(piece)
            if len(pending) >= leafindex.WRITE_ITEMS:
                n = len(pending) - len(pending) % step
                self._merge_write(run, pending[:n], first, ())
                first = False
                del pending[:n]
                self._step("chunk")
        self._merge_write(run, pending, first, inputs)
        log.info(
            "leaf-hash index: merged %d runs into run %d of %d items in %.2f s",
            len(inputs),
            run.rid,
            run.size,
            time.perf_counter() - started,
        )
        self._step("install")

    def _read_ranges(self, runs: Sequence[leafindex.Run], low: int, high: int) -> list[array[int]]:
        dbs = (self._leafidx, self._leafbig)
        with self._read() as txn:
            return [leafindex.read_range(txn, dbs[r.big], r, low, high) for r in runs]

    def _merge_write(
        self,
        run: leafindex.Run,
        items: array[int],
        first: bool,
        inputs: tuple[leafindex.Run, ...],
    ) -> None:
        """Write blocks of ``run``; the first write makes its id spare, and a write with
        ``inputs`` installs it: lists it in their place and makes them spare."""
        records = leafindex.blocks(run.rid, items)

        def fn(txn: lmdb.Transaction) -> tuple[tuple[leafindex.Run, ...], tuple[int, ...]]:
            runs, spare = self._runs, self._spare
            if first:
                spare = (*spare, run.rid)
            if records:
                with txn.cursor(db=self._leafbig) as cur:
                    _, added = cur.putmulti(records, append=True)
                if added != len(records):
                    raise StorageCorruptError(f"leaf-hash index run {run.rid} is out of order")
            if inputs:
                at = runs.index(inputs[0]) if inputs[0] in runs else -1
                if at < 0 or runs[at : at + len(inputs)] != inputs:
                    raise StorageCorruptError("the inputs of a leaf-hash index merge changed")
                runs = (*runs[:at], run, *runs[at + len(inputs) :])
                spare = (*(r for r in spare if r != run.rid), *(r.rid for r in inputs))
                self._put_index(txn, runs, self._next_rid)
            elif first:
                txn.put(leafindex.META_NEXT, _pack(self._next_rid), db=self._meta)
            if first or inputs:
                self._put_spare(txn, spare)
            return runs, spare

        estimate = len(records) * (leafindex.BLOCK_BYTES + 64) + 4096
        action = f"write leaf-hash index run {run.rid}"
        with self._wlock:
            self._runs, self._spare = self._write(action, fn, estimate)

    def _collect(self) -> bool:
        """Delete blocks of spare runs (not the one being built), at most
        ``leafindex.COLLECT_BLOCKS`` in one transaction, unlisting each run once none of its
        blocks is left. False when there is nothing to delete."""
        with self._wlock:
            garbage = [r for r in self._spare if r != self._building]
            if not garbage:
                return False

            def fn(txn: lmdb.Transaction) -> tuple[int, ...]:
                budget = leafindex.COLLECT_BLOCKS
                dbs = [db for db in (self._leafidx, self._leafbig) if db is not None]
                gone = set()
                for rid in garbage:
                    for db in dbs:
                        budget -= leafindex.delete_run(txn, db, rid, budget)
                    if budget <= 0:
                        break
                    gone.add(rid)
                spare = tuple(r for r in self._spare if r not in gone)
                if gone:
                    self._put_spare(txn, spare)
                return spare

            action = f"delete spare leaf-hash index runs {garbage}"
            self._spare = self._write(action, fn, 1 << 16)
        return True

    def put_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        latest = self.latest_checkpoint()
        if latest is not None and checkpoint.size < latest.size:
            raise StorageCorruptError(
                f"checkpoint size went backwards: {checkpoint.size} < {latest.size}"
            )
        key = _pack(checkpoint.size)
        value = _pack(checkpoint.timestamp_ms) + checkpoint.note

        def fn(txn: lmdb.Transaction) -> None:
            txn.put(key, value, db=self._history, overwrite=False)
            txn.put(b"latest", key + value, db=self._meta)

        self._write(f"store checkpoint of size {checkpoint.size}", fn, len(value) + 64)

    def put_promised(self, items: Sequence[PromisedEntry]) -> None:
        values = []
        for item in items:
            key = item.key or b""
            values.append((_pack(item.seq), bytes([len(key)]) + key + _record(item.entry)))

        def fn(txn: lmdb.Transaction) -> None:
            for k, v in values:
                txn.put(k, v, db=self._promised_db)

        estimate = sum(len(v) + 32 for _, v in values)
        self._write(f"record {len(values)} promised entries", fn, estimate)

    def promised(self) -> list[PromisedEntry]:
        with self._read() as txn, txn.cursor(db=self._promised_db) as cur:
            raw = [(bytes(k), bytes(v)) for k, v in cur]
        out = []
        for k, v in raw:
            n = v[0]
            stored = _parse_entry(0, v[1 + n :])
            entry = NewEntry(stored.leaf, stored.salt, stored.payload)
            out.append(PromisedEntry(_unpack(k)[0], v[1 : 1 + n] or None, entry))
        return out

    def erase_payload(self, index: int) -> bool:
        entry = self.get_entries(index, index + 1)[0]
        if entry.salt is None:
            return False

        def fn(txn: lmdb.Transaction) -> None:
            txn.put(_pack(index), entry.leaf, db=self._entries)
            self._queue_rewrite(txn, index)

        self._write(f"erase the payload of entry {index}", fn, len(entry.leaf) + 64)
        return True

    def index_write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        *,
        clear_prefix: bytes | None = None,
        erase: Sequence[int] = (),
    ) -> int:
        if self._closed:
            raise StorageError("storage is closed")
        ordered = sorted(puts)

        def fn(txn: lmdb.Transaction) -> int:
            erased = 0
            for index in erase:
                key = _pack(index)
                raw = txn.get(key, db=self._entries)
                if raw is None or index >= self._size:
                    raise NotFoundError(f"entry {index} is not in the log")
                entry = _parse_entry(index, bytes(raw))
                if entry.salt is not None:
                    txn.put(key, entry.leaf, db=self._entries)
                    self._queue_rewrite(txn, index)
                    erased += 1
            with txn.cursor(db=self._index_db) as cur:
                if clear_prefix is not None and cur.set_range(clear_prefix):
                    while cur.key()[: len(clear_prefix)] == clear_prefix:
                        if not cur.delete():
                            break
                for key in deletes:
                    if cur.set_key(key):
                        cur.delete()
                if ordered:
                    cur.putmulti(ordered)
            return erased

        estimate = sum(len(k) + len(v) + 16 for k, v in ordered) + 64 * len(erase)
        return int(self._write(f"update {len(ordered)} index records", fn, estimate))

    def _queue_rewrite(self, txn: lmdb.Transaction, index: int) -> None:
        key = _REWRITE + _pack(index // TILE_WIDTH)
        raw = txn.get(key, db=self._meta)
        txn.put(key, _pack((_unpack(bytes(raw))[0] if raw else 0) + 1), db=self._meta)

    def pending_rewrites(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        with self._read() as txn, txn.cursor(db=self._meta) as cur:
            if cur.set_range(_REWRITE):
                for k, v in cur:
                    if not bytes(k).startswith(_REWRITE):
                        break
                    out.append((_unpack(bytes(k)[len(_REWRITE) :])[0], _unpack(bytes(v))[0]))
        return out

    def rewrite_done(self, tile: int, generation: int) -> None:
        key = _REWRITE + _pack(tile)

        def fn(txn: lmdb.Transaction) -> None:
            raw = txn.get(key, db=self._meta)
            if raw is not None and _unpack(bytes(raw))[0] == generation:
                txn.delete(key, db=self._meta)

        self._write(f"mark the payloads of tile {tile} rewritten", fn, 64)

    @contextlib.contextmanager
    def index_reader(self) -> Iterator[_LMDBIndexReader]:
        with self._read() as txn, txn.cursor(db=self._index_db) as cur:
            yield _LMDBIndexReader(cur)

    # -- reads -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        if self._closed:
            raise StorageError("storage is closed")
        with self._gate.read():
            try:
                with self._env.begin(buffers=False) as txn:
                    yield txn
            except lmdb.Error as e:
                raise _map_error("read", e) from e

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        # The hot path of every proof: _read() spelled out without context managers.
        if self._closed:
            raise StorageError("storage is closed")
        self._gate.enter()
        try:
            with self._env.begin(buffers=True) as txn:
                return self._read_hashes(txn, nodes)
        except lmdb.Error as e:
            raise _map_error("read", e) from e
        finally:
            self._gate.leave()

    def _read_hashes(self, txn: lmdb.Transaction, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Resolve ``nodes`` in one read transaction (see :meth:`read_hashes`).

        The transaction has ``buffers=True``: chunks are views into the map, valid only until
        it ends, so every hash that leaves here is a copy (``bytes``) or a fresh digest.
        """
        raw = txn.get(b"size", db=self._meta)
        size = _unpack(raw)[0] if raw else 0
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
        data = txn.get(_pack(chunk), db=self._levels[level >> 1])
        if data is None or len(data) != _CHUNK_BYTES:
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
            size = _unpack(raw)[0] if raw else 0
            if start < 0 or end < start or end > size:
                raise NotFoundError(f"entries [{start}, {end}) not in a log of {size}")
            out = []
            if end > start:
                with txn.cursor(db=self._entries) as cur:
                    if not cur.set_key(_pack(start)):
                        raise StorageCorruptError(f"entry {start} is missing")
                    for index in range(start, end):
                        key, value = cur.item()
                        if key != _pack(index):
                            raise StorageCorruptError(f"entry {index} is missing")
                        out.append(_parse_entry(index, bytes(value)))
                        cur.next()
            return out

    def get_leaves(self, start: int, end: int) -> list[bytes] | None:
        # The entry-bundle path: leaves only, no StoredEntry per entry. A compact record's
        # leaf is rebuilt from its salt and payload (one hash), so a payload corrupted on disk
        # changes the leaf and the caller's leaf-hash check catches it.
        with self._read() as txn:
            raw = txn.get(b"size", db=self._meta)
            size = _unpack(raw)[0] if raw else 0
            if start < 0 or end < start or end > size:
                raise NotFoundError(f"entries [{start}, {end}) not in a log of {size}")
            out: list[bytes] = []
            if end == start:
                return out
            sha = _sha256
            committed = _KIND_COMMITTED_BYTE
            with txn.cursor(db=self._entries) as cur:
                if not cur.set_key(_pack(start)):
                    raise StorageCorruptError(f"entry {start} is missing")
                values = cast(Iterator[bytes], cur.iternext(keys=False))  # buffers=False
                records = list(itertools.islice(values, end - start))
                # Keys are distinct and sorted: the first is start, so the records are exactly
                # [start, end) when there are end - start of them and the last one is end - 1.
                if len(records) != end - start or cur.key() != _pack(end - 1):
                    raise StorageCorruptError(f"an entry in [{start}, {end}) is missing")
            for value in records:
                if len(value) >= _COMMITTED_LEAF:
                    kind = value[9]
                    if kind == _COMPACT:
                        value = value[:9] + committed + sha(value[10:]).digest()
                    elif kind == 1 and len(value) > _COMMITTED_LEAF:
                        return None  # the older layout keeps the payload beside the leaf
                out.append(value)
            return out

    def lookup_dedupe(self, key: bytes) -> int | None:
        with self._read() as txn:
            raw = txn.get(key, db=self._dedupe)
        return None if raw is None else int(_unpack(raw)[0])

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        if len(leaf_hash) != 32 or self._leafidx is None:
            return None
        if self._closed:
            raise StorageError("storage is closed")
        self._gate.enter()
        dbs = (self._leafidx, self._leafbig)
        try:
            with self._env.begin(buffers=True) as txn:
                for run in self._runs_in(txn):
                    db = dbs[run.big]
                    if db is None:
                        raise StorageCorruptError(f"leaf-hash index run {run.rid} has no database")
                    for index in leafindex.candidates(txn, db, run, leaf_hash):
                        if self._read_hashes(txn, [(0, index)])[0] == leaf_hash:
                            return index
            return None
        except lmdb.Error as e:
            raise _map_error("read", e) from e
        finally:
            self._gate.leave()

    def _runs_in(self, txn: lmdb.Transaction) -> tuple[leafindex.Run, ...]:
        """The index directory of ``txn``'s snapshot (parsed once per change)."""
        raw = txn.get(leafindex.META_RUNS, db=self._meta)
        if raw is None:
            return ()
        big = txn.get(leafindex.META_BIG, db=self._meta) or b""
        known, known_big, runs = self._dir
        if raw != known or big != known_big:
            data, big_data = bytes(raw), bytes(big)
            try:
                runs = leafindex.decode_runs(data, big_data)
            except ValueError as e:
                raise StorageCorruptError(str(e)) from e
            self._dir = (data, big_data, runs)
        return runs

    def leaf_index_auditor(self) -> leafindex.Auditor | None:
        """fsck's checker of the leaf-hash index (see :class:`leafindex.Auditor`)."""
        if self._leafidx is None:
            return None
        with self._read() as txn:
            try:
                spare = leafindex.decode_ids(txn.get(leafindex.META_SPARE, db=self._meta))
            except ValueError as e:
                raise StorageCorruptError(str(e)) from e
            dbs = (self._leafidx, self._leafbig)
            return leafindex.Auditor(txn, dbs, self._runs_in(txn), self.size(), spare)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._read() as txn:
            raw = txn.get(b"latest", db=self._meta)
        if raw is None:
            return None
        size, ts = _U64x2.unpack_from(raw)
        return StoredCheckpoint(size, ts, bytes(raw[16:]))

    def checkpoints(self, start_size: int = 0) -> Iterator[StoredCheckpoint]:
        with self._read() as txn, txn.cursor(db=self._history) as cur:
            found = cur.set_range(_pack(start_size))
            items = [(bytes(k), bytes(v)) for k, v in cur] if found else []
        for k, v in items:
            yield StoredCheckpoint(_unpack(k)[0], _unpack(v[:8])[0], v[8:])

    # -- maintenance -------------------------------------------------------------------

    def raw_env(self) -> lmdb.Environment:
        """The LMDB environment, for fsck and tests that corrupt data on purpose."""
        return self._env

    def db_handles(self) -> dict[str, Any]:
        """Named sub-database handles, for fsck."""
        handles: dict[str, Any] = {
            "meta": self._meta,
            "entries": self._entries,
            "tail": self._tail_db,
            "dedupe": self._dedupe,
            "leafidx": self._leafidx,
            "leafbig": self._leafbig,
            "checkpoints": self._history,
            "promised": self._promised_db,
            "index": self._index_db,
        }
        for level in range(0, _MAX_LEVEL, 2):
            handles[f"h{level:02d}"] = self._levels[level >> 1]
        return handles

    def disk_usage(self) -> int:
        """Bytes the data file occupies on disk."""
        st = os.stat(self.path / "data.mdb")
        return int(st.st_blocks * 512)

    def close(self) -> None:
        """Stop the merger (an unfinished merge is abandoned), then close the environment."""
        if self._closed:
            return
        self._stop_merger()
        self._closed = True
        self._env.close()
        if self._merger_lock is not None:
            os.close(self._merger_lock)  # releases the flock
            self._merger_lock = None

    def _stop_merger(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            merger = self._merger
        if merger is not None and merger is not threading.current_thread():
            merger.join()
        _MERGING.discard(self)


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
