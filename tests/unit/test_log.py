"""The sequencer, pool and publisher, over the memory twin (fault injection) and LMDB."""

from __future__ import annotations

import asyncio
import gc
import itertools
from pathlib import Path

import pytest

import translog.log.sequencer as logmod
from translog.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from translog.core.ct import TreeHeadSigner, verify_tree_head
from translog.core.leaf import MAX_INLINE_PAYLOAD, committed_leaf, decode_leaf, inline_leaf
from translog.core.merkle import leaf_hash, tree_hash, verify_consistency, verify_inclusion
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import (
    MalformedError,
    PushbackError,
    SequencerFatalError,
    StorageCorruptError,
    StorageFullError,
)
from translog.log.fsck import fsck
from translog.log.sequencer import Accepted, AcceptedRun, AppendedRun, Log, LogOptions
from translog.storage.base import StoredCheckpoint
from translog.storage.lmdb import LMDBStorage
from translog.storage.memory import MemoryStorage

from ..conftest import ORIGIN


def make_log(storage: object, signer: NoteSigner, **opts: int) -> Log:
    options = LogOptions(**{"publish_interval_ms": 50, **opts})  # type: ignore[arg-type]
    return Log(storage, ORIGIN, signer, TreeHeadSigner.generate(), options)  # type: ignore[arg-type]


async def test_append_is_durable_and_provable(memory_log: Log, signer: NoteSigner) -> None:
    a = await memory_log.append(b"hello")
    assert a.index == 0 and memory_log.storage.size() == 1
    assert a.checkpoint.size >= 1
    cp, _, _ = open_checkpoint(a.checkpoint.note, parse_vkey(signer.vkey), origin=ORIGIN)
    proof = memory_log.inclusion_proof(a.index, cp.size)
    verify_inclusion(a.leaf_hash, a.index, cp.size, proof, cp.root_hash)
    leaf = decode_leaf(a.leaf)
    assert leaf.commitment is not None and a.salt is not None


async def test_concurrent_appends_are_group_committed(memory_log: Log) -> None:
    storage = memory_log.storage
    assert isinstance(storage, MemoryStorage)
    before = storage.appends
    results = await asyncio.gather(*(memory_log.append(b"e%d" % i) for i in range(500)))
    assert sorted(r.index for r in results) == list(range(500))
    assert storage.appends - before < 500 / 5, "entries were not batched"
    for r in results:
        assert r.checkpoint.size > r.index


async def test_inline_entries(memory_log: Log) -> None:
    a = await memory_log.append(b"inline data", committed=False)
    assert decode_leaf(a.leaf).payload == b"inline data" and a.salt is None
    stored = memory_log.entries(a.index, a.index + 1)[0]
    assert stored.payload is None and stored.leaf == a.leaf


async def test_idempotency_key_returns_original(memory_log: Log) -> None:
    key = b"k" * 16
    first = await memory_log.append(b"payload", key=key)
    again = await memory_log.append(b"payload", key=key)
    assert again.duplicate and again.index == first.index and again.leaf == first.leaf
    both = await asyncio.gather(
        memory_log.append(b"x", key=b"c" * 16), memory_log.append(b"x", key=b"c" * 16)
    )
    assert both[0].index == both[1].index
    grouped = await memory_log.submit([b"y", b"y"], keys=[b"g" * 16, b"g" * 16])
    assert grouped[0].index == grouped[1].index and grouped[1].duplicate
    assert memory_log.size == 3


async def test_pool_full_is_a_pushback(memory_storage: MemoryStorage, signer: NoteSigner) -> None:
    log = make_log(memory_storage, signer, max_pending=10)
    await log.start()
    try:
        futs = [log.submit([b"a"] * 5), log.submit([b"b"] * 5)]
        with pytest.raises(PushbackError) as err:
            log.submit([b"c"])
        assert err.value.retry_after > 0
        await asyncio.gather(*futs)
        assert (await log.append(b"d")).index == 10  # room again once durable
    finally:
        await log.close()


