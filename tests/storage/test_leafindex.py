"""The LSM leaf-hash index: tier policy, merges, lookups, upgrades and fsck's audit."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translog.core.leaf import inline_leaf
from translog.core.merkle import Frontier, leaf_hash
from translog.storage import leafindex
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage


def _batch(frontier: Frontier, leaves: list[bytes], ts: int = 1) -> WriteBatch:
    start = frontier.size
    nodes = []
    for leaf in leaves:
        nodes.extend(frontier.append(leaf_hash(leaf)))
    return WriteBatch(start, [NewEntry(leaf) for leaf in leaves], nodes, ts)


def _leaves(start: int, n: int) -> list[bytes]:
    return [inline_leaf(1, b"entry %d" % i) for i in range(start, start + n)]


@given(st.lists(st.integers(1, 20_000), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_policy_bounds_runs_and_keeps_tiers_ordered(sizes: list[int]) -> None:
    runs: list[int] = []
    for size in sizes:
        runs.append(size)
        take = leafindex.plan(runs)
        runs[-take:] = [sum(runs[-take:])]
        tiers = [leafindex.tier(s) for s in runs]
        assert tiers == sorted(tiers, reverse=True)  # never a bigger run behind a smaller one
        for t in set(tiers):
            assert tiers.count(t) < leafindex.FANOUT
    assert sum(runs) == sum(sizes)


def test_merge_rebases_and_sorts() -> None:
    rng = random.Random(1)
    hashes = [rng.randbytes(32) for _ in range(3000)]
    parts, lo = [], 0
    for n in (1000, 7, 1993):
        parts.append((leafindex.new_run_items(hashes[lo : lo + n]), lo))
        lo += n
    merged = leafindex.merge(parts)
    assert list(merged) == sorted(merged)
    assert sorted(x & 0xFFFFFFFF for x in merged) == list(range(3000))
    assert all(x >> 32 == leafindex.prefix(hashes[x & 0xFFFFFFFF]) for x in merged)


def test_every_leaf_is_found_across_merges(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    frontier = Frontier()
    rng = random.Random(2)
    sizes = [rng.choice((1, 3, 50, 700, 4096, 5000)) for _ in range(60)]
    for n in sizes:
        s.append(_batch(frontier, _leaves(frontier.size, n)))
    size = s.size()
    with s.raw_env().begin() as txn:
        runs = leafindex.decode_runs(txn.get(leafindex.META_RUNS, db=s.db_handles()["meta"]))
    assert runs[0].lo == 0 and runs[-1].hi == size and len(runs) < 4 * leafindex.FANOUT
    assert any(r.size > 4 * leafindex.BASE for r in runs)  # merges did happen
    for i in [*rng.sample(range(size), 500), 0, size - 1]:
        assert s.find_leaf_hash(leaf_hash(_leaves(i, 1)[0])) == i
    assert s.find_leaf_hash(hashlib.sha256(b"absent").digest()) is None
    assert s.find_leaf_hash(b"short") is None
    s.close()


def test_duplicate_leaves_give_the_smallest_index(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    frontier = Frontier()
    same = inline_leaf(1, b"same")
    for _ in range(9):  # nine runs: a merge puts copies from several batches into one run
        s.append(_batch(frontier, [*_leaves(frontier.size, 10), same]))
    assert s.find_leaf_hash(leaf_hash(same)) == 10
    s.close()


def test_prefix_collisions_are_resolved_by_the_stored_hash(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    frontier = Frontier()
    leaves = _leaves(0, 300)
    s.append(_batch(frontier, leaves))
    target = leaf_hash(leaves[123])
    twin = target[:4] + bytes(28)  # same prefix, different hash
    assert s.find_leaf_hash(twin) is None
    assert s.find_leaf_hash(target) == 123
    s.close()


def test_index_off_then_on_catches_up_at_open(tmp_path: Path) -> None:
    frontier = Frontier()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    s.append(_batch(frontier, _leaves(0, 100)))
    s.close()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22, index_leaf_hashes=False)
    s.append(_batch(frontier, _leaves(100, 100)))
    assert s.find_leaf_hash(leaf_hash(_leaves(150, 1)[0])) is None  # not indexed while off
    assert s.find_leaf_hash(leaf_hash(_leaves(50, 1)[0])) == 50
    s.close()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    assert s.find_leaf_hash(leaf_hash(_leaves(150, 1)[0])) == 150
    s.append(_batch(frontier, _leaves(200, 5)))
    assert s.find_leaf_hash(leaf_hash(_leaves(203, 1)[0])) == 203
    s.close()


def test_the_old_byhash_index_is_replaced_at_open(tmp_path: Path) -> None:
    frontier = Frontier()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22, index_leaf_hashes=False)
    s.append(_batch(frontier, _leaves(0, 70)))
    s.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=64)
    legacy = env.open_db(b"byhash", dupsort=True)
    with env.begin(write=True) as txn:
        txn.put(b"\0" * 8, b"\0" * 8, db=legacy)
    env.close()
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    assert s.find_leaf_hash(leaf_hash(_leaves(42, 1)[0])) == 42
    s.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=64)
    with pytest.raises(lmdb.NotFoundError):
        env.open_db(b"byhash", create=False)
    env.close()


def test_auditor_passes_a_clean_index_and_names_a_changed_run(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 22)
    frontier = Frontier()
    for n in (500, 500, 4096):
        s.append(_batch(frontier, _leaves(frontier.size, n)))
    hashes = s.read_hashes([(0, i) for i in range(s.size())])
    auditor = s.leaf_index_auditor()
    assert auditor is not None
    assert auditor.feed(0, hashes[:1000]) + auditor.feed(1000, hashes[1000:]) == []
    assert auditor.finish() == []
    wrong = list(hashes)
    wrong[700] = hashlib.sha256(b"x").digest()
    auditor = s.leaf_index_auditor()
    assert auditor is not None
    problems = auditor.feed(0, wrong)
    assert problems and "leaf-hash index: run [" in problems[0][1]
    s.close()
