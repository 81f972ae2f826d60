"""Durable sequencer throughput: the real ``Log`` over ``LMDBStorage`` with real signers.

Submitters run on one asyncio loop and push committed 200-byte random payloads, either one
per submission (many concurrent awaiting tasks) or in groups. Throughput is counted from the
first submit to the last durable acknowledgement and the end of any leaf-hash index merge
left to the background merger (so deferred work is counted). Interleaved in every repetition, on the
same payloads:

* the **hashing floor**: a bare Python loop that hashes each payload as an RFC 6962 leaf and
  appends it to an in-memory frontier (compact range), computing every interior node hash;
* **pymerkle 7** ``InmemoryTree.append_entry`` on the same payloads (no durability).

A separate sweep varies ``max_batch_entries`` (paired against the current default, 4096).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    Row,
    Series,
    Settings,
    frozen_heap,
    percentile,
    progress,
    scratch_dir,
)
from translog.core.ct import TreeHeadSigner
from translog.core.merkle import tree_hash
from translog.core.signing import NoteSigner
from translog.log.sequencer import Log, LogOptions
from translog.storage.lmdb import LMDBStorage

ORIGIN = "bench.example/log"
PAYLOAD = 200
DEFAULT_BATCH = 4096
SWEEP = (256, 1024, 4096, 16384)
DISTINCT = 1 << 20


@dataclass(frozen=True)
class Load:
    """How submitters drive the log: ``group`` payloads per submission, ``tasks`` at once."""

    name: str
    group: int
    tasks: int
    index: bool = True
    """Keep the leaf-hash index (``index_leaf_hashes``, on by default in translog)."""
    default_gc: bool = False
    """Run with CPython's default GC thresholds instead of the ones ``Log.start`` sets."""


SINGLE = Load("single-entry submissions, 1000 tasks", 1, 1000)
GROUP100 = Load("groups of 100, 160 tasks", 100, 160)
GROUP1000 = Load("groups of 1000, 16 tasks", 1000, 16)
GROUP1000_NOINDEX = Load("groups of 1000, 16 tasks, leaf-hash index off", 1000, 16, False)
GROUP1000_DEFAULT_GC = Load(
    "groups of 1000, 16 tasks, default GC thresholds", 1000, 16, default_gc=True
)
SWEEP_LOADS = (
    Load("groups of 100, 400 tasks", 100, 400),
    Load("groups of 100, 400 tasks, leaf-hash index off", 100, 400, False),
)
IDLE = Load("one submitter, one entry at a time", 1, 1)


@dataclass
class _Recorder:
    """Stands in for a ``Histogram`` to keep every observation (exact percentiles)."""

    values: list[float] = field(default_factory=list)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.values.append(value)


@dataclass
class LogRun:
    """Outcome of one drive of the log."""

    rate: float
    cpu_rate: float
    """Entries per second of process CPU time (both threads): robust to other load."""
    ack_latencies: list[float]
    commit_seconds: list[float]
    batch_sizes: list[float]


