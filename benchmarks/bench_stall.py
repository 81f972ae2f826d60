"""Commit stalls: small batches appended to ``LMDBStorage`` for millions of entries.

The HTTP path commits batches of about 64 entries. This appends such batches (inline leaves
with 200-byte random payloads, leaf and tree hashes computed outside the clock) back to back
and times every ``LMDBStorage.append`` (one durable write transaction each), then reports, per
window of 10^5 entries, the commit time p50 / p99 / max and the process's anonymous memory
(``RssAnon``, sampled every 256 batches). Two modes run in the same process, one after the
other, on fresh stores:

* **background**: translog's default, merges of the leaf-hash index over
  ``inline_merge_max`` items go to the background merger;
* **inline**: ``inline_merge_max`` = ``leafindex.MAX_RUN``, so every merge is done inside
  ``append`` as translog did before the merger (the same-run baseline).

At the end of each mode the clock waits for the merger to be idle, so deferred work counts in
the throughput. Run alone for the per-window table: ``python -m benchmarks.bench_stall
--entries 3000000``; ``--modes old`` runs against a tree without the merger (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Series, Settings, percentile, progress, scratch_dir
from translog.core.leaf import inline_leaf
from translog.core.merkle import Frontier, leaf_hash
from translog.storage import leafindex
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage

BATCH = 64
WINDOW = 100_000
PAYLOAD = 200
POOL = 1 << 16
"""Distinct payloads; leaves stay distinct, since each batch has its own timestamp."""


@dataclass
class Window:
    """Commit times and memory of one window of entries."""

    end: int
    commits_ms: list[float] = field(default_factory=list)
    anon_mib: float = 0.0

    def summary(self) -> dict[str, float]:
        """p50, p99 and max commit time (ms) and the largest anonymous memory seen (MiB)."""
        c = self.commits_ms
        return {
            "end": self.end,
            "p50_ms": percentile(c, 50),
            "p99_ms": percentile(c, 99),
            "max_ms": max(c),
            "anon_mib": self.anon_mib,
        }


@dataclass
class StallRun:
    """One mode's outcome."""

    mode: str
    entries: int
    seconds: float
    settle_seconds: float
    windows: list[Window]
    slow: list[tuple[float, int, float]] = field(default_factory=list)
    """Commits over 50 ms: (seconds since the start, first index of the batch, ms)."""
    cpu_seconds: float = 0.0
    """Process CPU time (all threads, the merger's included)."""

    @property
    def rate(self) -> float:
        """Entries per second, including the wait for the merger at the end."""
        return self.entries / self.seconds

    def all_commits(self) -> list[float]:
        """Every commit time (ms)."""
        return [c for w in self.windows for c in w.commits_ms]


