"""The background merger of the leaf-hash index: off the commit path, crash-safe, fsck-clean.

Merges are made small here (``inline_merge_max``, ``MERGE_SLICE``, ``WRITE_ITEMS``) so that a
few thousand entries exercise every step: merges deferred by ``append``, multi-slice merges
written in several transactions, installs, deletion of the inputs, and kills in between.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import threading
from array import array
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from translog.core.leaf import inline_leaf
from translog.core.merkle import Frontier, leaf_hash
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import StorageError
from translog.log.fsck import fsck
from translog.storage import leafindex
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "merger.example/log"
SMALL = {"MERGE_SLICE": 300, "WRITE_ITEMS": 2 * leafindex.ITEMS_PER_BLOCK, "COLLECT_BLOCKS": 2}


@pytest.fixture(autouse=True)
def small_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SMALL.items():
        monkeypatch.setattr(leafindex, name, value)


def _leaves(start: int, n: int) -> list[bytes]:
    return [inline_leaf(1, b"entry %d" % i) for i in range(start, start + n)]


def _append(s: LMDBStorage, frontier: Frontier, n: int) -> None:
    start = frontier.size
    leaves = _leaves(start, n)
    nodes = []
    for leaf in leaves:
        nodes.extend(frontier.append(leaf_hash(leaf)))
    s.append(WriteBatch(start, [NewEntry(leaf) for leaf in leaves], nodes, 1))


def _runs(s: LMDBStorage) -> tuple[leafindex.Run, ...]:
    meta = s.db_handles()["meta"]
    with s.raw_env().begin() as txn:
        raw, big = txn.get(leafindex.META_RUNS, db=meta), txn.get(leafindex.META_BIG, db=meta)
        return leafindex.decode_runs(raw, big)


def _spare(s: LMDBStorage) -> tuple[int, ...]:
    with s.raw_env().begin() as txn:
        return leafindex.decode_ids(txn.get(leafindex.META_SPARE, db=s.db_handles()["meta"]))


def _all_found(s: LMDBStorage, sample: int = 0) -> None:
    size = s.size()
    indexes = range(size) if not sample else random.Random(size).sample(range(size), sample)
    for i in indexes:
        assert s.find_leaf_hash(leaf_hash(_leaves(i, 1)[0])) == i, i


def _audit(s: LMDBStorage) -> tuple[list[str], list[str]]:
    """(problems, notes) of the leaf-hash index auditor over the whole log."""
    auditor = s.leaf_index_auditor()
    assert auditor is not None
    hashes = s.read_hashes([(0, i) for i in range(s.size())])
    found = auditor.feed(0, hashes) + auditor.finish()
    return [text for _, text in found], auditor.notes


class Pause:
    """A merge hook that stops the merger at one stage until released."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.reached = threading.Event()
        self.go = threading.Event()
        self.seen: list[str] = []

    def __call__(self, stage: str) -> None:
        self.seen.append(stage)
        if stage == self.stage and not self.go.is_set():
            self.reached.set()
            assert self.go.wait(30), "the test never released the merger"


def _make_merge_due(s: LMDBStorage) -> Frontier:
    """Eight tier-0 runs of 600 in a fresh store: a merge of 4,800 is due. Returns the tree's
    frontier, for later batches."""
    frontier = Frontier()
    for _ in range(leafindex.FANOUT):
        _append(s, frontier, 600)
    return frontier


def _paused_merge(s: LMDBStorage, stage: str) -> Pause:
    """Make a merge due and hold the merger at ``stage``; the caller releases ``pause.go``."""
    pause = Pause(stage)
    s._merge_hook = pause
    _make_merge_due(s)
    assert pause.reached.wait(10)
    return pause


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LMDBStorage]:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 24, inline_merge_max=1000)
    yield s
    s.close()


# -- the policy -------------------------------------------------------------------------------


def _in_order(sizes: list[int]) -> bool:
    tiers = [leafindex.tier(s) for s in sizes]
    return tiers == sorted(tiers, reverse=True) and all(
        tiers.count(t) < leafindex.FANOUT for t in set(tiers)
    )


@given(
    st.lists(st.integers(1, 20_000), min_size=1, max_size=200),
    st.sampled_from([0, 1000, 1 << 15, leafindex.MAX_RUN]),
)
@settings(max_examples=60, deadline=None)
def test_deferred_merges_end_in_the_same_order(batches: list[int], limit: int) -> None:
    runs: list[int] = []
    for size in batches:
        runs.append(size)
        take = leafindex.plan(runs, limit)
        assert take == 1 or sum(runs[-take:]) <= limit  # nothing over the limit inline
        runs[-take:] = [sum(runs[-take:])]
        if limit == leafindex.MAX_RUN:
            assert leafindex.due(runs) is None  # the unbounded cascade leaves nothing due
    while (job := leafindex.due(runs)) is not None:
        i, j = job
        assert j - i >= 2
        runs[i:j] = [sum(runs[i:j])]
    assert _in_order(runs)
    assert sum(runs) == sum(batches)


