"""The leaf-hash index of the LMDB backend: sorted runs merged by size tier (an LSM tree).

It answers "which index has this leaf hash?" for ``get-proof-by-hash`` and ``prove
--leaf-hash``, and it is append-friendly: every batch adds one sorted run, written with
``MDB_APPEND``, instead of inserting random keys into a B-tree (which dirtied about one page
per entry once the index outgrew a batch, see benchmarks/RESULTS.md).

**Items.** An item is a u64: the first 4 bytes of the leaf hash read as a little-endian u32
(the *prefix*) in the high half, and the entry's offset from the start of its run in the low
half. Items of a run are distinct, and a run is sorted by item, so all candidates for a prefix
sit together, in index order. The prefix is only a filter: a lookup checks each candidate
against the stored level-0 hash, so prefix collisions cost a read and never a wrong answer.

**Runs.** A run covers a contiguous range of indexes ``[lo, hi)``; the runs, oldest first,
cover ``[0, upto)`` without gaps. A run is stored as blocks of up to 248 items (1,984 bytes,
two blocks to a 4 KiB page, little-endian u64s), under the key ``u32 run id (big-endian) ||
first item of the block (u64, big-endian)``, in one of two sub-databases: ``leafidx`` holds the
runs written by batches (and the small merges done inline), ``leafbig`` the runs built by the
background merger. Run ids come from one counter and only grow, and each sub-database has one
writer (the batch path, the merger), so a run's blocks are always an ``MDB_APPEND`` at the end
of its tree: pages fill completely (writing a run into the middle of a tree left one block
per page). ``meta`` records (all big-endian):

* ``leafidx``: the listed runs, oldest first, ``u32 id || u64 lo || u64 hi`` each: the index
  is exactly these runs;
* ``leafidx-next``: u64, the next run id;
* ``leafidx-big``: u32 ids of the listed runs stored in ``leafbig`` (absent: none);
* ``leafidx-spare``: u32 ids of runs whose blocks exist but are not listed: the run the merger
  is building, and inputs of a finished merge whose blocks are still being deleted. They are
  never read by lookups; opening the store writable deletes them (an unfinished build is
  reclaimed and redone later), and fsck skips them with a note.

**Tiers.** A run of fewer than :data:`BASE` items is in tier 0; otherwise in tier
``1 + floor(log_F(size / BASE))`` with ``F`` = :data:`FANOUT`. Whenever :data:`FANOUT` runs
share a tier they are merged into one, and a run is never left behind a run of a lower tier
(:func:`plan`, :func:`due`). Each entry is therefore rewritten about ``log_F(n / BASE)``
times, and a lookup probes at most ``(F - 1)`` runs per tier (a few more while a merge is
pending).

**Merging.** A merge costs about 1 µs of Python per item. The merges a batch triggers are done
in the batch's own write transaction only up to a size limit (``inline_merge_max`` of
``LMDBStorage``, default :data:`INLINE_MAX`); larger ones are left to the background merger
(``translog.storage.lmdb``): it computes the merged run from the immutable input runs with
short read transactions, slice by slice (:func:`merge_stream`), writes it under a spare id in
write transactions of at most :data:`WRITE_ITEMS` items, and installs it in one transaction
that lists it and unlists (spares) the inputs. A lookup reads the directory from its own
snapshot, so it sees either the inputs or the merged run, never a half-built one.

**Memory.** An inline merge holds its inputs and output packed (16 bytes per item, at most
``16 * inline_merge_max`` bytes) plus one slice of Python ints. A background merge holds one
slice (:data:`MERGE_SLICE` items, about 40 bytes each as Python ints, plus one block per
input) and the unwritten output (under :data:`WRITE_ITEMS` + :data:`MERGE_SLICE` items, 8
bytes each): about 3 MB whatever the size of the run. Slices cut the item space into equal
ranges, so the bound holds because the 32-bit prefixes of leaf hashes are uniform; only many
entries with the same leaf hash prefix (identical leaves, or ground hashes) fill one slice.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import secrets
import struct
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lmdb

ITEMS_PER_BLOCK = 248
"""Items per stored block: 1,984-byte values, two to a 4 KiB page like the hash chunks."""
BLOCK_BYTES = ITEMS_PER_BLOCK * 8
FANOUT = 8
"""Runs of one tier that are merged into one run of the next tier."""
BASE = 4096
"""Runs smaller than this (one batch at most) are tier 0."""
MAX_RUN = (1 << 32) - 1
"""Offsets are u32: runs never grow past this many items (they just stop merging)."""
INLINE_MAX = 1 << 15
"""Default largest merge done inside a batch's transaction, in items. Measured alone on the
2-vCPU benchmark machine, a merge adds about 0.3-0.4 µs per item to its batch's commit: 8-15
ms at 2^15 (a batch commit of 64 entries takes about 7 ms there), 70 ms at 2^18, 0.8 s at
2^21 (``python -m benchmarks.bench_stall --merge-costs``; more on a busy machine). Tier-2
merges of 8 full tier-1 runs (32,768 items) stay inline; everything from tier 3 up goes to
the background merger, which costs a merge two or three extra small transactions."""
MERGE_SLICE = 1 << 15
"""Items per slice of a background merge: one slice's sort holds the GIL for a few ms."""
WRITE_ITEMS = 1 << 17
"""Items per write transaction of a background merge (about 1 MB of blocks)."""
COLLECT_BLOCKS = 1 << 10
"""Blocks of spare runs deleted per write transaction (about 250,000 items)."""
_SLICE = 1 << 17
"""Items per slice of an inline merge (about 5 MB of Python ints at a time)."""
_LOW = (1 << 32) - 1
_MAX_ITEM = (1 << 64) - 1
_RUN = struct.Struct(">IQQ")
_RID = struct.Struct(">I")
_KEY = struct.Struct(">IQ")
_U64 = struct.Struct(">Q")
_LITTLE = sys.byteorder == "little"
META_RUNS = b"leafidx"
META_NEXT = b"leafidx-next"
META_BIG = b"leafidx-big"
META_SPARE = b"leafidx-spare"


