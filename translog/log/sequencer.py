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
import hashlib
import itertools
import logging
import operator
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, cast, overload

from translog.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from translog.core.ct import TreeHeadSigner
from translog.core.leaf import (
    COMMITTED_LEAF_SIZE,
    KIND_COMMITTED,
    LEAF_VERSION,
    MAX_INLINE_PAYLOAD,
    MAX_LEAF_SIZE,
    SALT_SIZE,
    committed_leaves,
    inline_leaf,
    new_salts,
    verify_payload,
)
from translog.core.merkle import (
    HASH_SIZE,
    Frontier,
    NodeLevels,
    leaf_hash,
    leaf_hashes,
    prove_consistency,
    prove_inclusion,
    tree_hash,
)
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import (
    ConflictError,
    MalformedError,
    PushbackError,
    SequencerFatalError,
    StorageCorruptError,
    StorageError,
    StorageFullError,
    TooLargeError,
    TranslogError,
)
from translog.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from translog.storage.base import (
    EntryColumns,
    NewEntry,
    PromisedEntry,
    Storage,
    StoredCheckpoint,
    StoredEntry,
    WriteBatch,
)

log = logging.getLogger("translog.log.sequencer")


def _log_recovery(fut: asyncio.Future[Sequence[Appended]]) -> None:
    if fut.cancelled():
        return
    error = fut.exception()
    if error is not None:
        log.critical("couldn't re-sequence promised entries: %s", error)
    else:
        log.warning("re-sequenced %d promised entries", len(fut.result()))


T = TypeVar("T")
Indexer = Callable[[int, Sequence[NewEntry]], Sequence[tuple[bytes, bytes]]]
"""``indexer(start, entries)``: index records for the entries about to be stored at ``start``."""


_TIMESTAMP = struct.Struct(">Q")
"""A leaf's timestamp field (bytes 1-8)."""
_STAMP = slice(1, 9)
_hash_leaves = leaf_hashes  # accept_prepared's argument of that name hides it


def now_ms() -> int:
    """Wall-clock UTC time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint, the time it was signed, and its signed note bytes."""

    checkpoint: Checkpoint
    timestamp_ms: int
    note: bytes
    tree_head_signature: bytes = b""
    """RFC 6962 TLS-encoded ECDSA signature (published checkpoints only)."""

    @property
    def size(self) -> int:
        """Tree size."""
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        """Root hash."""
        return self.checkpoint.root_hash


@dataclass(slots=True)  # not frozen: built once per entry on the hot path; treat as immutable
class Appended:
    """The outcome of one submission, known only once it is durable."""

    index: int
    leaf: bytes
    leaf_hash: bytes
    timestamp_ms: int
    salt: bytes | None
    checkpoint: SignedCheckpoint
    """A checkpoint signed over a durable tree that contains this entry."""
    duplicate: bool = False
    """True when an idempotency key matched an earlier entry; the fields are the earlier ones."""


@dataclass(slots=True)  # not frozen: built once per entry on the hot path; treat as immutable
class Accepted:
    """A submission in the pool: its leaf is fixed, its index is not yet known."""

    leaf: bytes
    leaf_hash: bytes
    timestamp_ms: int
    salt: bytes | None


_SALT = operator.attrgetter("salt")
_HASH = operator.attrgetter("leaf_hash")
_LEAF = operator.attrgetter("leaf")
_TS = operator.attrgetter("timestamp_ms")


