"""One conformance suite for the Storage contract, run against the memory twin and LMDB."""

from __future__ import annotations

import pytest

from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import Frontier, MemoryHashes, NodeLevels, leaf_hash, subtree_nodes
from translog.errors import MalformedError, NotFoundError, StorageCorruptError
from translog.storage.base import (
    EntryColumns,
    NewEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteBatch,
)


def make_batch(
    frontier: Frontier, model: MemoryHashes, n: int, ts: int, *, committed: bool = True
) -> WriteBatch:
    start = frontier.size
    entries, nodes = [], []
    for i in range(n):
        payload = f"payload {start + i}".encode()
        if committed:
            salt = bytes([(start + i) % 256]) * 32
            leaf = committed_leaf(ts, payload, salt)
            entries.append(NewEntry(leaf, salt, payload))
        else:
            leaf = inline_leaf(ts, payload)
            entries.append(NewEntry(leaf))
        h = leaf_hash(leaf)
        nodes.extend(frontier.append(h))
        model.append(h)
    return WriteBatch(start, entries, nodes, ts)


def all_nodes(size: int) -> list[tuple[int, int]]:
    out = []
    level = 0
    while (1 << level) <= size:
        out.extend((level, i) for i in range(size >> level))
        level += 1
    return out


def test_empty(storage: Storage) -> None:
    assert storage.size() == 0
    assert storage.last_timestamp() == 0
    assert storage.get_entries(0, 0) == []
    assert storage.latest_checkpoint() is None
    assert list(storage.checkpoints()) == []
    with pytest.raises(NotFoundError):
        storage.read_hashes([(0, 0)])
    with pytest.raises(NotFoundError):
        storage.get_entries(0, 1)


