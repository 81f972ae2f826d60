"""Audit-event benchmarks: search latency against a full scan, and the ingest cost of indexing.

* **search**: a log of 10^6 ``translog.event/v1`` events (10^5 with ``--quick``) built
  directly in LMDB with the sequencer's own indexer; for each query type, the latency of the
  first page (50 results, newest first, as ``/events/search`` asks it) over many random
  queries, p50 and p99, against a full scan of the same data (read, parse, validate and match
  every entry: what answering without the indexes costs), measured in the same run.
* **ingest**: the durable log (group commit, fsync per batch) fed events by closed-loop
  submitters, with indexing off (baseline), on, and on with a *random-insert* layout of the
  same postings (term first, no block number: the shape of index the storage work removed),
  interleaved repetition by repetition so the ratios are paired.
"""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Series, Settings, percentile, progress, scratch_dir
from translog.core.merkle import Frontier, leaf_hash
from translog.core.signing import NoteSigner
from translog.formats.event_schema import Query, index_terms, try_parse_event
from translog.log import event_index as ix
from translog.log.sequencer import Log, LogOptions
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.lmdb import LMDBStorage

ORIGIN = "bench.example/events"
TENANTS = [f"tenant{i}" for i in range(10)]
ACTIONS = [
    f"{a}.{b}"
    for a in ("user", "role", "config", "key", "file")
    for b in ("login", "create", "update", "delete")
]
CATEGORY = {"user": "authentication", "role": "authorization", "config": "configuration"}
T0 = 1_790_000_000_000


