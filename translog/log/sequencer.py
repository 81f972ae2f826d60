"""The log: pending pool → group-committed sequencer → signed checkpoints.

Data flow for one submission::

    append(payload) ──► leaf built (timestamp, salt) ──► pending pool (bounded, FIFO)
                                                            │ cut whenever the writer is free
                                                            ▼
    writer thread:  Frontier.append(leaf hashes) ──► Storage.append(batch)  (one txn, fsync)
                                                            │ durable
                                                            ▼
                    sign a checkpoint for the new size  ──► futures resolved (index, checkpoint)

* **Group commit.** The sequencer never waits to fill a batch. While one batch commits, new
  submissions pile up in the pool; as soon as the commit ends, everything pending (up to
  ``max_batch_entries``) becomes the next batch. An idle log therefore adds no delay, and a
  busy one amortises each fsync over many entries.
* **Durable before known.** No submitter learns its index, and no checkpoint is signed over a
  tree, before the batch's transaction is durable.
* **Timestamps never decrease.** A leaf's timestamp is taken when it enters the pool, as
  ``max(now, previous)``; the pool is FIFO, so leaf timestamps are non-decreasing along the
  log, across restarts too (the last one is stored).
* **One writer.** All storage writes (batches, published checkpoints) run on one thread, so
  they are serialised, and no LMDB transaction crosses a thread or an ``await``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import itertools
import operator
import os
import struct
import time
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.ct import TreeHeadSigner
from translog.core.leaf import (
    MAX_INLINE_PAYLOAD,
    MAX_LEAF_SIZE,
    committed_leaves,
    inline_leaf,
    new_salts,
)
from translog.core.merkle import HASH_SIZE, Frontier, leaf_hashes
from translog.core.signing import NoteSigner
from translog.errors import (
    ConflictError,
    MalformedError,
    PushbackError,
    SequencerFatalError,
    TooLargeError,
    TranslogError,
)
from translog.log.base import (
    Accepted,
    AcceptedRun,
    Appended,
    AppendedRun,
    Cosign,
    Group,
    Indexer,
    LogOptions,
    SignedCheckpoint,
    log,
)
from translog.log.group_commit import GroupCommit
from translog.log.reads import Reads
from translog.log.recovery import Recovery
from translog.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from translog.storage.base import NewEntry, PromisedEntry, Storage, StoredCheckpoint

__all__ = [
    "Accepted",
    "AcceptedRun",
    "Appended",
    "AppendedRun",
    "Cosign",
    "Log",
    "LogOptions",
    "SignedCheckpoint",
    "now_ms",
]

T = TypeVar("T")

_TIMESTAMP = struct.Struct(">Q")
"""A leaf's timestamp field (bytes 1-8)."""
_STAMP = slice(1, 9)
_hash_leaves = leaf_hashes  # accept_prepared's argument of that name hides it


CLOCK_OFFSET_ENV = "TRANSLOG_TEST_CLOCK_OFFSET_MS"
"""Test-only: milliseconds added to this process's wall clock (docs/RELIABILITY.md §6).

Read once, here, the one place the wall clock is read for leaf timestamps, checkpoints and
the writer lease (:class:`translog.publish.lease.Lease`); the fault harness runs one process
with a clock ahead or behind. Never set it in production."""
_CLOCK_OFFSET_MS = int(os.environ.get(CLOCK_OFFSET_ENV, "0") or "0")


def now_ms() -> int:
    """Wall-clock UTC time in milliseconds since the epoch (plus the test-only offset)."""
    return time.time_ns() // 1_000_000 + _CLOCK_OFFSET_MS