@dataclass(frozen=True, slots=True)
class Run:
    """One sorted run: its id, the index range ``[lo, hi)`` it covers, and whether its blocks
    are in ``leafbig`` (built by the background merger) rather than ``leafidx``."""

    rid: int
    lo: int
    hi: int
    big: bool = False

    @property
    def size(self) -> int:
        """Items in the run."""
        return self.hi - self.lo


def prefix(leaf_hash: bytes) -> int:
    """The 32-bit prefix of a leaf hash that items are sorted by."""
    return int.from_bytes(leaf_hash[:4], "little")


def encode_runs(runs: Sequence[Run]) -> bytes:
    """The ``meta`` record listing ``runs``."""
    return b"".join(_RUN.pack(r.rid, r.lo, r.hi) for r in runs)


def encode_ids(ids: Sequence[int]) -> bytes:
    """A ``meta`` record of run ids (``leafidx-big``, ``leafidx-spare``)."""
    return b"".join(_RID.pack(i) for i in ids)


def decode_ids(raw: bytes | memoryview | None) -> tuple[int, ...]:
    """Parse a ``meta`` record of run ids (empty when absent)."""
    if not raw:
        return ()
    if len(raw) % _RID.size:
        raise ValueError(f"leaf-hash index id list has {len(raw)} bytes")
    return tuple(i for (i,) in _RID.iter_unpack(raw))


def decode_runs(
    raw: bytes | memoryview | None, big: bytes | memoryview | None = None
) -> tuple[Run, ...]:
    """Parse the ``meta`` records ``leafidx`` and ``leafidx-big`` (empty when absent)."""
    if not raw:
        return ()
    if len(raw) % _RUN.size:
        raise ValueError(f"leaf-hash index directory has {len(raw)} bytes")
    in_big = set(decode_ids(big))
    return tuple(Run(i, lo, hi, i in in_big) for i, lo, hi in _RUN.iter_unpack(raw))