async def test_timestamps_never_decrease(memory_log: Log, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await memory_log.append(b"a")
    monkeypatch.setattr(logmod, "now_ms", lambda: first.timestamp_ms - 10_000)
    second = await memory_log.append(b"b")
    assert second.timestamp_ms >= first.timestamp_ms
    assert memory_log.storage.last_timestamp() >= second.timestamp_ms


async def test_storage_full_fails_the_batch_only(
    memory_storage: MemoryStorage, signer: NoteSigner
) -> None:
    log = make_log(memory_storage, signer)
    await log.start()
    try:
        await log.append(b"one")
        memory_storage.fail_next = "full"
        with pytest.raises(StorageFullError):
            await log.append(b"two")
        three = await log.append(b"three")
        assert three.index == 1 and log.fatal is None
        assert [e.index for e in memory_storage.get_entries(0, 2)] == [0, 1]
    finally:
        await log.close()
    assert fsck(memory_storage, parse_vkey(signer.vkey), ORIGIN).ok


@pytest.mark.parametrize("fault", ["before", "after"])
async def test_unknown_commit_state_stops_the_sequencer(
    memory_storage: MemoryStorage, signer: NoteSigner, fault: str
) -> None:
    log = make_log(memory_storage, signer)
    await log.start()
    await log.append(b"one")
    memory_storage.fail_next = fault  # type: ignore[assignment]
    with pytest.raises(SequencerFatalError):
        await log.append(b"two")
    with pytest.raises(SequencerFatalError):
        log.submit([b"three"])
    await log.close()
    # A fresh log over the same storage recovers exactly what was persisted.
    again = make_log(memory_storage, signer)
    assert again.size == (2 if fault == "after" else 1)
    assert fsck(memory_storage, parse_vkey(signer.vkey), ORIGIN).ok


async def test_publisher_signs_durable_trees_on_interval(
    memory_storage: MemoryStorage, signer: NoteSigner
) -> None:
    log = make_log(memory_storage, signer, publish_interval_ms=20)
    await log.start()
    try:
        first = log.published
        assert first is not None and first.size == 0
        await asyncio.sleep(0.1)
        assert log.stats["published"] >= 3  # re-signed without growth
        await log.append(b"x")
        cp = await log.wait_published(1)
        assert cp.size >= 1 and cp.root_hash == tree_hash(cp.size, memory_storage)
        verify_tree_head(
            log.tree_head_signer.public_pem(),  # type: ignore[union-attr]
            cp.tree_head_signature,
            cp.timestamp_ms,
            cp.size,
            cp.root_hash,
        )
    finally:
        await log.close()
    history = list(memory_storage.checkpoints())
    assert [h.size for h in history] == sorted({h.size for h in history})
    for old, new in itertools.pairwise(history):
        o = open_checkpoint(old.note, parse_vkey(signer.vkey))[0]
        n = open_checkpoint(new.note, parse_vkey(signer.vkey))[0]
        if o.size:
            from translog.core.merkle import prove_consistency

            verify_consistency(
                o.size,
                n.size,
                o.root_hash,
                n.root_hash,
                prove_consistency(o.size, n.size, memory_storage),
            )


async def test_close_drains_pending(memory_storage: MemoryStorage, signer: NoteSigner) -> None:
    log = make_log(memory_storage, signer)
    await log.start()
    futs = [log.submit([b"p%d" % i]) for i in range(200)]
    await log.close()
    results = [f.result()[0] for f in futs]
    assert sorted(r.index for r in results) == list(range(200))
    latest = memory_storage.latest_checkpoint()
    assert latest is not None and latest.size == 200
    with pytest.raises(PushbackError):
        log.submit([b"late"])


async def test_restart_on_lmdb_recovers_the_exact_tree(tmp_path: Path, signer: NoteSigner) -> None:
    storage = LMDBStorage(tmp_path / "db")
    log = make_log(storage, signer)
    await log.start()
    await asyncio.gather(*(log.append(b"%d" % i) for i in range(300)))
    root = log.root_at(300)
    await log.close()
    storage = LMDBStorage(tmp_path / "db")
    log = make_log(storage, signer)
    assert log.size == 300 and log.root_at(300) == root
    await log.start()
    more = await log.append(b"after restart")
    assert more.index == 300
    await log.close()
    storage = LMDBStorage(tmp_path / "db")
    assert fsck(storage, parse_vkey(signer.vkey), ORIGIN).ok
    storage.close()


def test_refuses_a_rolled_back_store(memory_storage: MemoryStorage, signer: NoteSigner) -> None:
    cp = Checkpoint(ORIGIN, 5, leaf_hash(b"x"))
    memory_storage.put_checkpoint(StoredCheckpoint(5, 1, sign_checkpoint(cp, signer)))
    with pytest.raises(StorageCorruptError, match="rolled back"):
        make_log(memory_storage, signer)


def test_refuses_a_store_whose_root_differs(
    memory_storage: MemoryStorage, signer: NoteSigner
) -> None:
    cp = Checkpoint(ORIGIN, 0, leaf_hash(b"not the empty root"))
    memory_storage.put_checkpoint(StoredCheckpoint(0, 1, sign_checkpoint(cp, signer)))
    with pytest.raises(StorageCorruptError, match="does not match"):
        make_log(memory_storage, signer)


def test_refuses_a_checkpoint_from_another_key(
    memory_storage: MemoryStorage, signer: NoteSigner
) -> None:
    other = NoteSigner.generate(ORIGIN)
    cp = Checkpoint(ORIGIN, 0, tree_hash(0, memory_storage))
    memory_storage.put_checkpoint(StoredCheckpoint(0, 1, sign_checkpoint(cp, other)))
    with pytest.raises(StorageCorruptError, match="does not verify"):
        make_log(memory_storage, signer)


async def test_promised_entries_survive_a_crash(
    memory_storage: MemoryStorage, signer: NoteSigner
) -> None:
    log = make_log(memory_storage, signer)
    await log.start()
    await log.append(b"before")
    # Stop the sequencer as a crash would: the pool is lost, the promise record is not.
    log._tasks[0].cancel()
    persisted: list[asyncio.Future[None]] = []
    log.submit([b"promised-1", b"promised-2"], keys=[b"p" * 16, None], persisted=persisted)
    await persisted[0]
    assert [p.entry.payload for p in memory_storage.promised()] == [b"promised-1", b"promised-2"]
    promised_leaves = [p.entry.leaf for p in memory_storage.promised()]

    again = make_log(memory_storage, signer)  # restart over the same storage
    await again.start()
    try:
        after = await again.append(b"after restart")
        dup = await again.append(b"promised-1", key=b"p" * 16)
    finally:
        await again.close()
    entries = memory_storage.get_entries(0, memory_storage.size())
    assert [e.leaf for e in entries[1:3]] == promised_leaves  # re-sequenced first, as promised
    assert after.index == 3 and dup.duplicate and dup.index == 1
    assert memory_storage.promised() == []
    stamps = [decode_leaf(e.leaf).timestamp_ms for e in entries]
    assert stamps == sorted(stamps)
    assert fsck(memory_storage, parse_vkey(signer.vkey), ORIGIN).ok


async def test_accept_prepared_keeps_timestamps_non_decreasing(memory_log: Log) -> None:
    salt = bytes(range(32))
    payload = b"prepared payload"
    fixed = memory_log.storage.last_timestamp() + 10_000
    leaves = [committed_leaf(fixed, payload, salt), inline_leaf(fixed, b"inline payload")]
    hashes = b"".join(leaf_hash(leaf) for leaf in leaves)
    [committed, inline], moved = memory_log.accept_prepared(fixed, [salt, None], leaves, hashes)
    assert not moved
    assert (committed.leaf, committed.salt, inline.leaf, inline.salt) == (
        *leaves[:1],
        salt,
        leaves[1],
        None,
    )
    assert (committed.leaf_hash, inline.leaf_hash) == (hashes[:32], hashes[32:])
    # Leaves built earlier (another worker's message got in first) move to the later time,
    # and are hashed again.
    early = [inline_leaf(fixed - 5000, b"x")]
    [later], moved = memory_log.accept_prepared(fixed - 5000, [None], early, leaf_hash(early[0]))
    assert moved and later.timestamp_ms == fixed and later.leaf == inline_leaf(fixed, b"x")
    assert later.leaf_hash == leaf_hash(later.leaf)
    with pytest.raises(MalformedError, match="timestamp"):
        memory_log.accept_prepared(fixed + 1, [None], early, leaf_hash(early[0]))
    with pytest.raises(MalformedError, match="one salt"):
        memory_log.accept_prepared(fixed, [None], leaves, hashes)
    with pytest.raises(MalformedError, match="timestamp"):
        too_big = inline_leaf(fixed, bytes(MAX_INLINE_PAYLOAD)) + b"x"
        memory_log.accept_prepared(fixed, [None], [too_big], bytes(32))
    appended = await memory_log.submit(
        [payload, None, None],  # type: ignore[list-item]
        accepted=[committed, inline, later],
    )
    stored = memory_log.entries(appended[0].index, appended[0].index + 3)
    assert [e.leaf for e in stored] == [committed.leaf, inline.leaf, later.leaf]
    assert stored[0].payload == payload and stored[0].salt == salt
    assert stored[1].payload is None and stored[1].salt is None
    assert [a.leaf_hash for a in appended] == [
        committed.leaf_hash,
        inline.leaf_hash,
        later.leaf_hash,
    ]


async def test_start_raises_the_young_gc_threshold_and_never_lowers_it() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, saved[1], saved[2])
        log = Log(MemoryStorage(), "example.com/log", NoteSigner.generate("example.com/log"))
        await log.start()
        assert gc.get_threshold() == (50_000, saved[1], saved[2])
        await log.close()
        gc.set_threshold(90_000, saved[1], saved[2])
        options = LogOptions(gc_young_threshold=10_000)
        log = Log(
            MemoryStorage(),
            "example.com/log",
            NoteSigner.generate("example.com/log"),
            None,
            options,
        )
        await log.start()
        assert gc.get_threshold()[0] == 90_000
        await log.close()
    finally:
        gc.set_threshold(*saved)


