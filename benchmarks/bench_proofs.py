"""Proof generation from LMDB: ``prove_inclusion`` / ``prove_consistency`` over ``LMDBStorage``.

Per size, a store is built straight through ``LMDBStorage.append`` (see benchmarks/stores.py),
then, interleaved in every repetition:

* **cold**: the environment is closed, ``data.mdb`` is evicted from the page cache
  (``posix_fadvise(DONTNEED)``, checked with ``fincore``) and the storage reopened, so both
  the OS cache and translog's node cache are empty; the first proof is timed. A "cold run"
  then times a burst of random proofs right after such a reopen.
* **warm**: on an open storage whose hash pages were all read once (the steady state of a
  server with RAM to spare) and whose node cache was primed by 20,000 other random proofs, a
  fresh set of random proofs (so nothing is answered from a cache of the same query). Also
  at the latest size only (random indexes, one tree size), the common case of clients
  proving against the newest checkpoint.
* **proof-math floor**: the same proofs against a reader that returns constant hashes, i.e.
  the cost of ``translog.core.merkle`` alone, with no storage.
* **pymerkle 7** ``SqliteTree`` (at 10^5 and 10^6): bulk ``append_entries``, first root and
  first proof after a reopen with the file evicted, then warm proofs/s (1-based indexes).
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Row,
    Series,
    Settings,
    evict_file,
    percentile,
    progress,
    resident_bytes,
    scratch_dir,
)
from benchmarks.stores import PAYLOAD, Built, build
from translog.core.merkle import prove_consistency, prove_inclusion, tree_hash
from translog.storage.lmdb import LMDBStorage

Query = tuple[int, int]
Prover = Callable[[Query], object]


@dataclass
class Timing:
    """Throughput and per-call latencies of one timed burst."""

    rate: float
    cpu_rate: float
    """Proofs per second of process CPU time: robust to other load on the machine."""
    latencies: list[float]


class _ConstantReader:
    """A ``HashReader`` that returns one fixed hash: the proof-math floor."""

    _HASH = bytes(32)

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        return [self._HASH] * len(nodes)


def inclusion_queries(size: int, count: int, seed: int) -> list[Query]:
    """Random (index, tree size) pairs: size uniform in [1, size], index below it."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(1, size)
        out.append((rng.randrange(n), n))
    return out


def latest_queries(size: int, count: int, seed: int) -> list[Query]:
    """Random indexes in the tree of exactly ``size`` (proofs against the latest checkpoint)."""
    rng = random.Random(seed)
    return [(rng.randrange(size), size) for _ in range(count)]


def consistency_queries(size: int, count: int, seed: int) -> list[Query]:
    """Random (old size, new size) pairs with 1 <= old < new <= size."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        new = rng.randint(2, size)
        out.append((rng.randint(1, new - 1), new))
    return out


def time_burst(prove: Prover, queries: Sequence[Query]) -> Timing:
    """Call ``prove`` on each query; return proofs/s and each call's latency."""
    clock = time.perf_counter
    latencies = []
    started, cpu = clock(), time.process_time()
    for q in queries:
        t = clock()
        prove(q)
        latencies.append(clock() - t)
    elapsed, cpu = clock() - started, time.process_time() - cpu
    return Timing(len(queries) / elapsed, len(queries) / cpu, latencies)


def _translog_provers(storage: LMDBStorage) -> tuple[Prover, Prover]:
    def inclusion(q: Query) -> object:
        return prove_inclusion(q[0], q[1], storage)

    def consistency(q: Query) -> object:
        return prove_consistency(q[0], q[1], storage)

    return inclusion, consistency


def prefault_hashes(storage: LMDBStorage) -> int:
    """Read every hash chunk once, so that all hash pages are in the page cache; bytes read.

    This is the steady state of a long-running server with RAM to spare (the hashes are about
    44 bytes per entry); random proofs alone would take a very long time to fault in every
    page of a 10^7-entry store after a cold start.
    """
    total = 0
    env = storage.raw_env()
    with env.begin(buffers=True) as txn:
        for name, db in storage.db_handles().items():
            if name.startswith("h") and name[1:].isdigit():
                total += sum(map(len, txn.cursor(db=db).iternext(keys=False)))
    return total


def _reopen_cold(path: Path, storage: LMDBStorage | None, global_drop: bool) -> LMDBStorage:
    """Close ``storage``, evict its data file from the page cache and open it again."""
    if storage is not None:
        storage.close()
    evict_file(path / "data.mdb", global_drop=global_drop)
    return LMDBStorage(path, readonly=True)


def cold_first_proofs(built: Built, queries: Sequence[Query], global_drop: bool) -> list[float]:
    """Latency of the first inclusion proof after each cold reopen, one per query."""
    latencies = []
    storage = None
    for index, size in queries:
        storage = _reopen_cold(built.path, storage, global_drop)
        t = time.perf_counter()
        prove_inclusion(index, size, storage)
        latencies.append(time.perf_counter() - t)
    if storage is not None:
        storage.close()
    return latencies


