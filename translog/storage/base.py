"""The storage contract every translog backend honours.

A backend holds exactly one log: its entries, the tree's hashes, the idempotency (dedupe)
index, a leaf-hash index and the history of signed checkpoints. Two backends exist: the LMDB
backend (``translog.storage.lmdb``), and an in-memory twin (``translog.storage.memory``) that
polices this contract in tests. One conformance suite (``tests/storage/test_conformance.py``)
runs against both.

Contract, in short:

* **One writer.** :meth:`Storage.append`, :meth:`Storage.put_checkpoint` and
  :meth:`Storage.erase_payload` are called from one thread at a time (the sequencer's writer
  thread). Reads may come from any thread at any time, concurrently with a write, and see
  either the state before the write or the state after it, never a mix.
* **Atomic and durable on return.** When ``append`` returns, the whole batch is on stable
  storage (fsync). When it raises, nothing of the batch is visible, and the backend is still
  usable: a retry of the same batch is allowed. ``StorageFullError`` means the disk or the map
  limit is full; any other ``StorageError`` means the write failed.
* **Append-only tree.** ``append`` must start exactly at the current size. Node hashes, once
  written, never change: a backend that is asked to write a different value for an existing
  node raises ``StorageCorruptError``.
* **Missing things raise** ``NotFoundError`` (an index past the size, a node that is not a
  complete subtree of the current tree, an unknown checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, overload

from translog.errors import MalformedError


@dataclass(slots=True)  # not frozen: built once per entry on the hot path; treat as immutable
class NewEntry:
    """One entry to store: the leaf bytes, and for committed leaves the salt and payload.

    For a committed leaf, ``leaf`` must be ``committed_leaf(ts, payload, salt)``: a backend may
    store the salt and payload without the commitment and recompute it on read (LMDB does).
    """

    leaf: bytes
    salt: bytes | None = None
    payload: bytes | None = None


class EntryColumns(Sequence[NewEntry]):
    """Entries held column by column: ``leaves[i]``, ``salts[i]`` and ``payloads[i]`` are
    the fields of entry ``i`` (salt None for an inline leaf, payload None unless committed).

    The sequencer builds a batch's entries this way, with no object per entry. As a sequence
    it yields :class:`NewEntry` values, so it stands wherever entries are expected; a backend
    may read the columns directly (LMDB does).
    """

    __slots__ = ("leaves", "payloads", "salts")

    def __init__(
        self,
        leaves: list[bytes] | None = None,
        salts: list[bytes | None] | None = None,
        payloads: list[bytes | None] | None = None,
    ) -> None:
        self.leaves: list[bytes] = [] if leaves is None else leaves
        self.salts: list[bytes | None] = [] if salts is None else salts
        self.payloads: list[bytes | None] = [] if payloads is None else payloads
        if not len(self.leaves) == len(self.salts) == len(self.payloads):
            raise MalformedError("entry columns of different lengths")

    def __len__(self) -> int:
        return len(self.leaves)

    def __iter__(self) -> Iterator[NewEntry]:
        return map(NewEntry, self.leaves, self.salts, self.payloads)

    @overload
    def __getitem__(self, i: int) -> NewEntry: ...

    @overload
    def __getitem__(self, i: slice) -> list[NewEntry]: ...

    def __getitem__(self, i: int | slice) -> NewEntry | list[NewEntry]:
        if isinstance(i, slice):
            return list(map(NewEntry, self.leaves[i], self.salts[i], self.payloads[i]))
        return NewEntry(self.leaves[i], self.salts[i], self.payloads[i])


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as read back. ``salt``/``payload`` are None for inline leaves and after erasure."""

    index: int
    leaf: bytes
    salt: bytes | None = None
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """Everything one sequenced batch adds, written in one atomic, durable transaction.

    ``nodes`` lists every complete tree node the batch creates, as (level, index, hash):
    the leaf hashes at level 0 and each interior node completed by the batch. The sequencer
    passes a :class:`~translog.core.merkle.NodeLevels` (the same triples, held level by level) and
    ``entries`` as :class:`EntryColumns`; a backend may use either form's lists directly.
    ``dedupe`` maps idempotency-key digests to the index of the entry they created.
    """

    start: int
    entries: Sequence[NewEntry]
    nodes: Sequence[tuple[int, int, bytes]]
    timestamp_ms: int
    dedupe: Mapping[bytes, int] = field(default_factory=dict)
    promised_done: Sequence[int] = ()
    """Promise records (see :meth:`Storage.put_promised`) this batch sequences; deleted with it."""
    index_puts: Sequence[tuple[bytes, bytes]] = ()
    """Secondary-index records (the ``index`` keyspace, see :meth:`Storage.index_write`) written
    in the same transaction as the entries, so indexes are exactly as durable as the log."""


class IndexReader(Protocol):
    """A consistent snapshot of the ``index`` keyspace (sorted bytes keys → bytes values)."""

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, or None."""
        ...

    def seek(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The first record whose key is ``>= key``, or None."""
        ...

    def seek_before(self, key: bytes) -> tuple[bytes, bytes] | None:
        """The last record whose key is ``< key``, or None."""
        ...


