"""The leaf-hash index of the LMDB backend: its directory in ``meta``, a run per batch with
inline merges, lookups, and the background merger.

The runs themselves (keys, blocks, merge plans, the merge) are ``translog.storage.leafindex``.

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
import errno
import fcntl
import logging
import os
import threading
import time
import weakref
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lmdb

from translog.errors import MergerStoppedError, StorageCorruptError, StorageError
from translog.storage import leafindex
from translog.storage.lmdb_env import map_error, pack_u64, unpack_u64
from translog.storage.lmdb_reads import LMDBReads

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


_MERGING: weakref.WeakSet[LMDBLeafIndex] = weakref.WeakSet()
"""Storages whose merger thread runs: stopped at interpreter exit if nobody closed them, so
the (daemon) thread is never inside LMDB while the environment goes away."""


@atexit.register
def _stop_mergers() -> None:
    for storage in list(_MERGING):
        storage._stop_merger()


class LMDBLeafIndex(LMDBReads):
    """The leaf-hash index and merger of :class:`~translog.storage.lmdb.LMDBStorage`."""

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
        self._index_leaf_hashes = index_leaf_hashes
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
        super().__init__(path, map_size=map_size, max_map_size=max_map_size, readonly=readonly)
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

    # -- the index directory and inline merges ---------------------------------------

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
        return runs, (unpack_u64(nxt)[0] if nxt else 0), spares

    def _put_index(
        self, txn: lmdb.Transaction, runs: tuple[leafindex.Run, ...], nxt: int, big: bool = True
    ) -> None:
        """Store the index directory: the runs, the next id, and (``big``) which runs are big."""
        txn.put(leafindex.META_RUNS, leafindex.encode_runs(runs), db=self._meta)
        txn.put(leafindex.META_NEXT, pack_u64(nxt), db=self._meta)
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
            except MergerStoppedError:
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
            raise MergerStoppedError
        hook = self._merge_hook
        if hook is not None:
            hook(stage)
            if self._stopping:
                raise MergerStoppedError

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
                txn.put(leafindex.META_NEXT, pack_u64(self._next_rid), db=self._meta)
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
            raise map_error("read", e) from e
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

    def close(self) -> None:
        """Stop the merger (an unfinished merge is abandoned), then close the environment."""
        if self._closed:
            return
        self._stop_merger()
        super().close()
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