class AcceptedRun(Sequence[Accepted]):
    """Accepted submissions held column by column, in pool order.

    Entry ``i`` is ``Accepted(leaves[i], hashes[i], stamps[i], salts[i])``; as a sequence the
    run yields such objects, made on access. The sequencer's bulk path reads the columns and
    makes no object per entry. Treat a run as immutable once it is submitted.
    """

    __slots__ = ("hashes", "leaves", "salts", "stamps")

    def __init__(
        self,
        leaves: list[bytes] | None = None,
        hashes: list[bytes] | None = None,
        stamps: list[int] | None = None,
        salts: list[bytes | None] | None = None,
    ) -> None:
        self.leaves: list[bytes] = [] if leaves is None else leaves
        self.hashes: list[bytes] = [] if hashes is None else hashes
        self.stamps: list[int] = [] if stamps is None else stamps
        self.salts: list[bytes | None] = [] if salts is None else salts
        if not len(self.leaves) == len(self.hashes) == len(self.stamps) == len(self.salts):
            raise MalformedError("accepted columns of different lengths")

    @classmethod
    def of(cls, accepted: Sequence[Accepted]) -> AcceptedRun:
        """``accepted`` as a run (itself when it is one)."""
        if isinstance(accepted, AcceptedRun):
            return accepted
        return cls(
            list(map(_LEAF, accepted)),
            list(map(_HASH, accepted)),
            list(map(_TS, accepted)),
            list(map(_SALT, accepted)),
        )

    def __len__(self) -> int:
        return len(self.leaves)

    def __iter__(self) -> Iterator[Accepted]:
        return map(Accepted, self.leaves, self.hashes, self.stamps, self.salts)

    @overload
    def __getitem__(self, i: int) -> Accepted: ...

    @overload
    def __getitem__(self, i: slice) -> list[Accepted]: ...

    def __getitem__(self, i: int | slice) -> Accepted | list[Accepted]:
        if isinstance(i, slice):
            return list(
                map(Accepted, self.leaves[i], self.hashes[i], self.stamps[i], self.salts[i])
            )
        return Accepted(self.leaves[i], self.hashes[i], self.stamps[i], self.salts[i])

    def extend(self, other: AcceptedRun) -> None:
        """Append the entries of ``other`` after these."""
        self.leaves += other.leaves
        self.hashes += other.hashes
        self.stamps += other.stamps
        self.salts += other.salts