def make_events(n: int, seed: int, start: int = 0) -> list[bytes]:
    """``n`` realistic event payloads: 10 tenants, 10^4 actors, 20 actions, 10% failures."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        action = rng.choice(ACTIONS)
        event: dict[str, Any] = {
            "schema": "translog.event/v1",
            "id": f"ev-{seed}-{i}",
            "time": T0 + i,
            "actor": {"type": "user", "id": f"user{rng.randrange(10_000)}"},
            "action": action,
            "category": CATEGORY.get(action.split(".")[0], "data_access"),
            "targets": [{"type": "resource", "id": f"res{rng.randrange(5_000)}"}],
            "outcome": {"result": "failure" if rng.random() < 0.1 else "success"},
            "source": {"ip": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"},
            "request_id": f"req-{i}",
            "tenant": rng.choice(TENANTS),
            "service": "api",
            "details": {"path": "/v1/things", "bytes": rng.randrange(10_000)},
        }
        out.append(json.dumps(event, separators=(",", ":")).encode())
    return out


def build_store(path: Path, n: int, chunk: int = 20_000) -> tuple[LMDBStorage, float]:
    """A store of ``n`` indexed events (inline leaves), written like the sequencer does."""
    storage = LMDBStorage(path, map_size=1 << 33)
    frontier = Frontier()
    indexer = ix.EventIndexer()
    started = time.perf_counter()
    for lo in range(0, n, chunk):
        payloads = make_events(min(chunk, n - lo), seed=lo, start=lo)
        entries, nodes = [], []
        for k, p in enumerate(payloads):
            leaf = b"\x01" + struct.pack(">Q", T0 + (lo + k) * 10) + b"\x00" + p
            entries.append(NewEntry(leaf))
            nodes += frontier.append(leaf_hash(leaf))
        ts = T0 + (lo + len(payloads) - 1) * 10
        storage.append(WriteBatch(lo, entries, nodes, ts, index_puts=indexer(lo, entries)))
        if (lo // chunk) % 10 == 0:
            progress(f"events: built {lo + len(payloads):,} of {n:,}")
    return storage, time.perf_counter() - started


def query_makers(
    rng: random.Random, n: int, storage: LMDBStorage
) -> dict[str, Callable[[], Query]]:
    """Query types; values are taken from a random stored event, so every query has hits."""

    def sample() -> dict[str, Any]:
        i = rng.randrange(n)
        return dict(json.loads(storage.get_entries(i, i + 1)[0].leaf[10:]))

    def actor() -> Query:
        e = sample()
        return Query(e["tenant"], {"actor": e["actor"]["id"]})

    def target() -> Query:
        e = sample()
        return Query(e["tenant"], {"target": e["targets"][0]["id"]})

    def combined() -> Query:
        e = sample()
        filters = {"action": e["action"], "outcome": e["outcome"]["result"]}
        return Query(e["tenant"], {**filters, "actor": e["actor"]["id"]})

    def time_range() -> Query:
        t = rng.randrange(n * 10)
        return Query(rng.choice(TENANTS), {}, T0 + t, T0 + t + n // 10)

    return {
        "actor": actor,
        "action": lambda: Query(rng.choice(TENANTS), {"action": rng.choice(ACTIONS)}),
        "target": target,
        "outcome": lambda: Query(rng.choice(TENANTS), {"outcome": "failure"}),
        "tenant": lambda: Query(rng.choice(TENANTS)),
        "time range": time_range,
        "action+outcome+actor": combined,
    }


def _search_rows(settings: Settings) -> list[Row]:
    n = 100_000 if settings.quick else 1_000_000
    queries = 50 if settings.quick else 200
    series = Series("events-search")
    rows: list[Row] = []
    with scratch_dir("events-search") as path:
        storage, build_s = build_store(path / "db", n)
        progress(f"events: {n:,} events built and indexed in {build_s:.0f} s")
        rng = random.Random(5)
        for name, make in query_makers(rng, n, storage).items():
            latencies, hits = [], []
            for _ in range(queries):
                q = make()
                t = time.perf_counter()
                page = ix.search(storage, q, size=n, limit=50)
                latencies.append(time.perf_counter() - t)
                hits.append(len(page.hits))
            t = time.perf_counter()
            scanned = ix.scan(storage, make(), size=n)
            scan_s = time.perf_counter() - t
            p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
            series.add(f"{name}: full scan", scan_s * 1000)
            series.add(f"{name}: p50", p50)
            series.add(f"{name}: p99", p99)
            note = f"{queries} queries, median {sorted(hits)[len(hits) // 2]} hits/page"
            rows += [
                series.row(f"{name}: full scan", "ms", note=f"{len(scanned):,} matches"),
                series.row(f"{name}: p50", "ms", f"{name}: full scan", note),
                series.row(f"{name}: p99", "ms", f"{name}: full scan"),
            ]
            progress(f"events: {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, scan {scan_s:.1f} s")
        rows.append(
            Row("events-search", "database bytes per event", "B/entry", [storage.disk_usage() / n])
        )
        storage.close()
    return rows


class RandomKeyIndexer(ix.EventIndexer):
    """The same postings keyed term-first (no block): every insert lands anywhere in the tree."""

    def __call__(self, start: int, entries: Sequence[NewEntry]) -> list[tuple[bytes, bytes]]:
        puts = []
        for i, e in enumerate(entries):
            event = try_parse_event(ix.entry_payload(e.leaf, e.payload) or b"")
            if event is not None:
                for t in index_terms(event):
                    puts.append((b"r" + ix.term_hash(*t) + struct.pack(">Q", start + i), b""))
        return puts


async def _ingest(path: Path, payloads: list[bytes], indexer: ix.EventIndexer | None) -> float:
    storage = LMDBStorage(path, map_size=1 << 32, index_leaf_hashes=False)
    log = Log(storage, ORIGIN, NoteSigner.generate(ORIGIN), None, LogOptions(), indexer=indexer)
    await log.start()
    groups = [payloads[i : i + 100] for i in range(0, len(payloads), 100)]
    source = iter(groups)

    async def submitter() -> None:
        for group in source:
            await log.submit(group, committed=True)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(32)))
    rate = len(payloads) / (time.perf_counter() - started)
    await log.close()
    return rate


def _ingest_rows(settings: Settings) -> list[Row]:
    n = 50_000 if settings.quick else 300_000
    series = Series("events-ingest")
    variants: dict[str, Callable[[], ix.EventIndexer | None]] = {
        "indexing off": lambda: None,
        "indexing on (block-first keys)": ix.EventIndexer,
        "indexing on, random-insert keys": RandomKeyIndexer,
    }
    for rep in range(settings.reps):
        payloads = make_events(n, seed=100 + rep)
        for name, make in variants.items():
            with scratch_dir("events-ingest") as path:
                rate = asyncio.run(_ingest(path / "db", payloads, make()))
            series.add(name, rate)
            progress(f"events: ingest rep {rep + 1}: {name}: {rate:,.0f} events/s")
    note = f"{n:,} committed events, 32 submitters x 100, fsync per batch"
    return [
        series.row("indexing off", "events/s", note=note),
        series.row("indexing on (block-first keys)", "events/s", "indexing off"),
        series.row("indexing on, random-insert keys", "events/s", "indexing off"),
    ]


def run(settings: Settings) -> list[Row]:
    """Both event benchmarks."""
    return _ingest_rows(settings) + _search_rows(settings)


def run_search(settings: Settings) -> list[Row]:
    """Only the search benchmark."""
    return _search_rows(settings)