@pytest.mark.parametrize("batches", [[1], [5, 1, 1], [62, 62, 1], [61, 2, 200, 300], [1000]])
def test_hashes_every_level(storage: Storage, batches: list[int]) -> None:
    frontier, model = Frontier(), MemoryHashes()
    ts = 1000
    for n in batches:
        storage.append(make_batch(frontier, model, n, ts))
        ts += 1
        nodes = all_nodes(storage.size())
        assert storage.read_hashes(nodes) == model.read_hashes(nodes)
    assert storage.size() == sum(batches)
    assert storage.last_timestamp() == ts - 1
    size = storage.size()
    with pytest.raises(NotFoundError):
        storage.read_hashes([(0, size)])
    with pytest.raises(NotFoundError):
        storage.read_hashes([(1, size // 2)])  # incomplete at level 1 (or out of range)


def test_entries_round_trip(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 3, 5, committed=True))
    storage.append(make_batch(frontier, model, 2, 6, committed=False))
    entries = storage.get_entries(0, 5)
    assert [e.index for e in entries] == [0, 1, 2, 3, 4]
    assert entries[1].payload == b"payload 1" and entries[1].salt == bytes([1]) * 32
    assert entries[4].payload is None and entries[4].salt is None
    assert entries[4].leaf == inline_leaf(6, b"payload 4")
    assert [leaf_hash(e.leaf) for e in entries] == model.read_hashes([(0, i) for i in range(5)])
    assert storage.get_entries(2, 4) == entries[2:4]
    with pytest.raises(NotFoundError):
        storage.get_entries(4, 6)


def test_committed_empty_payload_is_not_erased(storage: Storage) -> None:
    salt = b"\x07" * 32
    leaf = committed_leaf(1, b"", salt)
    f = Frontier()
    storage.append(WriteBatch(0, [NewEntry(leaf, salt, b"")], f.append(leaf_hash(leaf)), 1))
    e = storage.get_entries(0, 1)[0]
    assert e.salt == salt and e.payload == b""


def test_append_must_start_at_size(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    batch = make_batch(frontier, model, 3, 1)
    storage.append(batch)
    with pytest.raises(StorageCorruptError):
        storage.append(batch)  # same start again: a fork attempt
    assert storage.size() == 3


def test_timestamp_never_decreases(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 1, 100))
    with pytest.raises(StorageCorruptError):
        storage.append(make_batch(frontier.copy(), MemoryHashes(), 1, 99))
    assert storage.size() == 1 and storage.last_timestamp() == 100


def test_dedupe_and_leaf_index(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    b = make_batch(frontier, model, 4, 1)
    storage.append(WriteBatch(b.start, b.entries, b.nodes, b.timestamp_ms, {b"k" * 16: 2}))
    assert storage.lookup_dedupe(b"k" * 16) == 2
    assert storage.lookup_dedupe(b"x" * 16) is None
    assert storage.lookup_dedupe_many([b"x" * 16, b"k" * 16]) == [None, 2]
    assert storage.lookup_dedupe_many([]) == []
    for i in range(4):
        assert storage.find_leaf_hash(model.read_hashes([(0, i)])[0]) == i
    assert storage.find_leaf_hash(b"\0" * 32) is None


def test_checkpoint_history(storage: Storage) -> None:
    storage.put_checkpoint(StoredCheckpoint(0, 1, b"a"))
    storage.put_checkpoint(StoredCheckpoint(5, 2, b"b"))
    storage.put_checkpoint(StoredCheckpoint(5, 3, b"c"))  # re-signed, same size
    latest = storage.latest_checkpoint()
    assert latest == StoredCheckpoint(5, 3, b"c")
    assert list(storage.checkpoints()) == [
        StoredCheckpoint(0, 1, b"a"),
        StoredCheckpoint(5, 2, b"b"),
    ]
    assert list(storage.checkpoints(1)) == [StoredCheckpoint(5, 2, b"b")]
    with pytest.raises(StorageCorruptError):
        storage.put_checkpoint(StoredCheckpoint(4, 4, b"d"))
    assert storage.latest_checkpoint() == latest


def test_erase_payload_keeps_leaf(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 2, 1))
    storage.append(make_batch(frontier, model, 1, 2, committed=False))
    before = storage.read_hashes(all_nodes(3))
    assert storage.erase_payload(1) is True
    assert storage.erase_payload(1) is False
    assert storage.erase_payload(2) is False  # inline: nothing to erase
    e = storage.get_entries(1, 2)[0]
    assert e.payload is None and e.salt is None and len(e.leaf) == 42
    assert storage.read_hashes(all_nodes(3)) == before
    assert storage.get_entries(0, 1)[0].payload == b"payload 0"


def test_proof_nodes_for_every_prefix(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 300, 1))
    for size in (1, 2, 62, 63, 124, 255, 256, 257, 300):
        nodes = subtree_nodes(0, size)
        assert storage.read_hashes(nodes) == model.read_hashes(nodes)


def test_promised_entries_until_sequenced(storage: Storage) -> None:
    from translog.storage.base import PromisedEntry

    salt = b"\x05" * 32
    leaf = committed_leaf(7, b"promised", salt)
    items = [
        PromisedEntry(3, b"k" * 16, NewEntry(leaf, salt, b"promised")),
        PromisedEntry(4, None, NewEntry(inline_leaf(7, b"inline"))),
    ]
    storage.put_promised(items)
    assert storage.promised() == items
    frontier = Frontier()
    nodes = frontier.append(leaf_hash(leaf))
    storage.append(WriteBatch(0, [NewEntry(leaf, salt, b"promised")], nodes, 7, {}, [3]))
    assert storage.promised() == items[1:]
    storage.append(WriteBatch(1, [], [], 7, {}, [4]))  # sequenced as a duplicate: no new leaf
    assert storage.promised() == [] and storage.size() == 1


def test_every_entry_needs_its_leaf_hash(storage: Storage) -> None:
    leaf = inline_leaf(1, b"x")
    with pytest.raises(StorageCorruptError):
        storage.append(WriteBatch(0, [NewEntry(leaf)], [], 1))
    assert storage.size() == 0


def test_leaves_are_the_entries_leaves(storage: Storage) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 3, 5, committed=True))
    storage.append(make_batch(frontier, model, 2, 6, committed=False))
    every = storage.get_leaves(0, 5)
    # None only asks the caller to read full entries (a payload kept beside its leaf).
    assert every is None or every == [e.leaf for e in storage.get_entries(0, 5)]
    assert storage.get_leaves(3, 5) == [e.leaf for e in storage.get_entries(3, 5)]
    assert storage.get_leaves(2, 2) == []
    for start, end in ((4, 6), (-1, 2), (3, 2)):
        with pytest.raises(NotFoundError):
            storage.get_leaves(start, end)