@dataclass(frozen=True, slots=True)
class PromisedEntry:
    """An accepted entry the log promised (``?wait=0``) but has not sequenced yet."""

    seq: int
    key: bytes | None
    entry: NewEntry


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A signed checkpoint from the history: its size, timestamp and the signed note bytes."""

    size: int
    timestamp_ms: int
    note: bytes


class LeafIndexAuditor(Protocol):
    """Checks a leaf-hash index against the leaf hashes fsck recomputes, in index order."""

    notes: list[str]
    """Things found that are not problems (fsck prints them), such as an unfinished merge."""

    def feed(self, start: int, hashes: Sequence[bytes]) -> list[tuple[int, str]]:
        """Take the leaf hashes of ``start, start + 1, …``; return (index, problem) pairs."""
        ...

    def finish(self) -> list[tuple[int, str]]:
        """Problems left after the last :meth:`feed`."""
        ...


class Storage(Protocol):
    """A one-log store. See the module docstring for the contract."""

    def size(self) -> int:
        """The number of durable leaves."""
        ...

    def last_timestamp(self) -> int:
        """The largest timestamp (ms) ever written by ``append``; 0 for an empty log."""
        ...

    def append(self, batch: WriteBatch) -> None:
        """Atomically and durably add ``batch``; ``batch.start`` must equal :meth:`size`.

        Raises ``StorageFullError`` when out of space (nothing written), ``StorageError``
        for other failures (nothing written), ``StorageCorruptError`` on a contract breach.
        """
        ...

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Hashes of complete subtrees (level, index) of the current tree, in one snapshot.

        Raises ``NotFoundError`` for a node that is not complete in the current tree.
        """
        ...

    def get_entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries ``start <= index < end``; ``end`` must not exceed the size."""
        ...

    def get_leaves(self, start: int, end: int) -> list[bytes] | None:
        """The leaves of entries ``start <= index < end`` (what an entry bundle serves), or
        None when some entry stores a payload the leaf does not cover (a committed payload
        kept beside its leaf): the caller then reads full entries and checks the payloads."""
        ...

    def lookup_dedupe(self, key: bytes) -> int | None:
        """The index recorded for an idempotency-key digest, or None."""
        ...

    def lookup_dedupe_many(self, keys: Sequence[bytes]) -> list[int | None]:
        """:meth:`lookup_dedupe` of each key, in order (one read for them all)."""
        ...

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """The smallest index whose leaf hash is ``leaf_hash``, or None."""
        ...

    def leaf_index_auditor(self) -> LeafIndexAuditor | None:
        """A checker of the stored leaf-hash index for fsck, or None to check by lookups."""
        ...

    def put_checkpoint(self, checkpoint: StoredCheckpoint) -> None:
        """Durably record a signed checkpoint and make it the latest.

        The history keeps the first checkpoint signed for each size; a later one of the same
        size only replaces the latest. Sizes must not decrease (``StorageCorruptError``).
        """
        ...

    def latest_checkpoint(self) -> StoredCheckpoint | None:
        """The most recently recorded checkpoint, or None."""
        ...

    def checkpoints(self, start_size: int = 0) -> Iterator[StoredCheckpoint]:
        """The checkpoint history in increasing size, from ``start_size``."""
        ...

    def put_promised(self, items: Sequence[PromisedEntry]) -> None:
        """Durably record promised entries before the promise is given.

        They stay until a batch names their ``seq`` in ``promised_done``; after a crash the log
        re-sequences every remaining one, in ``seq`` order, before anything new.
        """
        ...

    def promised(self) -> list[PromisedEntry]:
        """Promised entries not yet sequenced, in ``seq`` order."""
        ...

    def erase_payload(self, index: int) -> bool:
        """Durably drop the salt and payload of a committed entry; the leaf stays.

        Returns False when there was nothing to erase (inline leaf or already erased).
        """
        ...

    def index_reader(self) -> AbstractContextManager[IndexReader]:
        """A read snapshot of the ``index`` keyspace (short-lived: no await inside)."""
        ...

    def index_write(
        self,
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
        *,
        clear_prefix: bytes | None = None,
        erase: Sequence[int] = (),
    ) -> int:
        """Durably, in one transaction: delete every key starting with ``clear_prefix``, then
        ``deletes`` (missing keys are fine), then ``puts``, and erase the payloads of the
        entries ``erase`` exactly as :meth:`erase_payload` does (so an erasure and its index
        records are atomic). Returns how many payloads were erased. Writer thread only."""
        ...

    def pending_rewrites(self) -> list[tuple[int, int]]:
        """Level-0 tiles with an erasure their published payload bundles may still hold.

        ``(tile index, generation)`` pairs, by tile index. Every erasure (
        :meth:`erase_payload`, :meth:`index_write` with ``erase``) bumps the generation of
        its entry's tile in the same transaction, so the queue survives a crash.
        """
        ...

    def rewrite_done(self, tile: int, generation: int) -> None:
        """Drop ``tile`` from :meth:`pending_rewrites` if its generation is still
        ``generation`` (an erasure since then keeps it queued)."""
        ...

    def close(self) -> None:
        """Release resources. Idempotent."""
        ...


def entry_get(storage: Storage, index: int) -> StoredEntry:
    """Convenience: one entry by index (``NotFoundError`` if absent)."""
    return storage.get_entries(index, index + 1)[0]
