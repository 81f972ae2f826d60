"""Opening a log over stored data: what the log signed must still match the tree, the newest
entries their leaf hashes, and promised entries a crash left unsequenced go back to the head of
the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import leaf_hash, tree_hash
from translog.core.vkey import parse_vkey
from translog.errors import StorageCorruptError, TranslogError
from translog.log.base import Accepted, AcceptedRun, Appended, Group, LogState, log
from translog.log.reads import CHECK_BLOCK, check_entries


def _log_recovery(fut: asyncio.Future[Sequence[Appended]]) -> None:
    if fut.cancelled():
        return
    error = fut.exception()
    if error is not None:
        log.critical("couldn't re-sequence promised entries: %s", error)
    else:
        log.warning("re-sequenced %d promised entries", len(fut.result()))


class Recovery(LogState):
    """The startup checks and crash recovery of a :class:`~translog.log.sequencer.Log`."""

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
        for lo in range(start, size, CHECK_BLOCK):
            check_entries(self.storage, self.storage.get_entries(lo, min(size, lo + CHECK_BLOCK)))

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
        group = Group(AcceptedRun.of(accepted), payloads, keys, fut, promise_seqs=seqs)
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
