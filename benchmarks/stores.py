"""Build large LMDB stores fast: write batches straight through ``LMDBStorage.append``.

This bypasses the ``Log`` (no pool, no event loop, no signing) but writes exactly what the
sequencer writes: committed leaves (timestamp, salt, 200-byte random payload), their leaf
hashes and every tree node a :class:`~translog.core.merkle.Frontier` creates, one durable
transaction per batch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import progress
from translog.core.leaf import committed_leaf, new_salts
from translog.core.merkle import Frontier, leaf_hash
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage

PAYLOAD = 200
_TS = 1_700_000_000_000


@dataclass(frozen=True)
class Built:
    """A store on disk: its size, root, and how long building it took."""

    path: Path
    size: int
    root: bytes
    seconds: float

    @property
    def rate(self) -> float:
        """Entries written per second while building."""
        return self.size / self.seconds


def make_batch(frontier: Frontier, count: int, ts: int) -> WriteBatch:
    """The next ``count`` committed entries and the nodes they complete, as one batch."""
    start = frontier.size
    pool = os.urandom(PAYLOAD * count)
    entries: list[NewEntry] = []
    nodes: list[tuple[int, int, bytes]] = []
    for i, salt in enumerate(new_salts(count)):
        payload = pool[i * PAYLOAD : (i + 1) * PAYLOAD]
        leaf = committed_leaf(ts, payload, salt)
        entries.append(NewEntry(leaf, salt, payload))
        nodes.extend(frontier.append(leaf_hash(leaf)))
    return WriteBatch(start, entries, nodes, ts)


def build(path: Path, size: int, *, batch: int = 100_000, index_leaf_hashes: bool = True) -> Built:
    """Create a store of ``size`` entries in ``path`` with batches of ``batch`` entries."""
    storage = LMDBStorage(path, index_leaf_hashes=index_leaf_hashes)
    frontier = Frontier()
    started = time.perf_counter()
    last_report = started
    try:
        while frontier.size < size:
            count = min(batch, size - frontier.size)
            storage.append(make_batch(frontier, count, _TS + frontier.size // batch))
            if time.perf_counter() - last_report > 10:
                last_report = time.perf_counter()
                progress(f"  built {frontier.size:,} of {size:,} entries")
        seconds = time.perf_counter() - started
    finally:
        storage.close()
    return Built(path, size, frontier.root(), seconds)