def tier(size: int) -> int:
    """The size tier of a run of ``size`` items."""
    t = 0
    while size >= BASE:
        size //= FANOUT
        t += 1
    return t


def plan(sizes: Sequence[int], limit: int = MAX_RUN) -> int:
    """How many trailing runs (the last being the new one) end up merged into one.

    Simulates the cascade: fold a run into a newer one of a higher tier, and merge the newest
    runs whenever :data:`FANOUT` of them share a tier. Stops before a merge that would build a
    run over ``limit`` items (never over :data:`MAX_RUN`); :func:`due` finds what is left.
    """
    limit = min(limit, MAX_RUN)
    stack = [(s, 1) for s in sizes]
    while len(stack) >= 2:
        t = tier(stack[-1][0])
        if tier(stack[-2][0]) < t:
            take = 2
        else:
            take = 0
            while take < len(stack) and tier(stack[-1 - take][0]) == t:
                take += 1
            if take < FANOUT:
                break
        folded = stack[-take:]
        size = sum(s for s, _ in folded)
        if size > limit:
            break
        stack[-take:] = [(size, sum(c for _, c in folded))]
    return stack[-1][1]


def due(sizes: Sequence[int]) -> tuple[int, int] | None:
    """The oldest merge the tier policy still owes, as the slice ``[i, j)`` of the runs.

    A run of a lower tier behind a newer run of a higher tier is folded into it (with every
    lower-tier run right before it); :data:`FANOUT` or more consecutive runs of one tier are
    merged. None when the runs are in order (what :func:`plan` leaves without a limit).
    """
    tiers = [tier(s) for s in sizes]
    n = len(tiers)
    i = 0
    while i < n:
        j = i
        while j < n and tiers[j] == tiers[i]:
            j += 1
        if j < n and tiers[j] > tiers[i]:
            k = i
            while k > 0 and tiers[k - 1] < tiers[j]:
                k -= 1
            if sum(sizes[k : j + 1]) <= MAX_RUN:
                return k, j + 1
        elif j - i >= FANOUT and sum(sizes[i:j]) <= MAX_RUN:
            return i, j
        i = j
    return None


def _to_bytes(items: array[int]) -> bytes:
    if not _LITTLE:
        items = array("Q", items)
        items.byteswap()
    return items.tobytes()


def _from_bytes(data: bytes | bytearray | memoryview) -> array[int]:
    items = array("Q")
    items.frombytes(data)
    if not _LITTLE:
        items.byteswap()
    return items


def new_run_items(hashes: Sequence[bytes]) -> array[int]:
    """The sorted items of a run of consecutive leaf hashes (offsets 0, 1, …).

    The little-endian item bytes are assembled with strided copies (offset, then the first
    4 bytes of the hash), so the only per-item Python work is the sort.
    """
    n = len(hashes)
    joined = b"".join(hashes)
    offsets = array("I", range(n))
    if not _LITTLE:
        offsets.byteswap()
    raw = offsets.tobytes()
    packed = bytearray(8 * n)
    for b in range(4):
        packed[b::8] = raw[b::4]
        packed[4 + b :: 8] = joined[b::32]
    items = _from_bytes(packed)
    return array("Q", sorted(items))


def merge(parts: Sequence[tuple[array[int], int]]) -> array[int]:
    """Merge sorted runs ``(items, delta)`` (delta = run.lo - merged.lo, so the first part's is
    0) into one sorted run, in memory: :func:`merge_stream` over the parts, in slices of about
    ``_SLICE`` items, so at most one slice is held as Python ints.
    """

    def read(runs: Sequence[Run], low: int, high: int) -> list[array[int]]:
        return [
            items[bisect.bisect_left(items, low) : bisect.bisect_left(items, high)]
            for items, _ in parts
        ]

    runs = [Run(k, delta, delta + len(items)) for k, (items, delta) in enumerate(parts)]
    out = array("Q")
    for piece in merge_stream(read, runs, _SLICE):
        out.extend(piece)
    return out