@given(st.lists(st.integers(0, 700), min_size=1, max_size=6), st.integers(1, 900))
@settings(max_examples=60, deadline=None)
def test_merge_stream_is_the_merge(sizes: list[int], slice_items: int) -> None:
    rng = random.Random(sum(sizes) * 7 + slice_items)
    runs, parts, lo = [], [], 0
    for rid, n in enumerate(sizes):
        items = leafindex.new_run_items([rng.randbytes(32) for _ in range(n)])
        runs.append(leafindex.Run(rid, lo, lo + n))
        parts.append((items, lo))
        lo += n
    if not lo:
        return

    def read(wanted: object, low: int, high: int) -> list[array[int]]:
        return [array("Q", (x for x in items if low <= x < high)) for items, _ in parts]

    pieces = list(leafindex.merge_stream(read, runs, slice_items))
    assert array("Q", [x for p in pieces for x in p]) == leafindex.merge(parts)


# -- off the commit path ----------------------------------------------------------------------


def test_a_large_merge_is_not_done_inside_append(store: LMDBStorage) -> None:
    pause = Pause("start")
    store._merge_hook = pause
    frontier = _make_merge_due(store)
    assert pause.reached.wait(10)
    # append returned with the merge pending: eight runs, all listed, every leaf found
    assert [r.size for r in _runs(store)] == [600] * 8
    _all_found(store)
    for _ in range(3):  # batches go on while the merger holds its inputs
        _append(store, frontier, 100)
    assert [r.size for r in _runs(store)][:8] == [600] * 8
    _all_found(store)
    pause.go.set()
    assert store.wait_for_merges(30)
    runs = _runs(store)
    assert runs[0] == leafindex.Run(runs[0].rid, 0, 4800, True)
    assert [r.size for r in runs[1:]] == [100] * 3
    assert _spare(store) == ()
    _all_found(store)
    assert _audit(store) == ([], [])
    assert {"start", "slice", "chunk", "install", "collect"} <= set(pause.seen)
    # the inputs' blocks are gone from leafidx: only the three new runs remain there
    with store.raw_env().begin() as txn, txn.cursor(db=store.db_handles()["leafidx"]) as cur:
        rids = {bytes(k[:4]) for k, _ in cur}
    assert len(rids) == 3


def test_lookups_stay_correct_while_a_merged_run_is_half_written(store: LMDBStorage) -> None:
    pause = _paused_merge(store, "chunk")
    spare = _spare(store)
    assert len(spare) == 1  # the run being built, with some blocks written
    _all_found(store)
    problems, notes = _audit(store)
    assert problems == []
    assert len(notes) == 1 and f"run {spare[0]} " in notes[0] and "being built" in notes[0]
    pause.go.set()
    assert store.wait_for_merges(30)
    _all_found(store)
    assert _audit(store) == ([], [])


SECOND_OPEN = """
import json, sys
from translog.log.fsck import fsck
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.storage.lmdb import LMDBStorage
from tests.storage import test_merger as t
s = LMDBStorage(sys.argv[1], map_size=1 << 24, inline_merge_max=1000)
report = fsck(s, parse_vkey(NoteSigner.generate(t.ORIGIN).vkey), t.ORIGIN)
print(json.dumps([list(t._spare(s)), report.problems, report.notes, s.wait_for_merges(1)]))
s.close()
"""


