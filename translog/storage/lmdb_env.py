"""The LMDB environment of one log: its sub-databases, transactions and map growth.

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
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lmdb

from translog.errors import StorageCorruptError, StorageError, StorageFullError

CHUNK = 62
"""Hashes per stored chunk: two chunk records fill one 4 KiB LMDB leaf page."""
CHUNK_BYTES = CHUNK * 32
"""Bytes of one full chunk record."""
_MAX_LEVEL = 64
_U64 = struct.Struct(">Q")
pack_u64 = _U64.pack
"""A u64 key or value, big-endian (integer keys sort in append order)."""
unpack_u64 = _U64.unpack


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


def map_error(action: str, e: lmdb.Error, path: Path | None = None, need: int = 0) -> StorageError:
    """The storage error for LMDB's ``e`` while trying to ``action``: full, corrupt or other.

    With ``path``, an I/O error while less than ``need`` bytes are free there is a full disk.
    """
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


class LMDBEnv:
    """One log's environment: the sub-database handles, read and write transactions, map
    growth, and the state every batch updates (size, last timestamp, tail chunks).

    The base of :class:`~translog.storage.lmdb.LMDBStorage`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int,
        max_map_size: int,
        readonly: bool,
    ) -> None:
        """Open (creating if needed) the environment in directory ``path``; load the state."""
        self.path = Path(path)
        self._max_map_size = max_map_size
        self._gate = _Gate()
        self._closed = False
        # Every write transaction and the index state: the sequencer and the merger.
        self._wlock = threading.RLock()
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        self._readonly = readonly
        self._open_env(map_size)
        self._size, self._ts, self._tail = self._load_state()

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
            raise map_error(f"open LMDB environment {self.path}", e) from e
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
            raise map_error(f"open sub-databases in {self.path}", e) from e

    def _open_optional(self, name: bytes, create: bool) -> Any:
        """A sub-database that a read-only open of an older store may lack (None then)."""
        try:
            return self._env.open_db(name, create=create)
        except lmdb.NotFoundError:
            return None

    def _load_state(self) -> tuple[int, int, dict[int, bytes]]:
        with self._env.begin() as txn:
            raw = txn.get(b"size", db=self._meta)
            size = unpack_u64(raw)[0] if raw else 0
            raw = txn.get(b"ts", db=self._meta)
            ts = unpack_u64(raw)[0] if raw else 0
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

    # -- transactions ------------------------------------------------------------------

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
                raise map_error(action, e, self.path, need) from e

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

    @contextlib.contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        if self._closed:
            raise StorageError("storage is closed")
        with self._gate.read():
            try:
                with self._env.begin(buffers=False) as txn:
                    yield txn
            except lmdb.Error as e:
                raise map_error("read", e) from e

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
        """Close the environment."""
        if self._closed:
            return
        self._closed = True
        self._env.close()