def anon_mib() -> float:
    """The process's anonymous resident memory (``RssAnon``) in MiB; 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _open(path: Path, mode: str) -> LMDBStorage:
    if mode == "old":
        return LMDBStorage(path)
    if "inline_merge_max" not in inspect.signature(LMDBStorage).parameters:
        raise SystemExit(f"mode {mode!r} needs the background merger; use --modes old")
    limit = leafindex.MAX_RUN if mode == "inline" else leafindex.INLINE_MAX
    return LMDBStorage(path, inline_merge_max=limit)


def drive(path: Path, mode: str, entries: int, max_seconds: float) -> StallRun:
    """Append ``entries`` (or until ``max_seconds``) in batches of :data:`BATCH`."""
    pool = os.urandom(PAYLOAD * POOL)
    payloads = [pool[i : i + PAYLOAD] for i in range(0, len(pool), PAYLOAD)]
    storage = _open(path, mode)
    frontier = Frontier()
    windows = [Window(WINDOW)]
    clock = time.perf_counter
    started, cpu = clock(), time.process_time()
    ts, n, batches = 1_700_000_000_000, 0, 0
    slow: list[tuple[float, int, float]] = []
    try:
        while n < entries and clock() - started < max_seconds:
            ts += 1
            k = min(BATCH, entries - n)
            leaves = [inline_leaf(ts, payloads[(n + i) % POOL]) for i in range(k)]
            nodes = frontier.extend([leaf_hash(leaf) for leaf in leaves])
            batch = WriteBatch(n, [NewEntry(leaf) for leaf in leaves], nodes, ts)
            t = clock()
            storage.append(batch)
            ms = 1e3 * (clock() - t)
            windows[-1].commits_ms.append(ms)
            if ms > 50:
                slow.append((t - started, n, ms))
            n += k
            batches += 1
            if batches % 256 == 0:
                windows[-1].anon_mib = max(windows[-1].anon_mib, anon_mib())
            if n >= windows[-1].end and n < entries:
                progress(f"stall {mode}: {n:,} entries, {_line(windows[-1])}")
                windows.append(Window(windows[-1].end + WINDOW))
        settle = clock()
        wait = getattr(storage, "wait_for_merges", None)
        if wait is not None:
            wait()
        done = clock()
        windows[-1].anon_mib = max(windows[-1].anon_mib, anon_mib())
    finally:
        storage.close()
    progress(f"stall {mode}: {n:,} entries in {done - started:.1f} s, {_line(windows[-1])}")
    cpu = time.process_time() - cpu
    return StallRun(mode, n, done - started, done - settle, windows, slow, cpu)


def _line(w: Window) -> str:
    s = w.summary()
    return (
        f"commit p50 {s['p50_ms']:.2f} / p99 {s['p99_ms']:.1f} / max {s['max_ms']:.0f} ms, "
        f"anon {s['anon_mib']:.0f} MiB"
    )


def run_mode(mode: str, entries: int, max_seconds: float) -> StallRun:
    """One mode on a fresh store in a scratch directory."""
    with scratch_dir(f"stall-{mode}") as path:
        return drive(path / "db", mode, entries, max_seconds)


def run(settings: Settings) -> list[Row]:
    """Rows for ``benchmarks.run``: background vs inline merges, paired per repetition."""
    entries = 300_000 if settings.quick else 2_000_000
    reps = 1
    series = Series("stall")
    for _ in range(reps):
        for mode in ("inline", "background"):
            result = run_mode(mode, entries, 1800)
            commits = result.all_commits()
            label = f"{mode} merges (n={entries:.0e})".replace("+0", "")
            series.add(f"{mode}: max", max(commits))
            series.add(f"{mode}: p99", percentile(commits, 99))
            series.add(
                f"{mode}: worst window p99", max(w.summary()["p99_ms"] for w in result.windows)
            )
            series.add(f"{mode}: rate", result.rate)
            series.add(f"{mode}: per CPU-second", result.entries / result.cpu_seconds)
            series.add(f"{mode}: anon", max(w.anon_mib for w in result.windows))
            progress(f"stall: {label}: {result.rate:,.0f} entries/s, max {max(commits):.0f} ms")
    rows = []
    for mode in ("inline", "background"):
        base = "inline" if mode == "background" else ""
        for key, unit in (
            ("max", "ms"),
            ("p99", "ms"),
            ("worst window p99", "ms"),
            ("rate", "entries/s"),
            ("per CPU-second", "entries/s"),
            ("anon", "MiB"),
        ):
            note = f"batches of {BATCH}, n={entries:,}"
            baseline = f"{base}: {key}" if base else ""
            rows.append(series.row(f"{mode}: {key}", unit, baseline, note))
    return rows


def merge_costs(
    path: Path, sizes: Sequence[int] = (1 << 12, 1 << 14, 1 << 15, 1 << 16, 1 << 18)
) -> None:
    """Print how long an inline merge of 8 runs into ``n`` items takes in one write
    transaction (read, merge, write, delete the inputs, commit): what ``inline_merge_max``
    trades against."""
    import random

    for n in sizes:
        storage = LMDBStorage(path / f"m{n}", inline_merge_max=leafindex.MAX_RUN)
        rng = random.Random(n)
        part = n // leafindex.FANOUT
        frontier = Frontier()
        times = []
        for k in range(leafindex.FANOUT):
            hashes = [rng.randbytes(32) for _ in range(part)]
            leaves = [inline_leaf(1, h) for h in hashes]
            nodes = frontier.extend([leaf_hash(leaf) for leaf in leaves])
            t = time.perf_counter()
            storage.append(WriteBatch(k * part, [NewEntry(leaf) for leaf in leaves], nodes, 1))
            times.append(time.perf_counter() - t)
        storage.close()
        print(
            f"merge of 8 runs into {n:>7,} items: last append {1e3 * times[-1]:7.1f} ms "
            f"(the others: median {1e3 * sorted(times[:-1])[3]:.1f} ms)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the modes given and print (and optionally save) the per-window figures."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_stall", description=__doc__)
    p.add_argument("--entries", type=int, default=3_000_000)
    p.add_argument("--max-seconds", type=float, default=1200, help="per mode (default 1200)")
    p.add_argument(
        "--modes", default="background,inline", help="background, inline, old (comma-separated)"
    )
    p.add_argument("--json", type=Path, help="write the windows here")
    p.add_argument("--merge-costs", action="store_true", help="only time inline merges by size")
    p.add_argument(
        "--log-merges",
        action="store_true",
        help="log each background merge (with its time) and list commits over 50 ms",
    )
    args = p.parse_args(argv)
    if args.log_merges:
        logging.basicConfig(format="[%(relativeCreated)8.0f ms] %(threadName)s: %(message)s")
        logging.getLogger("translog.storage").setLevel(logging.INFO)
    if args.merge_costs:
        with scratch_dir("merge-costs") as path:
            merge_costs(path)
        return 0
    out: dict[str, Any] = {}
    for mode in args.modes.split(","):
        result = run_mode(mode, args.entries, args.max_seconds)
        out[mode] = {
            "entries": result.entries,
            "seconds": result.seconds,
            "settle_seconds": result.settle_seconds,
            "rate": result.rate,
            "cpu_seconds": result.cpu_seconds,
            "windows": [w.summary() for w in result.windows],
        }
        commits = result.all_commits()
        print(
            f"{mode}: {result.entries:,} entries, {result.rate:,.0f} entries/s, "
            f"{result.entries / result.cpu_seconds:,.0f} per CPU-second "
            f"(merger settled in {result.settle_seconds:.2f} s); commit p50 "
            f"{percentile(commits, 50):.2f} p99 {percentile(commits, 99):.1f} "
            f"max {max(commits):.0f} ms"
        )
        for w in result.windows:
            print("  " + json.dumps(w.summary()))
        if args.log_merges:
            for at, index, ms in result.slow:
                print(f"  slow commit at {at:.1f} s, entries from {index:,}: {ms:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