def test_a_second_open_leaves_a_live_merge_alone(store: LMDBStorage) -> None:
    """``translog fsck`` (a writable open, another process) next to a running server must not
    reclaim the run the server's merger is building."""
    pause = _paused_merge(store, "chunk")
    building = _spare(store)
    assert building
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SECOND_OPEN), str(store.path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    spare, problems, notes, idle = json.loads(done.stdout)
    assert tuple(spare) == building == _spare(store)  # not reclaimed
    assert problems == [] and len(notes) == 1 and idle  # no merger of its own
    pause.go.set()
    assert store.wait_for_merges(30)
    assert _spare(store) == () and _runs(store)[0].big
    _all_found(store)
    assert _audit(store) == ([], [])


def test_cascades_and_an_idle_merger(store: LMDBStorage) -> None:
    frontier = Frontier()
    rng = random.Random(5)
    for _ in range(150):
        _append(store, frontier, rng.choice((1, 7, 64, 300)))
    assert store.wait_for_merges(60)
    runs = _runs(store)
    assert leafindex.due([r.size for r in runs]) is None
    assert any(r.big for r in runs) and _spare(store) == ()
    _all_found(store, 500)
    assert _audit(store) == ([], [])
    assert store.wait_for_merges(5)  # nothing to do: returns at once


def test_a_failed_merge_is_retried_and_its_blocks_reclaimed(store: LMDBStorage) -> None:
    failures: list[str] = []

    def fail(stage: str) -> None:
        if stage == "chunk":
            failures.append(stage)
            raise RuntimeError("injected")

    store._merge_hook = fail
    _make_merge_due(store)
    with pytest.raises(StorageError, match="injected"):
        store.wait_for_merges(30)
    assert failures and _spare(store)  # a half-written run is left spare
    _all_found(store)
    assert _audit(store)[0] == []
    store._merge_hook = None
    assert store.wait_for_merges(60)  # retried after the back-off
    assert _spare(store) == ()
    assert any(r.big for r in _runs(store))
    _all_found(store)
    assert _audit(store) == ([], [])


# -- crash safety -----------------------------------------------------------------------------


def _check_reopened(path: Path) -> None:
    """fsck passes on the store as the crash left it, and after a writable reopen."""
    verifier = parse_vkey(NoteSigner.generate(ORIGIN).vkey)
    s = LMDBStorage(path, readonly=True)
    try:
        report = fsck(s, verifier, ORIGIN)
        assert report.ok, report.problems
        assert bool(report.notes) == bool(_spare(s))  # spare blocks are named, not failed
        _all_found(s)
    finally:
        s.close()
    s = LMDBStorage(path, inline_merge_max=1000)
    try:
        assert _spare(s) == ()  # an unfinished merge is reclaimed at open
        report = fsck(s, verifier, ORIGIN)
        assert report.ok and report.notes == [], (report.problems, report.notes)
        _all_found(s)
        frontier = Frontier()
        frontier.extend(s.read_hashes([(0, i) for i in range(s.size())]))
        _append(s, frontier, 10)  # the next batch finds the merge still due
        assert s.wait_for_merges(30)
        assert leafindex.due([r.size for r in _runs(s)]) is None
        _all_found(s)
        assert _audit(s) == ([], [])
    finally:
        s.close()


def test_abandoned_at_close_mid_merge(tmp_path: Path) -> None:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 24, inline_merge_max=1000)
    pause = _paused_merge(s, "chunk")
    closing = threading.Thread(target=s.close)
    closing.start()
    pause.go.set()
    closing.join(10)
    assert not closing.is_alive()
    _check_reopened(tmp_path / "db")


CRASH = """
import os, sys
from translog.storage import leafindex
from translog.storage.lmdb import LMDBStorage
from tests.storage import test_merger as t
for name, value in t.SMALL.items():
    setattr(leafindex, name, value)
stage, count = sys.argv[2], int(sys.argv[3])
seen = []
def hook(name):
    seen.append(name)
    if seen.count(stage) == count:
        os._exit(17)
s = LMDBStorage(sys.argv[1], map_size=1 << 24, inline_merge_max=1000)
s._merge_hook = hook
frontier = t.Frontier()
for _ in range(2 * leafindex.FANOUT):
    t._append(s, frontier, 600)
s.wait_for_merges(30)
print("no crash", seen)
"""


@pytest.mark.parametrize(
    ("stage", "count"),
    [("slice", 3), ("chunk", 2), ("install", 1), ("collect", 3)],
)
def test_killed_mid_merge(tmp_path: Path, stage: str, count: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CRASH), str(tmp_path / "db"), stage, str(count)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 17, done.stdout + done.stderr
    _check_reopened(tmp_path / "db")


# -- fsck still catches a bad merged run ------------------------------------------------------


def _merged(tmp_path: Path) -> LMDBStorage:
    s = LMDBStorage(tmp_path / "db", map_size=1 << 24, inline_merge_max=1000)
    _make_merge_due(s)
    assert s.wait_for_merges(30)
    assert _runs(s)[0].big
    return s


@pytest.mark.parametrize("how", ["flip", "delete", "stray"])
def test_fsck_fails_on_a_damaged_merged_run(tmp_path: Path, how: str) -> None:
    s = _merged(tmp_path)
    db = s.db_handles()["leafbig"]
    with s.raw_env().begin(write=True) as txn:
        cur = txn.cursor(db=db)
        assert cur.last()
        key, value = bytes(cur.key()), bytearray(cur.value())
        if how == "flip":
            value[13] ^= 0x01
            txn.put(key, bytes(value), db=db)
        elif how == "delete":
            txn.delete(key, db=db)
        else:  # a block of a run that is neither listed nor spare
            txn.put(b"\xff\xff\xff\xf0" + key[4:], bytes(value), db=db)
    report = fsck(s, parse_vkey(NoteSigner.generate(ORIGIN).vkey), ORIGIN)
    s.close()
    assert not report.ok
    assert "leaf-hash index" in report.problems[0]