class AppendedRun(Sequence[Appended]):
    """The outcomes of a run appended whole, in order, from index ``first``, all covered by
    ``checkpoint``: the sequence of their :class:`Appended`, each made on access (a batch's
    submitter often looks at the first and the last only)."""

    __slots__ = ("accepted", "checkpoint", "first")

    def __init__(self, first: int, accepted: AcceptedRun, checkpoint: SignedCheckpoint) -> None:
        self.first = first
        self.accepted = accepted
        self.checkpoint = checkpoint

    def __len__(self) -> int:
        return len(self.accepted.leaves)

    def __iter__(self) -> Iterator[Appended]:
        a = self.accepted
        indexes = range(self.first, self.first + len(a.leaves))
        cps = itertools.repeat(self.checkpoint)
        return map(Appended, indexes, a.leaves, a.hashes, a.stamps, a.salts, cps)

    @overload
    def __getitem__(self, i: int) -> Appended: ...

    @overload
    def __getitem__(self, i: slice) -> list[Appended]: ...

    def __getitem__(self, i: int | slice) -> Appended | list[Appended]:
        n = len(self)
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(n))]
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("appended run index out of range")
        a = self.accepted
        return Appended(
            self.first + j, a.leaves[j], a.hashes[j], a.stamps[j], a.salts[j], self.checkpoint
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(slots=True)
class _Group:
    """Submissions enqueued together; they are sequenced in one batch, in order."""

    accepted: AcceptedRun
    payloads: list[bytes | None]
    keys: list[bytes | None] | None
    future: asyncio.Future[Sequence[Appended]]
    enqueued: float = field(default_factory=time.monotonic)
    promise_seqs: list[int] | None = None
    """Promise records this group's entries were persisted under (``?wait=0``)."""


_CHECK_BLOCK = 4096


def check_entries(storage: Storage, entries: Sequence[StoredEntry]) -> None:
    """Raise ``StorageCorruptError`` unless every entry matches its stored leaf hash (and a
    committed entry's payload matches its commitment)."""
    if not entries:
        return
    stored = storage.read_hashes([(0, e.index) for e in entries])
    sha = hashlib.sha256
    for e, h in zip(entries, stored, strict=True):
        leaf = e.leaf
        if sha(b"\x00" + leaf).digest() != h:
            raise StorageCorruptError(
                f"entry {e.index}: the stored leaf does not match the tree's leaf hash; "
                "run translog fsck"
            )
        salt = e.salt
        if e.payload is not None and salt is not None:
            # What verify_payload checks for a committed leaf, inline: this runs for every
            # entry of every bundle served. Anything unusual takes the full check.
            if (
                len(leaf) == COMMITTED_LEAF_SIZE
                and leaf[0] == LEAF_VERSION
                and leaf[9] == KIND_COMMITTED
                and len(salt) == SALT_SIZE
                and leaf[10:] == sha(salt + e.payload).digest()
            ):
                continue
            try:
                verify_payload(leaf, e.payload, salt)
            except TranslogError as err:
                raise StorageCorruptError(
                    f"entry {e.index}: the stored payload does not match its leaf; "
                    "run translog fsck"
                ) from err


def check_leaves(storage: Storage, start: int, leaves: Sequence[bytes]) -> None:
    """Raise ``StorageCorruptError`` unless leaf ``i`` hashes to the stored leaf hash of entry
    ``start + i`` for every ``i``."""
    if not leaves:
        return
    stored = storage.read_hashes([(0, i) for i in range(start, start + len(leaves))])
    sha = hashlib.sha256
    computed = [sha(b"\x00" + leaf).digest() for leaf in leaves]
    if computed != stored:
        bad = next(i for i, (a, b) in enumerate(zip(computed, stored, strict=True)) if a != b)
        raise StorageCorruptError(
            f"entry {start + bad}: the stored leaf does not match the tree's leaf hash; "
            "run translog fsck"
        )


FULL_RETRY_SECONDS = 0.5
"""Pause before retrying promised entries after a batch failed with storage full."""


_Row = tuple[AcceptedRun, list[tuple[int, int]]]
"""A group planned entry by entry: its entries and, for each, (index, position in the group), or
(earlier index, -1) for a duplicate."""
_BULK = 16
"""Groups at least this large without idempotency keys take the bulk path of ``_integrate``."""


@dataclass(slots=True)
class _Run:
    """A group appended whole, in order, from index ``first``."""

    first: int
    accepted: AcceptedRun


def _kind(salts: list[bytes | None]) -> bool | None:
    """True when every entry is committed, False when every one is inline, else None."""
    if None not in salts:
        return True
    if salts.count(None) == len(salts):
        return False
    return None


@dataclass(frozen=True)
class LogOptions:
    """Sequencer and publisher knobs (see translog.config for their documentation)."""

    max_batch_entries: int = 4096
    max_batch_age_ms: int = 50
    max_pending: int = 100_000
    publish_interval_ms: int = 1000
    verify_entries_on_start: int = 100_000
    gc_young_threshold: int = 50_000
    """Process-wide, at :meth:`Log.start`: run the cyclic GC's young collection after this many
    allocations instead of CPython's 700, unless it is set higher already (0 leaves it alone).
    Every entry allocates a handful of short-lived container objects, and with 700 the
    collector took 10-15% of the sequencer's CPU (benchmarks/RESULTS.md)."""


Cosign = Callable[["SignedCheckpoint"], Awaitable["SignedCheckpoint | None"]]
"""Witness step of publication: the checkpoint with cosignatures, or None to withhold it
(a required quorum was not met). See :mod:`translog.witness.client`."""


class Log:
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
        self._pool: collections.deque[_Group] = collections.deque()
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
        self._fatal: BaseException | None = None
        self._published: SignedCheckpoint | None = None
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

    # -- startup checks ----------------------------------------------------------------

    def _check_latest_checkpoint(self) -> None:
        """Refuse to run on a store that no longer matches what the log has signed."""
        latest = self.storage.latest_checkpoint()
        if latest is None:
            return
        try:
            cp, _, _ = open_checkpoint(
                latest.note, parse_vkey(self.signer.vkey), origin=self.origin
            )
        except TranslogError as e:
            raise StorageCorruptError(f"latest stored checkpoint does not verify: {e}") from e
        size = self._frontier.size
        if cp.size > size:
            raise StorageCorruptError(
                f"latest stored checkpoint has size {cp.size} but the tree has only {size} "
                "leaves: the data was rolled back; refusing to fork the log"
            )
        root = tree_hash(cp.size, self.storage)
        if root != cp.root_hash:
            raise StorageCorruptError(
                f"stored tree root at size {cp.size} does not match the signed checkpoint: "
                f"expected {cp.root_hash.hex()}, found {root.hex()}"
            )

    def _check_recent_entries(self, count: int) -> None:
        """Startup: the newest ``count`` entries must match the tree's stored leaf hashes."""
        size = self._frontier.size
        start = max(0, size - count)
        for lo in range(start, size, _CHECK_BLOCK):
            check_entries(self.storage, self.storage.get_entries(lo, min(size, lo + _CHECK_BLOCK)))

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

    def _requeue_recovered(self) -> None:
        """Put promised-but-unsequenced entries from before a crash at the head of the pool."""
        if not self._recovered:
            return
        loop = asyncio.get_running_loop()
        accepted = [
            Accepted(
                p.entry.leaf,
                leaf_hash(p.entry.leaf),
                int.from_bytes(p.entry.leaf[1:9], "big"),
                p.entry.salt,
            )
            for p in self._recovered
        ]
        fut: asyncio.Future[Sequence[Appended]] = loop.create_future()
        fut.add_done_callback(_log_recovery)
        keys = [p.key for p in self._recovered]
        payloads = [p.entry.payload for p in self._recovered]
        seqs = [p.seq for p in self._recovered]
        group = _Group(AcceptedRun.of(accepted), payloads, keys, fut, promise_seqs=seqs)
        # Until their batch is durable (and the stored dedupe index names them), these entries
        # are in flight: a retry of one of their keys must find them, not add a second leaf.
        for key, acc in zip(keys, accepted, strict=True):
            if key is not None:
                self._requeued.setdefault(key, (acc, fut))
        fut.add_done_callback(lambda _: self._requeued.clear())
        self._pool.appendleft(group)
        self._pending += len(accepted)
        log.warning("re-sequencing %d promised entries left by a crash", len(accepted))
        self._recovered = []

    def requeued(self, key: bytes) -> tuple[Accepted, asyncio.Future[Sequence[Appended]]] | None:
        """The promised entry a crash left under idempotency digest ``key``, re-queued at
        :meth:`start` and not yet sequenced: its leaf and the future of its group.

        Once its batch is durable the stored dedupe index names it instead. Until then only
        this knows the key: a ``?wait=0`` retry of a request whose promise was recorded but
        never reached its client must be promised *this* leaf, since the sequencer maps the
        retry's own leaf to it and never stores that one.
        """
        return self._requeued.get(key)

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
        group = _Group(run, list(payloads) if committed else [None] * n, None, fut)
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
        self, group: _Group, keys: Sequence[bytes | None] | None
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

    # -- sequencing --------------------------------------------------------------------

    def _cut(self) -> list[_Group]:
        groups: list[_Group] = []
        count = 0
        limit = self.options.max_batch_entries
        while self._pool and (not groups or count + len(self._pool[0].accepted) <= limit):
            group = self._pool.popleft()
            groups.append(group)
            count += len(group.accepted)
        self._pending -= count
        return groups

    async def _sequence_loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pool:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            groups = self._cut()
            started = time.monotonic()
            try:
                results = await loop.run_in_executor(self._writer, self._integrate, groups)
            except StorageFullError as e:
                self.stats["storage_full"] += 1
                # Promised entries (?wait=0) were answered already: keep them at the head of
                # the pool and retry once space returns; refuse the rest, whose callers wait.
                kept = [g for g in groups if g.promise_seqs]
                log.error("batch rejected: %s (%d promised entries kept)", e, len(kept))
                self._fail([g for g in groups if not g.promise_seqs], e)
                self._pool.extendleft(reversed(kept))
                self._pending += sum(len(g.accepted) for g in kept)
                if kept:
                    await asyncio.sleep(FULL_RETRY_SECONDS)
                continue
            except (StorageError, Exception) as e:
                self._fatal = e
                log.critical("sequencer stopped: %s", e)
                fatal = SequencerFatalError(f"the sequencer stopped: {e}")
                self._fail(groups, fatal)
                self._fail(list(self._pool), fatal)
                self._pool.clear()
                self._pending = 0
                return
            self.integration_seconds.observe(time.monotonic() - started)
            for group, appended in zip(groups, results, strict=True):
                self._release_keys(group)
                if not group.future.done():
                    group.future.set_result(appended)

    def _release_keys(self, group: _Group) -> None:
        for k in group.keys or ():
            if k is not None and self._inflight.get(k) is group.future:
                del self._inflight[k]

    def _fail(self, groups: list[_Group], error: BaseException) -> None:
        for group in groups:
            self._release_keys(group)
            if not group.future.done():
                group.future.set_exception(error)

    def _integrate(self, groups: list[_Group]) -> list[Sequence[Appended]]:
        """Writer thread: append the batch durably, then sign a checkpoint over it.

        A group without idempotency keys whose entries are all of one kind takes the fast
        path: its columns are appended whole, in order, and its outcome is an
        :class:`AppendedRun`; no object is made per entry. Any other group goes entry by entry,
        resolving keys against the batch and the stored index. The tree nodes of the whole
        batch come from one ``Frontier.extend_levels`` over its leaf hashes.
        """
        frontier = self._frontier.copy()
        start = frontier.size
        entries = EntryColumns()
        hashes: list[bytes] = []
        dedupe: dict[bytes, int] = {}
        promised_done: list[int] = []
        plan: list[_Row | _Run] = []
        ts = self.storage.last_timestamp()
        for group in groups:
            promised_done += group.promise_seqs or ()
            accs = group.accepted
            if group.keys is None and len(accs) >= _BULK:
                kind = _kind(accs.salts)
                if kind is not None:
                    plan.append(_Run(start + len(hashes), accs))
                    hashes += accs.hashes
                    entries.leaves += accs.leaves
                    entries.salts += accs.salts
                    entries.payloads += group.payloads if kind else [None] * len(accs)
                    ts = max(ts, max(accs.stamps))
                    continue
            row, ts = self._plan_group(group, start, entries, hashes, dedupe, ts)
            plan.append(row)
        nodes = NodeLevels(start, frontier.extend_levels(hashes))
        if entries or promised_done:
            puts = self.indexer(start, entries) if self.indexer is not None and entries else ()
            batch = WriteBatch(start, entries, nodes, ts, dedupe, promised_done, puts)
            if self.write_guard is not None:
                self.write_guard()
            self.storage.append(batch)
            self._frontier = frontier
            self.batch_sizes.observe(len(entries))
            # Durable: only now may a checkpoint cover the new entries.
            self._current = self._sign(frontier.size, frontier.root(), ts)
        current = self._current
        out: list[Sequence[Appended]] = []
        for planned in plan:
            if isinstance(planned, _Run):
                out.append(AppendedRun(planned.first, planned.accepted, current))
                continue
            run, positions = planned
            appended = []
            for index, j in positions:
                if j < 0:
                    appended.append(self._read_appended(index, current))
                else:
                    leaf, h, stamp, salt = run.leaves[j], run.hashes[j], run.stamps[j], run.salts[j]
                    appended.append(Appended(index, leaf, h, stamp, salt, current))
            out.append(appended)
        return out

    def _plan_group(
        self,
        group: _Group,
        start: int,
        entries: EntryColumns,
        hashes: list[bytes],
        dedupe: dict[bytes, int],
        ts: int,
    ) -> tuple[_Row, int]:
        """Entry by entry: an idempotency key seen before maps to the earlier entry. New
        entries join ``entries`` and their leaf hashes ``hashes`` (the batch so far, from
        index ``start``). Returns the plan and ``ts`` raised to their newest timestamp."""
        keys = group.keys
        accs = group.accepted
        payloads = group.payloads
        row: list[tuple[int, int]] = []
        index = start + len(hashes)
        for j, salt in enumerate(accs.salts):
            key = keys[j] if keys is not None else None
            if key is not None:
                prior = dedupe.get(key)
                if prior is None:
                    prior = self.storage.lookup_dedupe(key)
                if prior is not None:
                    row.append((prior, -1))
                    continue
                dedupe[key] = index
            entries.leaves.append(accs.leaves[j])
            entries.salts.append(salt)
            entries.payloads.append(payloads[j] if salt else None)
            hashes.append(accs.hashes[j])
            row.append((index, j))
            index += 1
            ts = max(ts, accs.stamps[j])
        return (accs, row), ts

    def _read_appended(self, index: int, current: SignedCheckpoint) -> Appended:
        entry = self.storage.get_entries(index, index + 1)[0]
        ts = int.from_bytes(entry.leaf[1:9], "big")
        return Appended(
            index, entry.leaf, leaf_hash(entry.leaf), ts, entry.salt, current, duplicate=True
        )

    def _sign(self, size: int, root: bytes, ts: int) -> SignedCheckpoint:
        cp = Checkpoint(self.origin, size, root)
        return SignedCheckpoint(cp, ts, sign_checkpoint(cp, self.signer))

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
        waiters, self._published_waiters = self._published_waiters, []
        for min_size, fut in waiters:
            if published.size >= min_size:
                if not fut.done():
                    fut.set_result(published)
            else:
                self._published_waiters.append((min_size, fut))
        return published

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
        """Wait for the next published checkpoint whose size is at least ``min_size``."""
        fut: asyncio.Future[SignedCheckpoint] = asyncio.get_running_loop().create_future()
        self._published_waiters.append((min_size, fut))
        return await fut

    async def on_writer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the single writer thread (storage writes other than batches)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, fn)

    # -- reads -------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Durable tree size."""
        return self._frontier.size

    @property
    def pending(self) -> int:
        """Entries accepted but not yet durable."""
        return self._pending

    @property
    def current(self) -> SignedCheckpoint:
        """The newest checkpoint signed over the durable tree (per batch)."""
        return self._current

    @property
    def published(self) -> SignedCheckpoint | None:
        """The newest checkpoint published on the interval."""
        return self._published

    @property
    def fatal(self) -> BaseException | None:
        """Why the sequencer stopped, if it did."""
        return self._fatal

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        """Audit path for ``index`` in the tree of ``size`` leaves (size ≤ durable size)."""
        self._check_size(size)
        return prove_inclusion(index, size, self.storage)

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """Consistency proof from ``old_size`` to ``new_size`` (new_size ≤ durable size)."""
        self._check_size(new_size)
        return prove_consistency(old_size, new_size, self.storage)

    def root_at(self, size: int) -> bytes:
        """The root hash of the first ``size`` leaves."""
        self._check_size(size)
        return tree_hash(size, self.storage)

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Stored entries ``[start, end)``, each checked against the tree before it is served.

        A leaf whose hash differs from the tree's stored leaf hash, or a committed payload
        that no longer matches its leaf, raises ``StorageCorruptError``: corrupted data is
        never served as if it were the log's.
        """
        entries = self.storage.get_entries(start, end)
        check_entries(self.storage, entries)
        return entries

    def leaves(self, start: int, end: int) -> list[bytes]:
        """The leaves of entries ``[start, end)`` (an entry bundle), each checked against the
        tree's stored leaf hash: one hash per leaf, and ``StorageCorruptError`` on a mismatch.

        Faster than :meth:`entries` for the same guarantee on what is served: a committed
        payload stored beside its leaf (an older record layout) takes the full entry check.
        """
        leaves = self.storage.get_leaves(start, end)
        if leaves is None:
            return [e.leaf for e in self.entries(start, end)]
        check_leaves(self.storage, start, leaves)
        return leaves

    def _check_size(self, size: int) -> None:
        if size < 0 or size > self._frontier.size:
            raise MalformedError(f"tree size {size} is beyond the log's size {self._frontier.size}")