def make_payloads(n: int) -> list[bytes]:
    """``n`` random payloads of 200 bytes.

    Up to 2**20 are distinct; beyond that the same 2**20 repeat (10^7 distinct payloads would
    hold 2.4 GB). Leaves stay distinct, since each committed leaf has its own random salt.
    """
    distinct = min(n, DISTINCT)
    pool = os.urandom(PAYLOAD * distinct)
    base = [pool[i : i + PAYLOAD] for i in range(0, PAYLOAD * distinct, PAYLOAD)]
    return (base * (n // distinct + 1))[:n]


@dataclass(frozen=True)
class Floor:
    """The hashing floor: leaves/s by the wall clock and per CPU-second, and the root."""

    rate: float
    cpu_rate: float
    root: bytes


def hashing_floor(payloads: Sequence[bytes]) -> Floor:
    """Build the RFC 6962 tree of ``payloads`` with a bare frontier loop."""
    sha = hashlib.sha256
    stack: list[bytes] = []
    started, cpu = time.perf_counter(), time.process_time()
    for n, payload in enumerate(payloads):
        h = sha(b"\x00" + payload).digest()
        while n & 1:
            h = sha(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = sha(b"\x01" + left + root).digest()
    return Floor(len(payloads) / elapsed, len(payloads) / cpu, root)


def pymerkle_inmemory(payloads: Sequence[bytes]) -> tuple[float, bytes]:
    """Append ``payloads`` one by one to a pymerkle ``InmemoryTree``; (entries/s, root)."""
    from pymerkle import InmemoryTree

    tree = InmemoryTree()
    started = time.perf_counter()
    for payload in payloads:
        tree.append_entry(payload)
    elapsed = time.perf_counter() - started
    root = tree.get_root()
    del tree
    gc.collect()
    return len(payloads) / elapsed, root


def _open_log(path: Path, max_batch: int, load: Load) -> tuple[Log, _Recorder, _Recorder]:
    """A fresh log on LMDB in ``path`` with exact recorders for commit times and batches."""
    young = 0 if load.default_gc else LogOptions.gc_young_threshold
    options = LogOptions(max_batch_entries=max_batch, max_pending=100_000, gc_young_threshold=young)
    index = load.index
    signer = NoteSigner.generate(ORIGIN)
    storage = LMDBStorage(path, index_leaf_hashes=index)
    log = Log(storage, ORIGIN, signer, TreeHeadSigner.generate(), options)
    commits, batches = _Recorder(), _Recorder()
    log.integration_seconds = commits  # type: ignore[assignment]
    log.batch_sizes = batches  # type: ignore[assignment]
    return log, commits, batches


async def _submitters(log: Log, chunks: list[Sequence[bytes]], load: Load) -> list[float]:
    """Run ``load.tasks`` closed-loop submitters until every chunk is durable."""
    source = iter(chunks)
    latencies: list[float] = []

    async def submitter() -> None:
        clock = time.perf_counter
        for chunk in source:
            t = clock()
            await log.submit(chunk)
            latencies.append(clock() - t)

    await asyncio.gather(*(submitter() for _ in range(load.tasks)))
    return latencies


async def _drive(path: Path, chunks: list[Sequence[bytes]], load: Load, max_batch: int) -> LogRun:
    log, commits, batches = _open_log(path, max_batch, load)
    await log.start()
    n = sum(map(len, chunks))
    started, cpu = time.perf_counter(), time.process_time()
    latencies = await _submitters(log, chunks, load)
    # Merges the leaf-hash index deferred to the background merger are part of the cost.
    storage = log.storage
    if isinstance(storage, LMDBStorage):
        await asyncio.to_thread(storage.wait_for_merges)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = log.size
    if size != n or tree_hash(size, log.storage) != log.current.root_hash:
        raise AssertionError(f"log holds {size} entries, expected {n}")
    await log.close()
    return LogRun(n / elapsed, n / cpu, latencies, commits.values, batches.values)


def run_log(payloads: Sequence[bytes], load: Load, max_batch: int = DEFAULT_BATCH) -> LogRun:
    """Drive a fresh durable log with ``payloads`` under ``load``; remove it afterwards."""
    group = load.group
    chunks = [payloads[i : i + group] for i in range(0, len(payloads), group)]
    saved = gc.get_threshold()
    if load.default_gc:
        gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever an earlier run set
    try:
        with scratch_dir("append") as path, frozen_heap():
            result = asyncio.run(_drive(path / "db", chunks, load, max_batch))
    finally:
        gc.set_threshold(*saved)
    del chunks
    gc.collect()
    return result


def _record_log(series: Series, label: str, result: LogRun) -> None:
    """Add a log run's rate and latency figures to ``series`` under ``label``."""
    series.add(label, result.rate)
    series.add(f"{label}: per CPU-second", result.cpu_rate)
    series.add(f"{label}: ack p50", 1e3 * percentile(result.ack_latencies, 50))
    series.add(f"{label}: ack p99", 1e3 * percentile(result.ack_latencies, 99))
    series.add(f"{label}: batch commit p50", 1e3 * percentile(result.commit_seconds, 50))
    series.add(f"{label}: batch commit p99", 1e3 * percentile(result.commit_seconds, 99))
    series.add(f"{label}: mean batch", sum(result.batch_sizes) / len(result.batch_sizes))


def _latency_rows(series: Series, label: str) -> list[Row]:
    rows = [series.row(f"{label}: {k}", "ms") for k in ("ack p50", "ack p99")]
    rows += [series.row(f"{label}: batch commit {q}", "ms") for q in ("p50", "p99")]
    rows.append(series.row(f"{label}: mean batch", "entries"))
    return rows


def _floor(series: Series, payloads: list[bytes], key: str, tag: str) -> Floor:
    """Measure the floor; record it under ``key`` (for pairing) and in the summary row."""
    with frozen_heap():
        floor = hashing_floor(payloads)
    series.add(key, floor.rate)
    series.add(f"{key}: per CPU-second", floor.cpu_rate)
    series.add(f"hashing floor {tag}", floor.rate)
    series.add(f"hashing floor {tag}: per CPU-second", floor.cpu_rate)
    return floor


def _one_repetition(
    series: Series, payloads: list[bytes], loads: Sequence[Load], tag: str, with_pymerkle: bool
) -> None:
    """Measure pymerkle and each load once; the floor right before each, on the same payloads.

    The floor is re-measured next to every case so that each ratio compares two runs a few
    seconds apart, not a minute apart, on a machine whose load changes.
    """
    floor = _floor(series, payloads, f"pymerkle InmemoryTree {tag}: floor", tag)
    if with_pymerkle:
        with frozen_heap():
            rate, root = pymerkle_inmemory(payloads)
        if root != floor.root:
            raise AssertionError("pymerkle and the hashing floor disagree on the root")
        series.add(f"pymerkle InmemoryTree {tag}", rate)
    for load in loads:
        label = f"translog {load.name} {tag}"
        _floor(series, payloads, f"{label}: floor", tag)
        result = run_log(payloads, load)
        _record_log(series, label, result)
        progress(f"append {tag}: {load.name}: {result.rate:,.0f} entries/s")


def throughput(n: int, reps: int, loads: Sequence[Load], with_pymerkle: bool) -> list[Row]:
    """Rows for durable append at ``n`` entries, with the floor and pymerkle interleaved."""
    tag = f"(n={n:.0e})".replace("+0", "")
    series = Series("append")
    payloads = make_payloads(n)
    for rep in range(reps):
        progress(f"append {tag}: repetition {rep + 1}/{reps}")
        _one_repetition(series, payloads, loads, tag, with_pymerkle)
    floor = f"hashing floor {tag}"
    rows = [series.row(floor, "entries/s"), series.row(f"{floor}: per CPU-second", "entries/s")]
    if with_pymerkle:
        label = f"pymerkle InmemoryTree {tag}"
        rows.append(series.row(label, "entries/s", f"{label}: floor", shown_as=floor))
    for load in loads:
        label = f"translog {load.name} {tag}"
        note = _pymerkle_note(series, label, tag) if with_pymerkle else ""
        rows.append(series.row(label, "entries/s", f"{label}: floor", note, shown_as=floor))
        cpu = f"{label}: per CPU-second"
        rows.append(series.row(cpu, "entries/s", f"{label}: floor: per CPU-second", shown_as=floor))
        rows += _latency_rows(series, label)
    return rows


def _pymerkle_note(series: Series, label: str, tag: str) -> str:
    ratio = series.row(label, "", f"pymerkle InmemoryTree {tag}").ratio
    return f"{ratio:.2f}x pymerkle" if ratio else ""


def idle_latency(count: int, reps: int) -> list[Row]:
    """Ack latency of one submitter appending one entry at a time (no batching possible)."""
    series = Series("append")
    payloads = make_payloads(count)
    label = f"translog {IDLE.name}"
    for _ in range(reps):
        _record_log(series, label, run_log(payloads, IDLE))
    progress(f"append idle latency: p50 {series.values[label + ': ack p50'][-1]:.3f} ms")
    return [series.row(label, "entries/s"), *_latency_rows(series, label)[:4]]


def _sweep_label(size: int, load: Load) -> str:
    return f"max_batch_entries={size}" + ("" if load.index else ", leaf-hash index off")


def batch_sweep(n: int, reps: int) -> list[Row]:
    """Throughput and commit latency per ``max_batch_entries``, paired against the default."""
    series = Series("append-sweep")
    payloads = make_payloads(n)
    for rep in range(reps):
        progress(f"batch sweep n={n}: repetition {rep + 1}/{reps}")
        for load, size in itertools.product(SWEEP_LOADS, SWEEP):
            result = run_log(payloads, load, size)
            _record_log(series, _sweep_label(size, load), result)
            progress(f"  {_sweep_label(size, load)}: {result.rate:,.0f} entries/s")
    rows: list[Row] = []
    for load, size in itertools.product(SWEEP_LOADS, SWEEP):
        label, default = _sweep_label(size, load), _sweep_label(DEFAULT_BATCH, load)
        rows.append(series.row(label, "entries/s", default, f"{load.name}, n={n}"))
        cpu = f"{label}: per CPU-second"
        rows.append(series.row(cpu, "entries/s", f"{default}: per CPU-second"))
        rows += _latency_rows(series, label)
    return rows


def run(settings: Settings) -> list[Row]:
    """All append rows for ``settings`` (10^7 only with ``settings.large``)."""
    loads = (SINGLE, GROUP100, GROUP1000, GROUP1000_NOINDEX)
    reps = settings.reps
    rows = idle_latency(500 if settings.quick else 2000, reps)
    rows += throughput(10**5, max(reps, 5), loads, with_pymerkle=True)
    if not settings.quick:
        rows += throughput(10**6, reps, (*loads, GROUP1000_DEFAULT_GC), with_pymerkle=True)
    if settings.large:
        rows += throughput(10**7, 1, (GROUP1000, GROUP1000_NOINDEX), with_pymerkle=False)
    if settings.sweep:
        rows += batch_sweep(10**5 if settings.quick else 10**6, reps)
    return rows