def _translog_repetition(
    series: Series, built: Built, queries: dict[str, list[Query]], settings: Settings
) -> None:
    """One repetition of every translog measurement, recorded in ``series``."""
    tag = _tag(built.size)
    cold = cold_first_proofs(built, queries["cold"], settings.drop_caches)
    series.add(f"translog cold first inclusion proof p50 {tag}", 1e3 * percentile(cold, 50))
    series.add(f"translog cold first inclusion proof p99 {tag}", 1e3 * percentile(cold, 99))
    storage = _reopen_cold(built.path, None, settings.drop_caches)
    resident = resident_bytes(built.path / "data.mdb")
    t = time.perf_counter()
    root = tree_hash(built.size, storage)
    series.add(f"translog first root {tag}", 1e3 * (time.perf_counter() - t))
    if root != built.root:
        raise AssertionError("the stored tree's root differs from the one built")
    inclusion, consistency = _translog_provers(storage)
    run = time_burst(inclusion, queries["cold run"])
    _record(series, f"translog inclusion, cold run {tag}", run)
    # Warm: every hash page resident and the node cache primed by other random proofs; then
    # unseen random queries.
    prefault_hashes(storage)
    time_burst(inclusion, queries["warm-up"])
    time_burst(consistency, queries["warm-up con"])
    _record(series, f"translog inclusion, warm {tag}", time_burst(inclusion, queries["inc"]))
    _record(series, f"translog consistency, warm {tag}", time_burst(consistency, queries["con"]))
    latest = time_burst(inclusion, queries["latest"])
    _record(series, f"translog inclusion at the latest size, warm {tag}", latest)
    storage.close()
    _floor(series, tag, queries)
    cold_ms = 1e3 * percentile(cold, 50)
    progress(f"proofs {tag}: {resident} B resident after eviction; cold p50 {cold_ms:.2f} ms")


def _floor(series: Series, tag: str, queries: dict[str, list[Query]]) -> None:
    """The same warm queries against a constant reader: merkle.py's own cost."""
    floor = _ConstantReader()
    for kind, fn, key in (
        ("inclusion", prove_inclusion, "inc"),
        ("consistency", prove_consistency, "con"),
        ("inclusion at the latest size", prove_inclusion, "latest"),
    ):
        timing = time_burst(lambda q, fn=fn: fn(q[0], q[1], floor), queries[key])
        series.add(f"proof-math floor, {kind} {tag}", timing.rate)
        series.add(f"proof-math floor, {kind} {tag}: per CPU-second", timing.cpu_rate)


def _record(series: Series, label: str, timing: Timing) -> None:
    series.add(label, timing.rate)
    series.add(f"{label}: per CPU-second", timing.cpu_rate)
    series.add(f"{label} p50", 1e6 * percentile(timing.latencies, 50))
    series.add(f"{label} p99", 1e6 * percentile(timing.latencies, 99))


def _tag(size: int) -> str:
    return f"(n={size:.0e})".replace("+0", "")


def _pymerkle_payloads(size: int, chunk: int = 100_000) -> Iterator[bytes]:
    """``size`` random 200-byte payloads, generated a chunk at a time."""
    left = size
    while left:
        count = min(chunk, left)
        pool = os.urandom(PAYLOAD * count)
        for i in range(count):
            yield pool[i * PAYLOAD : (i + 1) * PAYLOAD]
        left -= count


def build_pymerkle(path: Path, size: int) -> float:
    """Bulk-append ``size`` payloads to a pymerkle ``SqliteTree``; entries/s."""
    from pymerkle import SqliteTree

    tree = SqliteTree(str(path))
    started = time.perf_counter()
    tree.append_entries(_pymerkle_payloads(size), chunksize=100_000)
    elapsed = time.perf_counter() - started
    tree.close()
    return size / elapsed


def _pymerkle_cold(path: Path, call: Callable[[Any], object]) -> float:
    """Seconds for ``call(tree)`` on a freshly opened tree whose file was evicted."""
    from pymerkle import SqliteTree

    evict_file(path)
    tree = SqliteTree(str(path))
    started = time.perf_counter()
    call(tree)
    elapsed = time.perf_counter() - started
    tree.close()
    return elapsed


def _pymerkle_repetition(series: Series, path: Path, size: int, queries: list[Query]) -> None:
    """First root, first proof (cold), then first-time and repeated random proofs."""
    from pymerkle import SqliteTree

    tag = _tag(size)
    index, n = queries[0]
    series.add(f"pymerkle first root {tag}", 1e3 * _pymerkle_cold(path, lambda t: t.get_root()))
    cold = _pymerkle_cold(path, lambda t: t.prove_inclusion(index + 1, n))
    series.add(f"pymerkle cold first inclusion proof {tag}", 1e3 * cold)
    evict_file(path)
    tree = SqliteTree(str(path))

    def prove(q: Query) -> object:
        return tree.prove_inclusion(q[0] + 1, q[1])  # pymerkle indexes leaves from 1

    _record(series, f"pymerkle inclusion, first time {tag}", time_burst(prove, queries))
    _record(series, f"pymerkle inclusion, repeated {tag}", time_burst(prove, queries * 10))
    tree.close()


