"""An in-memory twin of the LMDB backend that polices the storage contract.

It keeps every level of the tree in dicts, checks that ``append`` starts at the current size
and that node hashes never change, and offers fault injection for tests:

* ``fail_next = "before"``: the next write raises ``StorageError`` and persists nothing
  ("fail and not persist");
* ``fail_next = "after"``: the next write persists, then raises ``StorageError``
  ("fail but persist": the caller cannot tell whether it landed);
* ``fail_next = "full"``: the next write raises ``StorageFullError`` and persists nothing.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import Literal

from translog.core.tiles import TILE_WIDTH
from translog.errors import NotFoundError, StorageCorruptError, StorageError, StorageFullError
from translog.storage.base import PromisedEntry, StoredCheckpoint, StoredEntry, WriteBatch

Fault = Literal["before", "after", "full"]


class MemoryStorage:
    """Dict-backed :class:`~translog.storage.base.Storage` for tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[StoredEntry] = []
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._dedupe: dict[bytes, int] = {}
        self._by_hash: dict[bytes, int] = {}
        self._history: dict[int, StoredCheckpoint] = {}
        self._latest: StoredCheckpoint | None = None
        self._ts = 0
        self._promised: dict[int, PromisedEntry] = {}
        self._index_keys: list[bytes] = []
        self._index: dict[bytes, bytes] = {}
        self._rewrites: dict[int, int] = {}
        self.fail_next: Fault | None = None
        self.appends = 0

    def _maybe_fail(self, when: Literal["before", "after"]) -> None:
        fault = self.fail_next
        if fault == "full" and when == "before":
            self.fail_next = None
            raise StorageFullError("injected: storage full")
        if fault == when:
            self.fail_next = None
            raise StorageError(f"injected: write failed ({when} persisting)")

    def size(self) -> int:
        return len(self._entries)

    def last_timestamp(self) -> int:
        return self._ts

    def append(self, batch: WriteBatch) -> None:
        with self._lock:
            self._maybe_fail("before")
            if batch.start != len(self._entries):
                raise StorageCorruptError(
                    f"append at {batch.start} but the log has {len(self._entries)} entries"
                )
            if batch.timestamp_ms < self._ts:
                raise StorageCorruptError(
                    f"timestamp went backwards: {batch.timestamp_ms} < {self._ts}"
                )
            counts: dict[int, int] = {}
            for level, _, _ in batch.nodes:
                counts[level] = counts.get(level, 0) + 1
            if counts.get(0, 0) != len(batch.entries):
                raise StorageCorruptError(
                    f"batch brings {len(batch.entries)} entries and {counts.get(0, 0)} leaf hashes"
                )
            end = batch.start + len(batch.entries)
            top = max([(end ^ batch.start).bit_length(), *(level + 1 for level in counts)])
            for level in range(top):
                want = (end >> level) - (batch.start >> level)
                if counts.get(level, 0) != want:
                    raise StorageCorruptError(
                        f"batch at {batch.start} brings {counts.get(level, 0)} nodes at level "
                        f"{level}, expected {want}"
                    )
            for e in batch.entries:
                if e.salt is not None and (
                    len(e.leaf) != 42
                    or e.leaf[10:] != hashlib.sha256(e.salt + (e.payload or b"")).digest()
                ):
                    raise StorageCorruptError("a committed leaf does not commit to its payload")
            for level, index, value in batch.nodes:
                old = self._nodes.get((level, index))
                if old is not None and old != value:
                    raise StorageCorruptError(f"node ({level}, {index}) rewritten")
            for i, e in enumerate(batch.entries):
                self._entries.append(StoredEntry(batch.start + i, e.leaf, e.salt, e.payload))
            for level, index, value in batch.nodes:
                self._nodes[(level, index)] = value
                if level == 0:
                    self._by_hash.setdefault(value, index)
            self._dedupe.update(batch.dedupe)
            for seq in batch.promised_done:
                self._promised.pop(seq, None)
            self._index_put(batch.index_puts)
            self._ts = batch.timestamp_ms
            self.appends += 1
            self._maybe_fail("after")

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        size = len(self._entries)
        out = []
        for level, index in nodes:
            if (index + 1) << level > size or (level, index) not in self._nodes:
                raise NotFoundError(f"no hash at level {level} index {index} for size {size}")
            out.append(self._nodes[(level, index)])
        return out

    def get_entries(self, start: int, end: int) -> list[StoredEntry]:
        if start < 0 or end < start or end > len(self._entries):
            raise NotFoundError(f"entries [{start}, {end}) not in a log of {len(self._entries)}")
        return self._entries[start:end]

    def get_leaves(self, start: int, end: int) -> list[bytes] | None:
        entries = self.get_entries(start, end)
        if any(e.payload is not None for e in entries):
            return None
        return [e.leaf for e in entries]

    def lookup_dedupe(self, key: bytes) -> int | None:
        return self._dedupe.get(key)

    def lookup_dedupe_many(self, keys: Sequence[bytes]) -> list[int | None]:
        return list(map(self._dedupe.get, keys))

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        return self._by_hash.get(leaf_hash)

    def leaf_index_auditor(self) -> None:
        return None

    def put_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        with self._lock:
            self._maybe_fail("before")
            if self._latest is not None and checkpoint.size < self._latest.size:
                raise StorageCorruptError(
                    f"checkpoint size went backwards: {checkpoint.size} < {self._latest.size}"
                )
            self._history.setdefault(checkpoint.size, checkpoint)
            self._latest = checkpoint
            self._maybe_fail("after")

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        return self._latest

    def checkpoints(self, start_size: int = 0) -> Iterator[StoredCheckpoint]:
        for size in sorted(s for s in self._history if s >= start_size):
            yield self._history[size]

    def put_promised(self, items: Sequence[PromisedEntry]) -> None:
        with self._lock:
            self._maybe_fail("before")
            for item in items:
                self._promised[item.seq] = item
            self._maybe_fail("after")

    def promised(self) -> list[PromisedEntry]:
        return [self._promised[k] for k in sorted(self._promised)]

    def erase_payload(self, index: int) -> bool:
        with self._lock:
            e = self.get_entries(index, index + 1)[0]
            if e.payload is None and e.salt is None:
                return False
            self._entries[index] = StoredEntry(index, e.leaf)
            self._queue_rewrite(index)
            return True

    def _queue_rewrite(self, index: int) -> None:
        tile = index // TILE_WIDTH
        self._rewrites[tile] = self._rewrites.get(tile, 0) + 1

    def pending_rewrites(self) -> list[tuple[int, int]]:
        with self._lock:
            return sorted(self._rewrites.items())

    def rewrite_done(self, tile: int, generation: int) -> None:
        with self._lock:
            if self._rewrites.get(tile) == generation:
                del self._rewrites[tile]

    def _index_put(self, puts: Sequence[tuple[bytes, bytes]]) -> None:
        for key, value in puts:
            if key not in self._index:
                bisect.insort(self._index_keys, key)
            self._index[key] = value

    @contextlib.contextmanager
    def index_reader(self) -> Iterator[_MemoryIndexReader]:
        with self._lock:
            snapshot = _MemoryIndexReader(list(self._index_keys), dict(self._index))
        yield snapshot

    def index_write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        *,
        clear_prefix: bytes | None = None,
        erase: Sequence[int] = (),
    ) -> int:
        with self._lock:
            self._maybe_fail("before")
            erased = 0
            for index in erase:
                e = self.get_entries(index, index + 1)[0]
                if e.payload is not None or e.salt is not None:
                    self._entries[index] = StoredEntry(index, e.leaf)
                    self._queue_rewrite(index)
                    erased += 1
            if clear_prefix is not None:
                for key in [k for k in self._index_keys if k.startswith(clear_prefix)]:
                    del self._index[key]
                self._index_keys = sorted(self._index)
            for key in deletes:
                if self._index.pop(key, None) is not None:
                    self._index_keys.remove(key)
            self._index_put(puts)
            self._maybe_fail("after")
            return erased

    def close(self) -> None:
        pass


class _MemoryIndexReader:
    """A snapshot of the memory twin's index keyspace."""

    def __init__(self, keys: list[bytes], values: dict[bytes, bytes]) -> None:
        self._keys = keys
        self._values = values

    def get(self, key: bytes) -> bytes | None:
        return self._values.get(key)

    def seek(self, key: bytes) -> tuple[bytes, bytes] | None:
        i = bisect.bisect_left(self._keys, key)
        if i == len(self._keys):
            return None
        k = self._keys[i]
        return k, self._values[k]

    def seek_before(self, key: bytes) -> tuple[bytes, bytes] | None:
        i = bisect.bisect_left(self._keys, key)
        if i == 0:
            return None
        k = self._keys[i - 1]
        return k, self._values[k]
