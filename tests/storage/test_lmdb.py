"""LMDB-only behaviour: persistence across reopen, map growth, a full map, concurrent reads."""

from __future__ import annotations

import struct
import threading
from pathlib import Path

import pytest

from translog.core.leaf import committed_leaf
from translog.core.merkle import Frontier, MemoryHashes, leaf_hash
from translog.errors import StorageCorruptError, StorageFullError
from translog.log.reads import check_leaves
from translog.storage.base import NewEntry, StoredCheckpoint, StoredEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage
from translog.storage.lmdb_env import CHUNK

from .test_conformance import all_nodes, make_batch


def test_reopen_restores_everything(tmp_path: Path) -> None:
    frontier, model = Frontier(), MemoryHashes()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    s.append(make_batch(frontier, model, CHUNK * 3 + 5, 10))
    s.put_checkpoint(StoredCheckpoint(7, 11, b"note"))
    s.close()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    assert s.size() == CHUNK * 3 + 5 and s.last_timestamp() == 10
    assert s.read_hashes(all_nodes(s.size())) == model.read_hashes(all_nodes(s.size()))
    assert s.latest_checkpoint() == StoredCheckpoint(7, 11, b"note")
    # appends continue from the restored tails
    s.append(make_batch(frontier, model, 100, 12))
    assert s.read_hashes(all_nodes(s.size())) == model.read_hashes(all_nodes(s.size()))
    s.close()


def test_map_grows_as_needed(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=64 * 1024)
    frontier, model = Frontier(), MemoryHashes()
    for i in range(20):
        s.append(make_batch(frontier, model, 200, i))
    assert s.size() == 4000
    assert s.raw_env().info()["map_size"] > 64 * 1024
    assert s.read_hashes(all_nodes(4000)) == model.read_hashes(all_nodes(4000))
    s.close()


def test_full_map_is_a_clean_error(tmp_path: Path) -> None:
    limit = 1024 * 1024
    s = LMDBStorage(tmp_path / "db", map_size=64 * 1024, max_map_size=limit)
    frontier, model = Frontier(), MemoryHashes()
    with pytest.raises(StorageFullError):
        for i in range(1000):
            f2, m2 = frontier.copy(), MemoryHashes()
            batch = make_batch(f2, m2, 100, i)
            s.append(batch)
            frontier = f2
            for h in m2.read_hashes([(0, j) for j in range(m2.size)]):
                model.append(h)
    size = s.size()
    assert size > 0 and size % 100 == 0
    # nothing of the failed batch is visible, reads still work, and the store is not corrupt
    assert s.read_hashes(all_nodes(size)) == model.read_hashes(all_nodes(size))
    assert len(s.get_entries(0, size)) == size
    s.close()
    s = LMDBStorage(tmp_path / "db", map_size=64 * 1024, max_map_size=limit * 4)
    assert s.size() == size
    s.append(make_batch(frontier, model, 100, 10_000))  # recovers when space returns
    assert s.read_hashes(all_nodes(s.size())) == model.read_hashes(all_nodes(s.size()))
    s.close()


def test_readers_during_writes_and_growth(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=64 * 1024)
    frontier, model = Frontier(), MemoryHashes()
    s.append(make_batch(frontier, model, 10, 0))
    first = model.read_hashes(all_nodes(10))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                assert s.read_hashes(all_nodes(10)) == first
                assert len(s.get_entries(0, 10)) == 10
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(30):
        s.append(make_batch(frontier, model, 150, i + 1))
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert s.read_hashes(all_nodes(s.size())) == model.read_hashes(all_nodes(s.size()))
    s.close()