def _build_both(
    series: Series, work: Path, size: int, reps: int, with_pymerkle: bool
) -> tuple[Built, Path | None]:
    """Build the translog store (and the pymerkle one) ``reps`` times, keep the last."""
    tag = _tag(size)
    built: Built | None = None
    pym: Path | None = None
    for rep in range(reps):
        progress(f"proofs {tag}: build {rep + 1}/{reps}")
        if built is not None:
            shutil.rmtree(built.path)
        built = build(work / "lmdb", size)
        series.add(f"translog build (LMDB, batches of 100k) {tag}", built.rate)
        if with_pymerkle:
            pym = work / "pymerkle.db"
            pym.unlink(missing_ok=True)
            series.add(f"pymerkle SqliteTree.append_entries {tag}", build_pymerkle(pym, size))
    assert built is not None
    return built, pym


def proofs_at(size: int, settings: Settings, with_pymerkle: bool) -> list[Row]:
    """All proof rows for one tree size."""
    tag = _tag(size)
    series = Series("proofs")
    count = 1000 if settings.quick else 10_000
    queries = {
        "inc": inclusion_queries(size, count, seed=1),
        "con": consistency_queries(size, count, seed=2),
        "cold": inclusion_queries(size, 10 if settings.quick else 30, seed=3),
        "pym": inclusion_queries(size, 20, seed=4),
        "cold run": inclusion_queries(size, min(count, 2000), seed=5),
        "warm-up": inclusion_queries(size, 20_000, seed=6),
        "warm-up con": consistency_queries(size, count, seed=7),
        "latest": latest_queries(size, count, seed=8),
    }
    build_reps = 1 if size > 10**6 else settings.reps
    with scratch_dir(f"proofs-{size}") as work:
        built, pym = _build_both(series, work, size, build_reps, with_pymerkle)
        progress(f"proofs {tag}: store is {built.path.joinpath('data.mdb').stat().st_size:,} B")
        reps = max(settings.reps, 5)  # cheap once built, and short bursts are noisy
        for rep in range(reps):
            progress(f"proofs {tag}: repetition {rep + 1}/{reps}")
            _translog_repetition(series, built, queries, settings)
            if pym is not None:
                _pymerkle_repetition(series, pym, size, queries["pym"])
            gc.collect()
    return _rows(series, size, with_pymerkle)


def _rows(series: Series, size: int, with_pymerkle: bool) -> list[Row]:
    tag = _tag(size)
    pym = with_pymerkle
    build_label = f"translog build (LMDB, batches of 100k) {tag}"
    pym_build = f"pymerkle SqliteTree.append_entries {tag}"
    rows = [series.row(build_label, "entries/s", pym_build if pym else "")]
    rows += [series.row(pym_build, "entries/s")] if pym else []
    rows.append(
        series.row(f"translog first root {tag}", "ms", f"pymerkle first root {tag}" if pym else "")
    )
    rows += [series.row(f"pymerkle first root {tag}", "ms")] if pym else []
    for q in ("p50", "p99"):
        base = f"pymerkle cold first inclusion proof {tag}" if pym else ""
        rows.append(series.row(f"translog cold first inclusion proof {q} {tag}", "ms", base))
    rows += [series.row(f"pymerkle cold first inclusion proof {tag}", "ms")] if pym else []
    for kind, label in (
        ("inclusion", f"translog inclusion, warm {tag}"),
        ("inclusion", f"translog inclusion, cold run {tag}"),
        ("consistency", f"translog consistency, warm {tag}"),
        ("inclusion at the latest size", f"translog inclusion at the latest size, warm {tag}"),
    ):
        floor = f"proof-math floor, {kind} {tag}"
        rows.append(series.row(label, "proofs/s", floor))
        cpu = f"{label}: per CPU-second"
        rows.append(series.row(cpu, "proofs/s", f"{floor}: per CPU-second", shown_as=floor))
        rows += [series.row(f"{label} {q}", "µs") for q in ("p50", "p99")]
    for kind in ("inclusion", "consistency", "inclusion at the latest size"):
        rows.append(series.row(f"proof-math floor, {kind} {tag}", "proofs/s"))
    if pym:
        for label in (
            f"pymerkle inclusion, first time {tag}",
            f"pymerkle inclusion, repeated {tag}",
        ):
            rows.append(series.row(label, "proofs/s"))
            rows += [series.row(f"{label} {q}", "µs") for q in ("p50", "p99")]
    return rows


def run(settings: Settings) -> list[Row]:
    """Proof rows: 10^5 and 10^6 with pymerkle; 10^7 (translog only) with ``--large``."""
    rows = proofs_at(10**5, settings, with_pymerkle=True)
    if not settings.quick:
        rows += proofs_at(10**6, settings, with_pymerkle=True)
    if settings.large:
        rows += proofs_at(10**7, settings, with_pymerkle=False)
    return rows