def columnar(batch: WriteBatch, frontier: Frontier) -> WriteBatch:
    """The same batch in the sequencer's form: entry columns and nodes held by level."""
    entries = EntryColumns(
        [e.leaf for e in batch.entries],
        [e.salt for e in batch.entries],
        [e.payload for e in batch.entries],
    )
    nodes = NodeLevels(batch.start, frontier.extend_levels([leaf_hash(e.leaf) for e in entries]))
    return WriteBatch(batch.start, entries, nodes, batch.timestamp_ms)


@pytest.mark.parametrize("batches", [[1], [5, 1, 1], [62, 62, 1], [61, 2, 200, 300], [1000]])
def test_columnar_batches_store_what_entry_batches_do(storage: Storage, batches: list[int]) -> None:
    frontier, model, bulk = Frontier(), MemoryHashes(), Frontier()
    ts = 1000
    for k, n in enumerate(batches):
        batch = make_batch(frontier, model, n, ts, committed=k % 2 == 0)
        storage.append(columnar(batch, bulk))
        ts += 1
        size = storage.size()
        assert storage.read_hashes(all_nodes(size)) == model.read_hashes(all_nodes(size))
        assert storage.get_entries(batch.start, size) == [
            StoredEntry(batch.start + i, e.leaf, e.salt, e.payload)
            for i, e in enumerate(batch.entries)
        ]
    # Mixed kinds in one batch.
    salt = b"\x09" * 32
    mixed = [
        NewEntry(committed_leaf(ts, b"c", salt), salt, b"c"),
        NewEntry(inline_leaf(ts, b"i")),
        NewEntry(committed_leaf(ts, b"", salt), salt, b""),
    ]
    start = storage.size()
    for e in mixed:
        model.append(leaf_hash(e.leaf))
    storage.append(columnar(WriteBatch(start, mixed, [], ts), bulk))
    got = storage.get_entries(start, start + 3)
    assert [(e.leaf, e.salt) for e in got] == [(e.leaf, e.salt) for e in mixed]
    assert [e.payload for e in got] == [b"c", None, b""]
    assert storage.read_hashes(all_nodes(start + 3)) == model.read_hashes(all_nodes(start + 3))


@pytest.mark.parametrize("form", ["triples", "levels"])
def test_a_batch_lacking_nodes_of_a_level_is_refused(storage: Storage, form: str) -> None:
    frontier, model = Frontier(), MemoryHashes()
    storage.append(make_batch(frontier, model, 3, 1))
    batch = make_batch(frontier, model, 6, 2)  # completes nodes at levels 0 to 3
    for drop in (0, 2):
        if form == "triples":
            nodes: list[tuple[int, int, bytes]] | NodeLevels = [
                t for t in batch.nodes if t[0] != drop
            ]
        else:
            levels = [[h for lv, _, h in batch.nodes if lv == level] for level in range(4)]
            levels[drop] = levels[drop][:-1]
            nodes = NodeLevels(batch.start, levels)
        with pytest.raises(StorageCorruptError):
            storage.append(WriteBatch(batch.start, batch.entries, nodes, 2))
        assert storage.size() == 3
    extra = [*batch.nodes, (4, 0, b"\x00" * 32)]  # a node the batch does not complete
    with pytest.raises(StorageCorruptError):
        storage.append(WriteBatch(batch.start, batch.entries, extra, 2))
    storage.append(batch)
    assert storage.read_hashes(all_nodes(9)) == model.read_hashes(all_nodes(9))


def test_entry_columns_are_the_sequence_of_their_entries() -> None:
    salt = b"\x01" * 32
    leaves = [committed_leaf(1, b"a", salt), inline_leaf(1, b"b"), inline_leaf(1, b"c")]
    columns = EntryColumns(leaves, [salt, None, None], [b"a", None, None])
    entries = [NewEntry(leaves[0], salt, b"a"), NewEntry(leaves[1]), NewEntry(leaves[2])]
    assert list(columns) == entries and len(columns) == 3
    assert columns[0] == entries[0] and columns[-1] == entries[-1]
    assert columns[1:] == entries[1:]
    with pytest.raises(MalformedError, match="different lengths"):
        EntryColumns(leaves, [salt], [b"a"])