async def test_bundle_leaves_are_checked_on_every_record_layout(
    tmp_path: Path, signer: NoteSigner
) -> None:
    storage = LMDBStorage(tmp_path / "db")
    log = make_log(storage, signer)
    await log.start()
    done = await asyncio.gather(*(log.append(b"%d" % i) for i in range(20)))
    assert log.leaves(0, 20) == [e.leaf for e in log.entries(0, 20)]
    assert log.leaves(0, 20) == [a.leaf for a in sorted(done, key=lambda a: a.index)]
    # A record of the earlier layout (leaf, then salt and payload) with a bad payload: the
    # bundle path falls back to the full entry check, which refuses it.
    first = next(a for a in done if a.index == 3)
    assert first.salt is not None
    with storage.raw_env().begin(write=True) as txn:
        txn.put(
            (3).to_bytes(8, "big"),
            first.leaf + first.salt + b"not 3",
            db=storage.db_handles()["entries"],
        )
    with pytest.raises(StorageCorruptError, match="entry 3: the stored payload does not match"):
        log.leaves(0, 20)
    assert log.leaves(4, 20) == [e.leaf for e in log.entries(4, 20)]
    await log.close()


async def test_bulk_groups_answer_with_runs_equal_to_entry_by_entry(memory_log: Log) -> None:
    # Groups of 16 or more of one kind whose keys are all new take the columnar path; smaller
    # ones go entry by entry. Both must give the same Appended values for what was stored.
    committed = [b"c%d" % i for i in range(40)]
    inline = [b"i%d" % i for i in range(20)]
    bulk, small, keyed, flat = await asyncio.gather(
        memory_log.submit(committed),
        memory_log.submit([b"s1", b"s2"]),
        memory_log.submit([b"k%d" % i for i in range(20)], keys=[b"q" * 16] + [None] * 19),
        memory_log.submit(inline, committed=False),
    )
    assert isinstance(bulk, AppendedRun) and isinstance(flat, AppendedRun)
    assert isinstance(keyed, AppendedRun) and isinstance(small, list)
    for outcome, n in ((bulk, 40), (small, 2), (keyed, 20), (flat, 20)):
        items = list(outcome)
        assert len(outcome) == len(items) == n
        first = items[0].index
        assert [a.index for a in items] == list(range(first, first + n))
        stored = memory_log.entries(first, first + n)
        assert [a.leaf for a in items] == [e.leaf for e in stored]
        assert [a.salt for a in items] == [e.salt for e in stored]
        assert all(a.leaf_hash == leaf_hash(a.leaf) for a in items)
        assert all(a.checkpoint.size >= first + n and not a.duplicate for a in items)
        assert [decode_leaf(a.leaf).timestamp_ms for a in items] == [a.timestamp_ms for a in items]
    assert [e.payload for e in memory_log.entries(bulk[0].index, bulk[-1].index + 1)] == committed
    assert all(e.payload is None for e in memory_log.entries(flat[0].index, flat[-1].index + 1))
    # A run behaves as the list of its Appended values.
    items = list(bulk)
    assert bulk == items and items == bulk and bulk != items[:-1]
    assert bulk[-1] == items[-1] and bulk[-40] == items[0] and bulk[3:7] == items[3:7]
    assert bulk[::-1] == items[::-1]
    for bad in (40, -41):
        with pytest.raises(IndexError):
            bulk[bad]


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
async def test_keyed_bulk_groups_keep_idempotency(
    backend: str, tmp_path: Path, signer: NoteSigner
) -> None:
    # A large keyed group whose keys are all new is appended whole (one read for its keys);
    # a key stored before, earlier in the same batch, or repeated within the group sends the
    # group entry by entry, where that key maps to the earlier entry.
    storage = MemoryStorage() if backend == "memory" else LMDBStorage(tmp_path / "db")
    log = make_log(storage, signer)
    await log.start()
    keys = [b"%016d" % i for i in range(20)]
    payloads = [b"p%d" % i for i in range(20)]
    fresh = await log.submit(payloads, keys=[*keys[:10], None, *keys[10:19], None][:20])
    assert isinstance(fresh, AppendedRun) and [a.index for a in fresh] == list(range(20))
    assert storage.lookup_dedupe(keys[3]) == 3 and storage.lookup_dedupe(keys[10]) == 11
    assert storage.lookup_dedupe_many([keys[0], b"x" * 16, keys[12]]) == [0, None, 13]
    # a retry of the same group: every keyed entry is the stored one, the unkeyed ones are new
    again = await log.submit(payloads, keys=[*keys[:10], None, *keys[10:19], None][:20])
    assert isinstance(again, list)
    assert [a.index for a in again[:10]] == list(range(10)) and all(a.duplicate for a in again[:10])
    assert again[10].index == 20 and not again[10].duplicate
    assert [a.leaf for a in again[:10]] == [a.leaf for a in fresh[:10]]
    # one new key and one stored: only the new entries are added
    mixed = await log.submit(payloads, keys=[b"n" * 16, keys[5], *[None] * 18])
    assert mixed[1].duplicate and mixed[1].index == 5 and not mixed[0].duplicate
    assert all(a.duplicate for a in again[11:]) and log.size == 20 + 1 + 19
    # repeated within the group, and shared by two groups of one batch
    size = log.size
    rep = [b"r" * 16, *[b"s%015d" % i for i in range(18)], b"r" * 16]
    twice, first, second = await asyncio.gather(
        log.submit(payloads, keys=rep),
        log.submit(payloads, keys=[b"t%015d" % i for i in range(20)]),
        log.submit(payloads, keys=[b"t%015d" % i for i in range(20)]),
    )
    assert twice[19].duplicate and twice[19].index == twice[0].index
    assert isinstance(first, AppendedRun) and [a.index for a in second] == [a.index for a in first]
    assert all(a.duplicate for a in second) and log.size == size + 19 + 20
    stored = log.entries(first[0].index, first[0].index + 20)
    assert [e.payload for e in stored] == payloads
    await log.close()


