"""``translog audit`` throughput over loopback against ``translog serve`` at 10^6 entries.

A store of 10^6 committed entries (42-byte leaves) is built offline (benchmarks/stores.py) and
served by ``translog serve`` in a subprocess; then, interleaved in every repetition:

* **audit**: the full recompute ``translog audit`` runs (:func:`translog.monitor.audit.audit`,
  in this process, quiet): fetch the checkpoint, every entry bundle and every hash tile over
  HTTP, hash every entry, rebuild every tile and the root, compare them all. Entries/s of wall
  time. The server runs on the same 2 cores, so the audit pays for its own HTTP serving too.
* **hashing floor**: a bare loop over the same leaves, already in memory: one
  ``sha256(0x00 || leaf)`` per entry and one ``sha256(0x01 || left || right)`` per interior
  node up to the root, i.e. exactly the hashing a full recompute must do, nothing else.
* **leaf-hash floor** (context): only the leaf hashes.

The ratio audit / hashing floor is paired per repetition; the target is >= 0.40.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

from benchmarks.bench_http import make_data_dir, start_translog
from benchmarks.common import Row, Series, Settings, progress, scratch_dir
from benchmarks.stores import build
from translog.monitor.alerts import Reporter
from translog.monitor.audit import audit
from translog.monitor.config import LogConfig


def hashing_floor(leaves: list[bytes]) -> bytes:
    """Leaf hashes and every interior node to the root, in a bare loop (RFC 6962 shape)."""
    sha = hashlib.sha256
    level = [sha(b"\x00" + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        odd = level[-1:] if len(level) % 2 else []
        # A lone last node moves up unchanged (the RFC 6962 split gives the same root).
        level = [
            sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ] + odd
    return level[0]


def leaf_floor(leaves: list[bytes]) -> int:
    """Only the leaf hashes."""
    sha = hashlib.sha256
    return len([sha(b"\x00" + leaf).digest() for leaf in leaves])


def _fetch_leaves(tmp: Path, data_path: Path, size: int) -> list[bytes]:
    """The leaves, read straight from the store (for the floors)."""
    from translog.storage.lmdb import LMDBStorage

    storage = LMDBStorage(data_path / "lmdb", readonly=True)
    try:
        leaves: list[bytes] = []
        step = 65_536
        for start in range(0, size, step):
            leaves += [e.leaf for e in storage.get_entries(start, min(start + step, size))]
        return leaves
    finally:
        storage.close()


def run(settings: Settings) -> list[Row]:
    """Build, serve, and time audit vs the floors, interleaved."""
    size = 100_000 if settings.quick else 1_000_000
    series = Series("audit")
    with scratch_dir("audit") as tmp:
        data = make_data_dir(tmp / "log")
        progress(f"audit: building a store of {size:,} entries")
        built = build(data.path / "lmdb", size)
        progress(f"audit: built in {built.seconds:.1f} s")
        server = start_translog(data, tmp, "audit-serve")
        try:
            leaves = _fetch_leaves(tmp, data.path, size)
            url = f"http://127.0.0.1:{server.port}"
            cfg = LogConfig(name="bench", url=url, vkey=data.vkey, read_token=data.token)
            for rep in range(settings.reps):
                started = time.perf_counter()
                result = asyncio.run(audit(cfg, Reporter(tmp / "evidence", [], None)))
                seconds = time.perf_counter() - started
                if result.alerts or result.size < size:
                    raise RuntimeError(f"audit found {result.alerts} at size {result.size}")
                series.add("audit", result.size / seconds)
                started = time.perf_counter()
                root = hashing_floor(leaves)
                floor = time.perf_counter() - started
                if root != built.root:
                    raise RuntimeError("the hashing floor computed another root")
                series.add("hashing floor", size / floor)
                started = time.perf_counter()
                leaf_floor(leaves)
                series.add("leaf-hash floor", size / (time.perf_counter() - started))
                progress(
                    f"audit: rep {rep + 1}: audit {result.size / seconds:,.0f}/s, floor "
                    f"{size / floor:,.0f}/s ({result.size / seconds / (size / floor):.2f})"
                )
        finally:
            server.stop()
    note = f"{size:,} entries, loopback, server on the same 2 cores"
    return [
        series.row("audit", "entries/s", "hashing floor", note),
        series.row("hashing floor", "entries/s", note="leaf + node hashes, bare loop"),
        series.row("leaf-hash floor", "entries/s", note="leaf hashes only"),
    ]
