"""The log's vocabulary: its options and hooks, the values a submission becomes on its way
through the log (:class:`Accepted` in the pool, :class:`Appended` once durable, their
column-wise runs, the :class:`SignedCheckpoint` that covers them), the pool's :class:`Group`,
and :class:`LogState`, the state of a :class:`~translog.log.sequencer.Log` its parts share.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from translog.core.checkpoint import Checkpoint
from translog.core.merkle import Frontier
from translog.core.signing import NoteSigner
from translog.errors import MalformedError
from translog.metrics import Histogram
from translog.storage.base import NewEntry, PromisedEntry, Storage

log = logging.getLogger("translog.log.sequencer")
"""The logger of every part of the log."""

Indexer = Callable[[int, Sequence[NewEntry]], Sequence[tuple[bytes, bytes]]]
"""``indexer(start, entries)``: index records for the entries about to be stored at ``start``."""


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
class Group:
    """Submissions enqueued together; they are sequenced in one batch, in order."""

    accepted: AcceptedRun
    payloads: list[bytes | None]
    keys: list[bytes | None] | None
    future: asyncio.Future[Sequence[Appended]]
    enqueued: float = field(default_factory=time.monotonic)
    promise_seqs: list[int] | None = None
    """Promise records this group's entries were persisted under (``?wait=0``)."""


class LogState:
    """What the parts of a :class:`~translog.log.sequencer.Log` share (set in its ``__init__``)."""

    storage: Storage
    origin: str
    signer: NoteSigner
    options: LogOptions
    indexer: Indexer | None
    write_guard: Callable[[], None] | None
    stats: collections.Counter[str]
    batch_sizes: Histogram
    integration_seconds: Histogram
    _frontier: Frontier
    _current: SignedCheckpoint
    _published: SignedCheckpoint | None
    _shown: SignedCheckpoint | None
    fenced: bool
    _recovered: list[PromisedEntry]
    _pool: collections.deque[Group]
    _pending: int
    _inflight: dict[bytes, asyncio.Future[Sequence[Appended]]]
    _requeued: dict[bytes, tuple[Accepted, asyncio.Future[Sequence[Appended]]]]
    _wakeup: asyncio.Event | None
    _writer: concurrent.futures.ThreadPoolExecutor
    _closing: bool
    _fatal: BaseException | None