async def test_accepted_runs_and_lists_are_the_same_submission(memory_log: Log) -> None:
    run = memory_log.accept([b"a%d" % i for i in range(20)], committed=True)
    assert all(isinstance(a, Accepted) for a in run)
    columns = AcceptedRun.of(run)
    assert list(columns) == run and columns[2:4] == run[2:4] and columns[-1] == run[-1]
    assert AcceptedRun.of(columns) is columns
    payloads = [b"a%d" % i for i in range(20)]
    appended = await memory_log.submit(payloads, accepted=columns)
    assert [a.leaf for a in appended] == [a.leaf for a in run]
    with pytest.raises(MalformedError, match="one accepted entry per payload"):
        memory_log.submit(payloads[:3], accepted=run[:2])
    with pytest.raises(MalformedError, match="different lengths"):
        AcceptedRun([b"x"], [], [1], [None])
    extended = AcceptedRun()
    extended.extend(columns)
    extended.extend(columns)
    assert list(extended) == run + run


async def test_accept_prepared_rebuilds_many_leaves_in_order(memory_log: Log) -> None:
    fixed = memory_log.storage.last_timestamp() + 10_000
    salts = [bytes([i]) * 32 for i in range(30)]
    leaves = [committed_leaf(fixed, b"p%d" % i, s) for i, s in enumerate(salts)]
    hashes = b"".join(leaf_hash(leaf) for leaf in leaves)
    got, moved = memory_log.accept_prepared(fixed, salts, leaves, hashes)
    assert not moved and got.leaves == leaves and got.salts == salts
    assert got.hashes == [leaf_hash(leaf) for leaf in leaves] and got.stamps == [fixed] * 30
    early = [committed_leaf(fixed - 7, b"p%d" % i, s) for i, s in enumerate(salts)]
    again, moved = memory_log.accept_prepared(
        fixed - 7, salts, early, b"".join(leaf_hash(leaf) for leaf in early)
    )
    assert moved and again.leaves == leaves and again.hashes == got.hashes
    mixed = [*leaves[:-1], committed_leaf(fixed - 1, b"p29", salts[29])]
    with pytest.raises(MalformedError, match="timestamp"):
        memory_log.accept_prepared(fixed, salts, mixed, hashes)