class Log(Recovery, GroupCommit, Reads):
    """One transparency log over a :class:`~translog.storage.base.Storage`.

    Use :meth:`start` inside a running event loop, and :meth:`close` to drain and stop.
    Read methods are synchronous and cheap (a handful of storage reads).
    """

    def __init__(
        self,
        storage: Storage,
        origin: str,
        signer: NoteSigner,
        tree_head_signer: TreeHeadSigner | None = None,
        options: LogOptions | None = None,
        cosign: Cosign | None = None,
        indexer: Indexer | None = None,
    ) -> None:
        self.storage = storage
        self.cosign = cosign
        self.indexer = indexer
        """Builds secondary-index records for each batch, written in the batch's transaction."""
        self.origin = origin
        self.signer = signer
        self.tree_head_signer = tree_head_signer
        self.options = options or LogOptions()
        self._frontier = Frontier.from_reader(storage.size(), storage)
        self._last_ts = storage.last_timestamp()
        self._check_latest_checkpoint()
        self._check_recent_entries(self.options.verify_entries_on_start)
        # Promised entries a crash left unsequenced: they go first, before anything new.
        self._recovered = storage.promised()
        for item in self._recovered:
            self._last_ts = max(self._last_ts, int.from_bytes(item.entry.leaf[1:9], "big"))
        self._promise_seq = self._recovered[-1].seq + 1 if self._recovered else 0
        self._pool: collections.deque[Group] = collections.deque()
        self._pending = 0
        self._inflight: dict[bytes, asyncio.Future[Sequence[Appended]]] = {}
        self._requeued: dict[bytes, tuple[Accepted, asyncio.Future[Sequence[Appended]]]] = {}
        """Idempotency digest → a promised entry re-queued after a crash, until sequenced."""
        self._wakeup: asyncio.Event | None = None
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tl-writer")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        self.frozen: str | None = None
        """Set on a frozen log (temporal sharding, translog.http.shards): submissions are
        refused with this reason (HTTP 409)."""
        self.write_guard: Callable[[], None] | None = None
        """Called on the writer thread before every durable write; raising stops it (used by
        the single-writer lease, translog.publish.lease)."""
        self.fenced = False
        """Set with an object store (translog.http.objstore): the log then shows only
        checkpoints the store accepted (:meth:`stored`), never one merely signed here. The
        store's compare-and-swap is the only fence against a paused leader that lost its
        lease; every receipt, ``/checkpoint`` and ``get-sth`` waits for it."""
        self._fatal: BaseException | None = None
        self._published: SignedCheckpoint | None = None
        self._shown: SignedCheckpoint | None = None
        self.on_publish: list[Callable[[SignedCheckpoint], None]] = []
        """Called with every checkpoint as it is shown (published; with an object store,
        accepted by the store), before anyone waiting for one is told (the multi-process
        server sends it to the workers, translog.http.multiprocess)."""
        self._published_waiters: list[tuple[int, asyncio.Future[SignedCheckpoint]]] = []
        self._current = self._sign(self._frontier.size, self._frontier.root(), self._last_ts)
        self.stats = collections.Counter[str]()
        self.batch_sizes = Histogram(
            "translog_batch_entries", "entries per integrated batch", SIZE_BUCKETS
        )
        self.integration_seconds = Histogram(
            "translog_batch_commit_seconds",
            "time to integrate and fsync one batch",
            LATENCY_BUCKETS,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the sequencer and publisher tasks; publish a first checkpoint."""
        self._wakeup = asyncio.Event()
        young = self.options.gc_young_threshold
        if young and gc.get_threshold()[0] < young:
            gc.set_threshold(young, *gc.get_threshold()[1:])
        self._requeue_recovered()
        await self.publish()
        self._tasks = [
            asyncio.create_task(self._sequence_loop(), name="translog-sequencer"),
            asyncio.create_task(self._publish_loop(), name="translog-publisher"),
        ]

    async def close(self) -> None:
        """Stop accepting, sequence everything already accepted, publish, and stop."""
        await self.drain()
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self.storage.close()

    async def drain(self) -> None:
        """Stop accepting, sequence everything accepted and publish a final checkpoint.

        Storage stays open for reads (an object-store publisher uploads after this); calling
        it again waits for the same drain. :meth:`close` drains first.
        """
        if self._drained is None:
            self._drained = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._drained)

    async def _drain(self) -> None:
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._tasks:
            await self._tasks[0]
            self._tasks[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tasks[1]
            if self._fatal is None:
                with contextlib.suppress(TranslogError):
                    await self.publish()

    # -- submission --------------------------------------------------------------------

    def _timestamp(self) -> int:
        ts = now_ms()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def accept(self, payloads: Sequence[bytes], *, committed: bool) -> list[Accepted]:
        """Build the leaves for ``payloads`` now (timestamp and salt are fixed here)."""
        ts, leaves, salts = self._leaves(payloads, committed=committed)
        return list(map(Accepted, leaves, leaf_hashes(leaves), itertools.repeat(ts), salts))

    def _accept_run(self, payloads: Sequence[bytes], *, committed: bool) -> AcceptedRun:
        """:meth:`accept`, column by column."""
        ts, leaves, salts = self._leaves(payloads, committed=committed)
        return AcceptedRun(leaves, leaf_hashes(leaves), [ts] * len(leaves), salts)

    def _leaves(
        self, payloads: Sequence[bytes], *, committed: bool
    ) -> tuple[int, list[bytes], list[bytes | None]]:
        """The timestamp, leaves and salts of new entries for ``payloads``."""
        ts = self._timestamp()
        n = len(payloads)
        if committed:
            fresh = new_salts(n)
            leaves = committed_leaves(ts, payloads, fresh)
            salts = cast(list[bytes | None], fresh)
        else:
            if n and max(map(len, payloads)) > MAX_INLINE_PAYLOAD:
                size = max(map(len, payloads))
                raise TooLargeError(
                    f"inline payload of {size} bytes exceeds the "
                    f"{MAX_INLINE_PAYLOAD}-byte limit of a leaf; submit it committed"
                )
            leaves = [inline_leaf(ts, payload) for payload in payloads]
            salts = [None] * n
        return ts, leaves, salts

    def accept_prepared(
        self,
        timestamp_ms: int,
        salts: Sequence[bytes | None],
        leaves: Sequence[bytes],
        leaf_hashes: bytes,
    ) -> tuple[AcceptedRun, bool]:
        """Take leaves an HTTP worker process built at ``timestamp_ms``, with their hashes.

        ``salts[i]`` is the salt of committed leaf ``i`` (None for an inline one) and
        ``leaf_hashes`` the concatenated 32-byte leaf hashes. The timestamp becomes
        ``max(timestamp_ms, previous)``, as :meth:`accept` makes it, so timestamps stay
        non-decreasing in pool order whichever process built the leaves; when that moves it
        forward (another worker's entries got in first), the leaves are rebuilt with the new
        timestamp and hashed again here. Returns the entries and whether that happened.
        """
        n = len(leaves)
        if len(salts) != n or len(leaf_hashes) != n * HASH_SIZE:
            raise MalformedError("one salt and one leaf hash per prepared leaf are required")
        stamp = _TIMESTAMP.pack(timestamp_ms)
        # Every leaf carries the batch's timestamp and fits a leaf (checked in C, no loop).
        if n and (
            set(map(operator.getitem, leaves, itertools.repeat(_STAMP))) != {stamp}
            or max(map(len, leaves)) > MAX_LEAF_SIZE
        ):
            raise MalformedError(
                "a prepared leaf lacks its batch's timestamp or exceeds the leaf size limit"
            )
        if timestamp_ms >= self._last_ts:
            self._last_ts = timestamp_ms
            hashes = [leaf_hashes[i : i + HASH_SIZE] for i in range(0, n * HASH_SIZE, HASH_SIZE)]
            return AcceptedRun(list(leaves), hashes, [timestamp_ms] * n, list(salts)), False
        ts = self._last_ts
        stamp = _TIMESTAMP.pack(ts)
        rebuilt = [leaf[:1] + stamp + leaf[9:] for leaf in leaves]
        return AcceptedRun(rebuilt, _hash_leaves(rebuilt), [ts] * n, list(salts)), True

    def submit(
        self,
        payloads: Sequence[bytes],
        *,
        committed: bool = True,
        keys: Sequence[bytes | None] | None = None,
        accepted: Sequence[Accepted] | None = None,
        persisted: list[asyncio.Future[None]] | None = None,
    ) -> asyncio.Future[Sequence[Appended]]:
        """Enqueue ``payloads``; the future resolves once all of them are durable.

        With ``persisted`` (a list to receive one future), the accepted leaves are first
        recorded durably as promised entries, on the writer thread, ahead of the batch that will
        sequence them; that future resolves once the record is on disk, which is when a promise
        (``?wait=0``) may be given. After a crash they are re-sequenced first.

        ``keys`` are idempotency-key digests (already scoped by the caller), one per payload
        or None. Raises ``PushbackError`` when the pool is full and ``MalformedError`` for an
        empty submission. ``accepted`` passes leaves built earlier by :meth:`accept` or
        :meth:`accept_prepared` (an :class:`AcceptedRun` is taken as it is, without a copy).
        """
        if self._fatal is not None:
            raise SequencerFatalError(f"the sequencer stopped: {self._fatal}")
        if self.frozen is not None:
            raise ConflictError(self.frozen)
        if self._closing or self._wakeup is None:
            raise PushbackError("the log is shutting down", retry_after=5.0)
        if not payloads:
            raise MalformedError("no entries in submission")
        if keys is not None and len(keys) != len(payloads):
            raise MalformedError("one idempotency key per payload is required")
        n = len(payloads)
        if accepted is not None and len(accepted) != n:
            raise MalformedError("one accepted entry per payload is required")
        if self._pending + n > self.options.max_pending:
            self.stats["pushbacks"] += 1
            raise PushbackError(
                f"pending pool is full ({self._pending} of {self.options.max_pending} entries)",
                retry_after=0.5,
            )
        loop = asyncio.get_running_loop()
        if keys is not None and n == 1 and keys[0] is not None:
            prior = self._inflight.get(keys[0])
            if prior is not None:
                return prior
        run = (
            self._accept_run(payloads, committed=committed)
            if accepted is None
            else AcceptedRun.of(accepted)
        )
        fut: asyncio.Future[Sequence[Appended]] = loop.create_future()
        group = Group(run, list(payloads) if committed else [None] * n, None, fut)
        if keys is not None:
            group.keys = list(keys)
            if n == 1 and keys[0] is not None:
                # Only single submissions share a future; duplicates inside larger groups are
                # resolved by the writer (batch-local map, then the stored dedupe index).
                self._inflight.setdefault(keys[0], fut)
        if persisted is not None:
            persisted.append(self._persist_promised(group, keys))
        self._pool.append(group)
        self._pending += n
        self.stats["submitted"] += n
        self._wakeup.set()
        return fut

    def _persist_promised(
        self, group: Group, keys: Sequence[bytes | None] | None
    ) -> asyncio.Future[None]:
        # Submitted to the single writer before the group can be cut, so the record is
        # always written before the batch that sequences (and deletes) it.
        seqs = list(range(self._promise_seq, self._promise_seq + len(group.accepted)))
        self._promise_seq += len(seqs)
        group.promise_seqs = seqs
        items = [
            PromisedEntry(
                seq,
                keys[i] if keys is not None else None,
                NewEntry(acc.leaf, acc.salt, group.payloads[i] if acc.salt else None),
            )
            for i, (seq, acc) in enumerate(zip(seqs, group.accepted, strict=True))
        ]
        job = self._writer.submit(self.storage.put_promised, items)
        return asyncio.wrap_future(job)

    async def append(
        self, payload: bytes, *, committed: bool = True, key: bytes | None = None
    ) -> Appended:
        """Submit one payload and wait until it is durable."""
        keys = None if key is None else [key]
        result = await self.submit([payload], committed=committed, keys=keys)
        return result[0]

    # -- publication -------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        interval = self.options.publish_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.publish()
            except TranslogError as e:
                log.error("couldn't publish a checkpoint: %s", e)

    async def publish(self) -> SignedCheckpoint | None:
        """Sign, store durably and publish a checkpoint over the latest durable tree.

        With witnesses (``cosign``), the checkpoint is published with the cosignatures
        collected for it; when ``cosign`` withholds it (no quorum), nothing is published, the
        previous checkpoint stays current and None is returned.
        """
        loop = asyncio.get_running_loop()
        published: SignedCheckpoint | None = await loop.run_in_executor(self._writer, self._publish)
        if self.cosign is not None and published is not None:
            published = await self.cosign(published)
            if published is None:
                self.stats["withheld"] += 1
                return None
        assert published is not None
        self._published = published
        self.stats["published"] += 1
        if not self.fenced:
            self._show(published)
        return published

    def stored(self, signed: SignedCheckpoint) -> None:
        """The object store accepted ``signed`` (the publisher's conditional PUT succeeded):
        with :attr:`fenced`, it is now the checkpoint this log shows."""
        if self.fenced and (self._shown is None or signed.size >= self._shown.size):
            self._show(signed)

    def _show(self, signed: SignedCheckpoint) -> None:
        self._shown = signed
        for hook in self.on_publish:
            hook(signed)
        waiters, self._published_waiters = self._published_waiters, []
        for min_size, fut in waiters:
            if signed.size >= min_size:
                if not fut.done():
                    fut.set_result(signed)
            else:
                self._published_waiters.append((min_size, fut))

    def _publish(self) -> SignedCheckpoint:
        """Writer thread: the frontier here is exactly the durable tree."""
        size, root = self._frontier.size, self._frontier.root()
        prev = self._published.timestamp_ms if self._published else 0
        ts = max(now_ms(), prev, self.storage.last_timestamp())
        cp = Checkpoint(self.origin, size, root)
        note = sign_checkpoint(cp, self.signer)
        sth = b""
        if self.tree_head_signer is not None:
            sth = self.tree_head_signer.sign_tree_head(ts, size, root)
        if self.write_guard is not None:
            self.write_guard()
        self.storage.put_checkpoint(StoredCheckpoint(size, ts, note))
        return SignedCheckpoint(cp, ts, note, sth)

    async def wait_published(self, min_size: int) -> SignedCheckpoint:
        """Wait for the next published checkpoint whose size is at least ``min_size``
        (with :attr:`fenced`: the store's, at once if it already is that large)."""
        shown = self._shown
        if self.fenced and shown is not None and shown.size >= min_size:
            return shown
        fut: asyncio.Future[SignedCheckpoint] = asyncio.get_running_loop().create_future()
        self._published_waiters.append((min_size, fut))
        return await fut

    async def on_writer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the single writer thread (storage writes other than batches)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, fn)
