"""The LMDB backend: one environment per log, named sub-databases, one writer thread.

:class:`LMDBStorage` is built in layers, one module each:

* ``translog.storage.lmdb_env``: the environment, the layout of its sub-databases, read and
  write transactions, map growth;
* ``translog.storage.lmdb_records``: entry records and the node hashes a batch stores;
* ``translog.storage.lmdb_reads``: node hashes, entries and leaves;
* ``translog.storage.lmdb_leafidx``: the leaf-hash index and its background merger;
* this module: the storage class and its writes (batches, checkpoints, promised entries,
  erasures and the payload rewrites they queue, the ``index`` sub-database).
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator, Sequence

import lmdb

from translog.core.tiles import TILE_WIDTH
from translog.errors import NotFoundError, StorageCorruptError, StorageError
from translog.storage import leafindex
from translog.storage.base import NewEntry, PromisedEntry, StoredCheckpoint, WriteBatch
from translog.storage.lmdb_env import CHUNK, CHUNK_BYTES, pack_u64, unpack_u64
from translog.storage.lmdb_leafidx import LMDBLeafIndex
from translog.storage.lmdb_records import entry_record, entry_records, even_levels, parse_entry

_U64x2 = struct.Struct(">QQ")
_REWRITE = b"rewrite"


class LMDBStorage(LMDBLeafIndex):
    """The production :class:`~translog.storage.base.Storage` backend."""

    # -- writes (and the reads of checkpoints, promised entries and rewrites) ------------

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
        by_level = even_levels(batch, new_size)
        # Built once, outside the transaction: the values are the bulk of the batch, and their
        # lengths give the map-growth estimate without another pass over the entries.
        blobs = entry_records(batch.entries)
        items = list(zip(map(pack_u64, range(batch.start, new_size)), blobs, strict=True))
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
                full = len(data) // CHUNK_BYTES
                if full:
                    chunks = [
                        (pack_u64(chunk0 + k), data[k * CHUNK_BYTES : (k + 1) * CHUNK_BYTES])
                        for k in range(full)
                    ]
                    with txn.cursor(db=self._levels[level >> 1]) as cur:
                        cur.putmulti(chunks, append=True)
                rest = data[full * CHUNK_BYTES :]
                new_tail[level] = rest
                txn.put(bytes([level]), rest, db=self._tail_db)
            new_runs, new_nxt = runs, nxt
            if run is not None:
                new_runs, new_nxt = self._add_run(txn, runs, nxt, batch.start, run, take)
            for key, index in batch.dedupe.items():
                txn.put(key, pack_u64(index), db=self._dedupe)
            for seq in batch.promised_done:
                txn.delete(pack_u64(seq), db=self._promised_db)
            if batch.index_puts:
                with txn.cursor(db=self._index_db) as cur:
                    cur.putmulti(sorted(batch.index_puts))
            txn.put(b"size", pack_u64(new_size), db=self._meta)
            txn.put(b"ts", pack_u64(batch.timestamp_ms), db=self._meta)
            return new_tail, new_runs, new_nxt

        estimate = 40 * len(batch.nodes) + 24 * len(blobs) + sum(map(len, blobs))
        estimate += sum(len(k) + len(v) + 16 for k, v in batch.index_puts)
        if run is not None:
            estimate += self._index_estimate(len(run), take)
        action = f"append {len(batch.entries)} entries at {batch.start}"
        self._tail, self._runs, self._next_rid = self._write(action, fn, estimate)
        self._size = new_size
        self._ts = batch.timestamp_ms

    def put_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        latest = self.latest_checkpoint()
        if latest is not None and checkpoint.size < latest.size:
            raise StorageCorruptError(
                f"checkpoint size went backwards: {checkpoint.size} < {latest.size}"
            )
        key = pack_u64(checkpoint.size)
        value = pack_u64(checkpoint.timestamp_ms) + checkpoint.note

        def fn(txn: lmdb.Transaction) -> None:
            txn.put(key, value, db=self._history, overwrite=False)
            txn.put(b"latest", key + value, db=self._meta)

        self._write(f"store checkpoint of size {checkpoint.size}", fn, len(value) + 64)

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        with self._read() as txn:
            raw = txn.get(b"latest", db=self._meta)
        if raw is None:
            return None
        size, ts = _U64x2.unpack_from(raw)
        return StoredCheckpoint(size, ts, bytes(raw[16:]))

    def checkpoints(self, start_size: int = 0) -> Iterator[StoredCheckpoint]:
        with self._read() as txn, txn.cursor(db=self._history) as cur:
            found = cur.set_range(pack_u64(start_size))
            items = [(bytes(k), bytes(v)) for k, v in cur] if found else []
        for k, v in items:
            yield StoredCheckpoint(unpack_u64(k)[0], unpack_u64(v[:8])[0], v[8:])

    def put_promised(self, items: Sequence[PromisedEntry]) -> None:
        values = []
        for item in items:
            key = item.key or b""
            values.append((pack_u64(item.seq), bytes([len(key)]) + key + entry_record(item.entry)))

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
            stored = parse_entry(0, v[1 + n :])
            entry = NewEntry(stored.leaf, stored.salt, stored.payload)
            out.append(PromisedEntry(unpack_u64(k)[0], v[1 : 1 + n] or None, entry))
        return out

    def erase_payload(self, index: int) -> bool:
        entry = self.get_entries(index, index + 1)[0]
        if entry.salt is None:
            return False

        def fn(txn: lmdb.Transaction) -> None:
            txn.put(pack_u64(index), entry.leaf, db=self._entries)
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
                key = pack_u64(index)
                raw = txn.get(key, db=self._entries)
                if raw is None or index >= self._size:
                    raise NotFoundError(f"entry {index} is not in the log")
                entry = parse_entry(index, bytes(raw))
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
        key = _REWRITE + pack_u64(index // TILE_WIDTH)
        raw = txn.get(key, db=self._meta)
        txn.put(key, pack_u64((unpack_u64(bytes(raw))[0] if raw else 0) + 1), db=self._meta)

    def pending_rewrites(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        with self._read() as txn, txn.cursor(db=self._meta) as cur:
            if cur.set_range(_REWRITE):
                for k, v in cur:
                    if not bytes(k).startswith(_REWRITE):
                        break
                    out.append((unpack_u64(bytes(k)[len(_REWRITE) :])[0], unpack_u64(bytes(v))[0]))
        return out

    def rewrite_done(self, tile: int, generation: int) -> None:
        key = _REWRITE + pack_u64(tile)

        def fn(txn: lmdb.Transaction) -> None:
            raw = txn.get(key, db=self._meta)
            if raw is not None and unpack_u64(bytes(raw))[0] == generation:
                txn.delete(key, db=self._meta)

        self._write(f"mark the payloads of tile {tile} rewritten", fn, 64)
