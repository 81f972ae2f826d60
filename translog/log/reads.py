"""The log's read side: every entry and leaf it serves is checked against the tree's stored
leaf hash first (:func:`check_entries`, :func:`check_leaves`), and proofs and roots are only
given for sizes the tree holds durably.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from translog.core.leaf import (
    COMMITTED_LEAF_SIZE,
    KIND_COMMITTED,
    LEAF_VERSION,
    SALT_SIZE,
    verify_payload,
)
from translog.core.merkle import (
    assemble_audit_path,
    plan_audit_path,
    prove_consistency,
    prove_inclusion,
    tree_hash,
)
from translog.errors import MalformedError, StorageCorruptError, TranslogError
from translog.log.base import LogState, SignedCheckpoint
from translog.storage.base import Storage, StoredEntry

CHECK_BLOCK = 4096


def check_entries(storage: Storage, entries: Sequence[StoredEntry]) -> None:
    """Raise ``StorageCorruptError`` unless every entry matches its stored leaf hash (and a
    committed entry's payload matches its commitment)."""
    if entries:
        verify_entries(entries, storage.read_hashes([(0, e.index) for e in entries]))


def verify_entries(entries: Sequence[StoredEntry], stored: Sequence[bytes]) -> None:
    """:func:`check_entries` with the entries' stored leaf hashes already read."""
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


def read_entry_and_proof(
    storage: Storage, index: int, size: int
) -> tuple[StoredEntry, tuple[bytes, ...]]:
    """Entry ``index``, checked against its stored leaf hash, and its audit path in the tree
    of ``size`` leaves: the leaf hash and the proof's nodes come from one hash read."""
    if not 0 <= index < size:
        raise MalformedError(f"leaf index {index} is out of range for tree size {size}")
    nodes, split, tail = plan_audit_path(0, index, size)
    hashes = storage.read_hashes([(0, index), *nodes])
    entries = storage.get_entries(index, index + 1)
    verify_entries(entries, hashes[:1])
    return entries[0], assemble_audit_path(hashes[1:], split, tail)


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


class Reads(LogState):
    """The read methods of a :class:`~translog.log.sequencer.Log`: synchronous and cheap."""

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
        """The newest checkpoint shown to clients: published on the interval; with an object
        store (``fenced``), the newest one the store accepted from this process."""
        return self._shown

    @property
    def local_published(self) -> SignedCheckpoint | None:
        """The newest checkpoint published here (durable in storage), in the store or not:
        what an object-store publisher uploads next. Never shown to clients when fenced."""
        return self._published

    @property
    def head(self) -> SignedCheckpoint | None:
        """The newest checkpoint an answer may quote: the per-batch one, or when fenced the
        store's (:attr:`published`)."""
        return self._shown if self.fenced else self._current

    @property
    def fatal(self) -> BaseException | None:
        """Why the sequencer stopped, if it did."""
        return self._fatal

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        """Audit path for ``index`` in the tree of ``size`` leaves (size ≤ durable size)."""
        self._check_size(size)
        return prove_inclusion(index, size, self.storage)

    def entry_and_proof(self, index: int, size: int) -> tuple[StoredEntry, tuple[bytes, ...]]:
        """Entry ``index`` (checked) and its audit path in the tree of ``size`` leaves."""
        self._check_size(size)
        return read_entry_and_proof(self.storage, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """Consistency proof from ``old_size`` to ``new_size`` (new_size ≤ durable size)."""
        self._check_size(new_size)
        return prove_consistency(old_size, new_size, self.storage)

    def root_at(self, size: int) -> bytes:
        """The root hash of the first ``size`` leaves."""
        self._check_size(size)
        return tree_hash(size, self.storage)

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """The index of the durable leaf with this leaf hash (the leaf-hash index), or None."""
        return self.storage.find_leaf_hash(leaf_hash)

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
