"""Group commit: the sequencer task cuts everything pending (up to ``max_batch_entries``) into
a batch whenever the writer thread is free, and the writer appends it durably in one storage
transaction, then signs a checkpoint over it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.merkle import NodeLevels, leaf_hash
from translog.errors import (
    LeaseLostError,
    PushbackError,
    SequencerFatalError,
    StorageError,
    StorageFullError,
)
from translog.log.base import (
    AcceptedRun,
    Appended,
    AppendedRun,
    Group,
    LogState,
    SignedCheckpoint,
    log,
)
from translog.storage.base import EntryColumns, WriteBatch

FULL_RETRY_SECONDS = 0.5
LEASE_RETRY_SECONDS = 1.0
"""Pause before retrying promised entries after a batch failed with storage full."""


_Row = tuple[AcceptedRun, list[tuple[int, int]]]
"""A group planned entry by entry: its entries and, for each, (index, position in the group), or
(earlier index, -1) for a duplicate."""
_BULK = 16
"""Groups at least this large take the bulk path of ``_integrate`` (when all their entries are of
one kind and none of their idempotency keys is known yet)."""


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


class GroupCommit(LogState):
    """The sequencing of a :class:`~translog.log.sequencer.Log`: its task and writer thread."""

    # -- sequencing --------------------------------------------------------------------

    def _cut(self) -> list[Group]:
        groups: list[Group] = []
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
            except LeaseLostError as e:
                # Checked before anything is written: the state is known. Refuse (503 with
                # Retry-After) and keep sequencing; writes resume if the lease is renewed
                # (a healed partition), never once another instance took it over.
                self.stats["lease_refused"] += 1
                kept = [g for g in groups if g.promise_seqs]
                log.error("batch refused: %s (%d promised entries kept)", e, len(kept))
                refused = PushbackError(
                    f"{e}; this instance does not sequence now", retry_after=LEASE_RETRY_SECONDS
                )
                self._fail([g for g in groups if not g.promise_seqs], refused)
                self._pool.extendleft(reversed(kept))
                self._pending += sum(len(g.accepted) for g in kept)
                if kept:
                    await asyncio.sleep(LEASE_RETRY_SECONDS)
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

    def _release_keys(self, group: Group) -> None:
        for k in group.keys or ():
            if k is not None and self._inflight.get(k) is group.future:
                del self._inflight[k]

    def _fail(self, groups: list[Group], error: BaseException) -> None:
        for group in groups:
            self._release_keys(group)
            if not group.future.done():
                group.future.set_exception(error)

    def _integrate(self, groups: list[Group]) -> list[Sequence[Appended]]:
        """Writer thread: append the batch durably, then sign a checkpoint over it.

        A group whose entries are all of one kind and whose idempotency keys (if any) are all
        new (:meth:`_fresh_keys`) takes the fast path: its columns are appended whole, in
        order, and its outcome is an :class:`AppendedRun`; no object is made per entry. Any
        other group goes entry by entry, resolving keys against the batch and the stored
        index. The tree nodes of the whole
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
            if len(accs) >= _BULK:
                kind = _kind(accs.salts)
                first = start + len(hashes)
                if kind is not None and (
                    group.keys is None or self._fresh_keys(group.keys, dedupe, first)
                ):
                    plan.append(_Run(first, accs))
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

    def _fresh_keys(self, keys: list[bytes | None], dedupe: dict[bytes, int], first: int) -> bool:
        """True, recording each key's index from ``first`` in ``dedupe``, when no key of the
        group is known: none repeats within it, none is earlier in the batch (``dedupe``),
        none is stored (one read for them all). Else False and nothing is recorded: the group
        goes entry by entry, where a known key maps to the earlier entry."""
        present = [k for k in keys if k is not None]
        if len(set(present)) != len(present) or not dedupe.keys().isdisjoint(present):
            return False
        if any(i is not None for i in self.storage.lookup_dedupe_many(present)):
            return False
        for j, key in enumerate(keys):
            if key is not None:
                dedupe[key] = first + j
        return True

    def _plan_group(
        self,
        group: Group,
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