Reader = Callable[[Sequence[Run], int, int], list["array[int]"]]
"""``read(runs, low, high)``: for each run, its items ``x`` with ``low <= x < high``."""


def merge_stream(read: Reader, inputs: Sequence[Run], slice_items: int) -> Iterator[array[int]]:
    """The merged run of ``inputs`` (consecutive runs, oldest first), slice by slice.

    The item space is cut into equal ranges of about ``slice_items`` items in all; each yield is
    the next sorted piece of the merged run, so their concatenation is the whole run. Only one
    slice is ever held (see the module docstring), and ``read`` is called once per slice, so
    it can use a short read transaction each time.
    """
    base = inputs[0].lo
    total = sum(r.size for r in inputs)
    slices = max(1, -(-total // max(1, slice_items)))
    low = 0
    for s in range(1, slices + 1):
        high = (s << 64) // slices
        chunk: list[int] = []
        for run, items in zip(inputs, read(inputs, low, high), strict=True):
            delta = run.lo - base
            chunk.extend(map(operator.add, items, itertools.repeat(delta)) if delta else items)
        chunk.sort()
        yield array("Q", chunk)
        low = high


def read_range(txn: lmdb.Transaction, db: Any, run: Run, low: int, high: int) -> array[int]:
    """The items ``x`` of ``run`` with ``low <= x < high`` (``high`` may be ``2**64``)."""
    rid = _RID.pack(run.rid)
    start = _KEY.pack(run.rid, low)
    values = []
    with txn.cursor(db=db) as cur:
        # The block holding ``low`` is the last one keyed at or below it.
        found = cur.set_range(start)
        if not found or cur.key() != start:
            back = cur.prev() if found else cur.last()
            found = back if back and cur.key()[:4] == rid else cur.set_range(start)
        while found:
            key = cur.key()
            if key[:4] != rid or _U64.unpack_from(key, 4)[0] >= high:
                break
            values.append(cur.value())
            found = cur.next()
    items = _from_bytes(b"".join(values))
    return items[bisect.bisect_left(items, low) : bisect.bisect_left(items, high)]


def blocks(rid: int, items: array[int]) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of a run, in key order."""
    data = _to_bytes(items)
    out = []
    for start in range(0, len(items), ITEMS_PER_BLOCK):
        key = _KEY.pack(rid, items[start])
        out.append((key, data[start * 8 : (start + ITEMS_PER_BLOCK) * 8]))
    return out


def read_run(txn: lmdb.Transaction, db: Any, rid: int) -> array[int]:
    """All items of run ``rid`` (empty if it has no blocks)."""
    prefix_key = _RID.pack(rid)
    values = []
    with txn.cursor(db=db) as cur:
        if cur.set_range(prefix_key):
            for key, value in cur:
                if key[:4] != prefix_key:
                    break
                values.append(value)
    return _from_bytes(b"".join(values))


def delete_run(txn: lmdb.Transaction, db: Any, rid: int, limit: int = -1) -> int:
    """Delete the blocks of run ``rid``, at most ``limit`` of them (all when negative).

    Returns how many were deleted: fewer than ``limit`` means none is left.
    """
    prefix_key = _RID.pack(rid)
    deleted = 0
    with txn.cursor(db=db) as cur:
        found = cur.set_range(prefix_key)
        while found and cur.key()[:4] == prefix_key and deleted != limit:
            found = cur.delete()
            deleted += 1
    return deleted


def add_run(
    txn: lmdb.Transaction,
    dbs: tuple[Any, Any],
    runs: tuple[Run, ...],
    next_rid: int,
    lo: int,
    items: array[int],
    take: int,
) -> tuple[tuple[Run, ...], int]:
    """Add the run of ``[lo, lo + len(items))`` to ``dbs[0]``, merged with the last
    ``take - 1`` runs (``take`` from :func:`plan`).

    Returns the new directory and next run id; the caller stores both in ``meta``.
    """
    hi = lo + len(items)
    if runs and runs[-1].hi != lo:
        raise ValueError(f"leaf-hash index covers [0, {runs[-1].hi}), cannot add at {lo}")
    if not items:
        return runs, next_rid
    merged = runs[len(runs) - take + 1 :]
    base = merged[0].lo if merged else lo
    if merged:
        parts = [(read_run(txn, dbs[r.big], r.rid), r.lo - base) for r in merged]
        parts.append((items, lo - base))
        items = merge(parts)
        for r in merged:
            delete_run(txn, dbs[r.big], r.rid)
    run = Run(next_rid, base, hi)
    with txn.cursor(db=dbs[0]) as cur:
        cur.putmulti(blocks(run.rid, items), append=True)
    return (*runs[: len(runs) - len(merged)], run), next_rid + 1


def candidates(txn: lmdb.Transaction, db: Any, run: Run, leaf_hash: bytes) -> list[int]:
    """Indexes in ``run`` whose leaf hash has the prefix of ``leaf_hash``, ascending.

    ``txn`` must have ``buffers=True`` (the blocks are read in place).
    """
    p = prefix(leaf_hash)
    first, stop = p << 32, (p + 1) << 32
    rid = _RID.pack(run.rid)
    found: list[int] = []
    with txn.cursor(db=db) as cur:
        # The last block that starts below ``stop``, then earlier ones while they may hold more.
        after = _KEY.pack(run.rid, stop) if stop <= _MAX_ITEM else _RID.pack(run.rid + 1)
        ok = cur.prev() if cur.set_range(after) else cur.last()
        while ok:
            key = cur.key()
            if key[:4] != rid:
                break
            items = _view(cur.value())
            j = bisect.bisect_left(items, first)
            more = []
            while j < len(items) and items[j] < stop:
                more.append(run.lo + (items[j] & _LOW))
                j += 1
            found[:0] = more
            if _U64.unpack_from(key, 4)[0] < first:
                break
            ok = cur.prev()
    return found


class _Swapped(Sequence[int]):
    """Little-endian u64s read one at a time (big-endian hosts only)."""

    def __init__(self, data: memoryview | bytes) -> None:
        self._data = data

    def __len__(self) -> int:
        return len(self._data) // 8

    def __getitem__(self, i: Any) -> Any:
        return struct.unpack_from("<Q", self._data, i * 8)[0]


def _view(value: memoryview | bytes) -> Sequence[int]:
    if _LITTLE:
        return memoryview(value).cast("Q")
    return _Swapped(value)


class Auditor:
    """fsck's check of the index: the runs must hold exactly the items of the leaf hashes.

    At construction every block is read once (in one read transaction): runs must be listed
    contiguously from 0, each stored strictly sorted in its sub-database, keyed by its first
    item, with the right number of items, and no block may belong to a run that is neither
    listed nor spare. Blocks of spare runs (being built or awaiting deletion) are not part of
    the index: they are counted and named in :attr:`notes`. Each run is summarised by a
    multiset fingerprint, the product of ``(r - item)`` modulo the prime ``2**127 - 1`` for a
    random ``r`` drawn now. :meth:`feed` computes the same fingerprint from the recomputed leaf
    hashes; a stored run passes when the two agree. A sorted sequence is determined by its
    multiset, so any change to a run is caught except with probability below ``n / 2**126``.
    """

    _P = (1 << 127) - 1

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: tuple[Any, Any],
        runs: Sequence[Run],
        size: int,
        spare: Sequence[int] = (),
    ) -> None:
        self._r = secrets.randbelow(self._P - (1 << 64)) + (1 << 64)
        self.problems: list[tuple[int, str]] = []
        self.notes: list[str] = []
        self._runs = list(runs)
        self._spare = set(spare)
        self._stored: dict[int, int] = {}
        self._expected: dict[int, int] = {}
        self._k = 0
        expect = 0
        for run in self._runs:
            if run.lo != expect or run.hi <= run.lo:
                self._problem(
                    run.lo, f"run {run.rid} covers [{run.lo}, {run.hi}), expected {expect}"
                )
            if run.rid in self._spare:
                self._problem(run.lo, f"run {run.rid} is listed and spare")
            expect = run.hi
            self._expected[run.rid] = 1
        if expect != size:
            self._problem(min(expect, size), f"covers [0, {expect}) of a log of {size} entries")
        self.upto = expect
        spare_blocks: dict[int, int] = {}
        for big, db in enumerate(dbs):
            if db is not None:
                self._scan(txn, db, bool(big), spare_blocks)
        for rid in sorted(spare_blocks):
            self.notes.append(
                f"leaf-hash index: run {rid} ({spare_blocks[rid]} blocks) is being built or "
                "awaits deletion; it is not part of the index"
            )
        for run in self._runs:
            if run.big and dbs[1] is None:
                self._problem(run.lo, f"run {run.rid} is in leafbig, which does not exist")

    def _problem(self, index: int, text: str) -> None:
        self.problems.append((index, f"leaf-hash index: {text}"))

    def _scan(self, txn: lmdb.Transaction, db: Any, big: bool, spare: dict[int, int]) -> None:
        by_rid = {run.rid: run for run in self._runs if run.big == big}
        where = "leafbig" if big else "leafidx"
        counts: dict[int, int] = {}
        last: dict[int, int] = {}
        r, p = self._r, self._P
        with txn.cursor(db=db) as cur:
            for key, value in cur:
                if len(key) != _KEY.size or len(value) % 8 or not value:
                    self._problem(0, f"malformed block {bytes(key).hex()} in {where}")
                    continue
                rid, first = _KEY.unpack(key)
                run = by_rid.get(rid)
                if run is None:
                    if rid in self._spare:
                        spare[rid] = spare.get(rid, 0) + 1
                    else:
                        self._problem(0, f"block of unlisted run {rid} in {where}")
                    continue
                items = _from_bytes(value)
                if items[0] != first or len(items) > ITEMS_PER_BLOCK:
                    self._problem(run.lo, f"run {rid}: bad block {bytes(key).hex()}")
                previous = last.get(rid, -1)
                acc = self._stored.get(rid, 1)
                for x in items:
                    if x <= previous or (x & _LOW) >= run.size:
                        self._problem(run.lo, f"run {rid} [{run.lo}, {run.hi}) is not sorted")
                        break
                    previous = x
                    acc = acc * (r - x) % p
                last[rid] = previous
                self._stored[rid] = acc
                counts[rid] = counts.get(rid, 0) + len(items)
        for run in by_rid.values():
            if counts.get(run.rid, 0) != run.size:
                n = counts.get(run.rid, 0)
                self._problem(run.lo, f"run [{run.lo}, {run.hi}) holds {n} items")

    def feed(self, start: int, hashes: Sequence[bytes]) -> list[tuple[int, str]]:
        """Account for the leaf hashes of ``start, start + 1, …``; return problems found."""
        out, self.problems = self.problems, []
        r, p = self._r, self._P
        runs, k = self._runs, self._k
        for index, h in enumerate(hashes, start):
            while k < len(runs) and index >= runs[k].hi:
                k += 1
            if k == len(runs):
                break
            run = runs[k]
            x = (prefix(h) << 32) | (index - run.lo)
            self._expected[run.rid] = self._expected[run.rid] * (r - x) % p
            if index == run.hi - 1 and self._expected[run.rid] != self._stored.get(run.rid, 1):
                out.append(
                    (index, f"leaf-hash index: run [{run.lo}, {run.hi}) does not match the leaves")
                )
        self._k = k
        return out

    def finish(self) -> list[tuple[int, str]]:
        """Problems left after the last :meth:`feed`."""
        out, self.problems = self.problems, []
        return out