def test_corrupt_tail_detected_at_open(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    s.append(make_batch(Frontier(), MemoryHashes(), 10, 1))
    env, dbs = s.raw_env(), s.db_handles()
    with env.begin(write=True) as txn:
        txn.put(bytes([0]), b"\0" * 31, db=dbs["tail"])
    s.close()
    with pytest.raises(StorageCorruptError):
        LMDBStorage(tmp_path / "db", map_size=1 << 20)


def test_committed_record_omits_the_commitment_and_erasure_keeps_the_leaf(tmp_path: Path) -> None:
    salt, payload = b"\x09" * 32, bytes(range(200))
    leaf = committed_leaf(123, payload, salt)
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    s.append(
        WriteBatch(0, [NewEntry(leaf, salt, payload)], Frontier().append(leaf_hash(leaf)), 123)
    )
    with s.raw_env().begin() as txn:
        record = bytes(txn.get(struct.pack(">Q", 0), db=s.db_handles()["entries"]))
    assert record == leaf[:9] + b"\x81" + salt + payload  # 242 bytes: 15 records per page
    assert s.get_entries(0, 1)[0] == StoredEntry(0, leaf, salt, payload)
    assert s.erase_payload(0)
    with s.raw_env().begin() as txn:
        assert bytes(txn.get(struct.pack(">Q", 0), db=s.db_handles()["entries"])) == leaf
    assert s.get_entries(0, 1)[0] == StoredEntry(0, leaf)
    s.close()


def test_records_of_the_earlier_layout_still_read(tmp_path: Path) -> None:
    salt, payload = b"\x0a" * 32, b"legacy"
    leaf = committed_leaf(5, payload, salt)
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    s.append(WriteBatch(0, [NewEntry(leaf, salt, payload)], Frontier().append(leaf_hash(leaf)), 5))
    assert s.get_leaves(0, 1) == [leaf]
    with s.raw_env().begin(write=True) as txn:  # what the previous layout wrote
        txn.put(struct.pack(">Q", 0), leaf + salt + payload, db=s.db_handles()["entries"])
    assert s.get_entries(0, 1)[0] == StoredEntry(0, leaf, salt, payload)
    # The bundle path leaves a payload kept beside its leaf to the full entry check.
    assert s.get_leaves(0, 1) is None
    s.close()


def test_cached_chunks_match_the_store_across_growth_and_eviction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import translog.storage.lmdb_reads as reads_mod

    monkeypatch.setattr(reads_mod, "_CHUNK_CACHE_MAX", 3)
    s = LMDBStorage(tmp_path / "db", map_size=1 << 24)
    frontier, model = Frontier(), MemoryHashes()
    for i in range(6):  # level-4 and level-6 chunks fill up as the tree grows
        s.append(make_batch(frontier, model, CHUNK * 16 * 3 + 17, i))
        nodes = [n for n in all_nodes(s.size()) if 3 <= n[0] <= 8]
        assert s.read_hashes(nodes) == model.read_hashes(nodes)
        assert len(s._chunk_cache) <= 3
    s.close()


def test_leaves_rebuild_committed_records_and_the_leaf_check_catches_a_bad_payload(
    tmp_path: Path,
) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 20)
    s.append(make_batch(Frontier(), MemoryHashes(), 300, 1))
    leaves = s.get_leaves(0, 300)
    assert leaves == [e.leaf for e in s.get_entries(0, 300)]
    check_leaves(s, 0, leaves)  # the stored leaf hashes agree
    check_leaves(s, 256, leaves[256:])
    key, entries = struct.pack(">Q", 150), s.db_handles()["entries"]
    with s.raw_env().begin(write=True) as txn:  # one payload bit flipped on disk
        record = bytearray(txn.get(key, db=entries))
        record[-1] ^= 0x01
        txn.put(key, bytes(record), db=entries)
    bad = s.get_leaves(0, 256)
    assert bad is not None and bad[150] != leaves[150]
    with pytest.raises(StorageCorruptError, match="entry 150: the stored leaf does not match"):
        check_leaves(s, 0, bad)
    check_leaves(s, 151, bad[151:])  # its neighbours still pass
    with s.raw_env().begin(write=True) as txn:  # a record lost
        txn.delete(struct.pack(">Q", 299), db=entries)
    with pytest.raises(StorageCorruptError, match="missing"):
        s.get_leaves(256, 300)
    with s.raw_env().begin(write=True) as txn:
        txn.delete(struct.pack(">Q", 200), db=entries)
    with pytest.raises(StorageCorruptError, match="missing"):
        s.get_leaves(190, 210)
    with pytest.raises(StorageCorruptError, match="entry 6: "):
        check_leaves(s, 6, leaves[7:9])  # leaves checked against the wrong indexes
    s.close()
