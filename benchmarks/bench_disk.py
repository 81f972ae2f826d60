"""Bytes on disk per entry beyond the payload, with a per-sub-database breakdown.

A store of committed entries with 200-byte payloads is written in batches of 4,096 (the
sequencer's default batch) with the leaf-hash index on and off. Disk use is
``st_blocks * 512`` of data.mdb (``LMDBStorage.disk_usage()``); the breakdown is
``pages * psize`` per sub-database from ``txn.stat``, plus LMDB's free pages (the rest of the
file up to ``last_pgno``). The floor, measured interleaved, is raw LMDB holding the same
payloads under sequential 8-byte keys written with ``MDB_APPEND``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import lmdb

from benchmarks.common import Row, Series, Settings, progress, scratch_dir
from benchmarks.stores import PAYLOAD, build
from translog.storage.lmdb import LMDBStorage

BATCH = 4096


def _pages(stat: dict[str, int]) -> int:
    return stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]


def breakdown(env: lmdb.Environment, handles: dict[str, Any]) -> dict[str, int]:
    """Bytes per sub-database (``h*`` levels summed as ``hashes``), main DB, meta and free."""
    psize = env.stat()["psize"]
    out: dict[str, int] = {}
    with env.begin() as txn:
        for name, db in handles.items():
            group = "hashes" if name.startswith("h") and name[1:].isdigit() else name
            out[group] = out.get(group, 0) + _pages(txn.stat(db)) * psize
    out["main (names)"] = _pages(env.stat()) * psize
    out["meta pages"] = 2 * psize
    used = (env.info()["last_pgno"] + 1) * psize
    out["free pages"] = used - sum(out.values())
    return out


def translog_store(path: Path, size: int, index: bool) -> tuple[int, dict[str, int]]:
    """Build ``size`` entries; return (disk bytes, per-database bytes)."""
    build(path, size, batch=BATCH, index_leaf_hashes=index)
    storage = LMDBStorage(path, readonly=True)
    try:
        return storage.disk_usage(), breakdown(storage.raw_env(), storage.db_handles())
    finally:
        storage.close()


def raw_floor(path: Path, size: int, value: int = PAYLOAD) -> tuple[int, dict[str, int]]:
    """Raw LMDB: ``value``-byte records under sequential u64 keys, MDB_APPEND, durable txns."""
    env = lmdb.open(str(path), map_size=1 << 34, max_dbs=2, sync=True)
    db = env.open_db(b"entries")
    pack = struct.Struct(">Q").pack
    try:
        for start in range(0, size, BATCH):
            count = min(BATCH, size - start)
            pool = os.urandom(value * count)
            items = [(pack(start + i), pool[i * value : (i + 1) * value]) for i in range(count)]
            with env.begin(write=True) as txn, txn.cursor(db=db) as cur:
                cur.putmulti(items, append=True)
        parts = breakdown(env, {"entries": db})
    finally:
        env.close()
    return (path / "data.mdb").stat().st_blocks * 512, parts


def _record(series: Series, label: str, size: int, disk: int, parts: dict[str, int]) -> None:
    series.add(label, (disk - size * PAYLOAD) / size)
    for name, nbytes in parts.items():
        series.add(f"{label}: {name}", nbytes / size)


def run(settings: Settings) -> list[Row]:
    """Disk rows at 10^6 entries (10^5 with ``--quick``)."""
    size = 10**5 if settings.quick else 10**6
    series = Series("disk")
    cases = {
        "raw LMDB floor (u64 keys, MDB_APPEND)": lambda p: raw_floor(p, size),
        "translog, leaf-hash index on": lambda p: translog_store(p, size, True),
        "translog, leaf-hash index off": lambda p: translog_store(p, size, False),
        # What the entries record alone costs: header (10) + salt (32) + payload (200), the
        # compact record (FORMATS §7); and the earlier record, which also held the 32-byte
        # commitment that SHA-256(salt || payload) recomputes.
        "raw LMDB, 242 B records (translog entry)": lambda p: raw_floor(p, size, 242),
        "raw LMDB, 274 B records (earlier entry with commitment)": lambda p: raw_floor(
            p, size, 274
        ),
    }
    for rep in range(settings.reps):
        for label, make in cases.items():
            with scratch_dir("disk") as work:
                disk, parts = make(work / "db")
            _record(series, label, size, disk, parts)
            progress(f"disk n={size} rep {rep + 1}: {label}: {series.values[label][-1]:.1f} B")
    return _rows(series, size, cases)


def _rows(series: Series, size: int, cases: dict[str, Any]) -> list[Row]:
    floor = "raw LMDB floor (u64 keys, MDB_APPEND)"
    note = f"n={size}, 200 B payloads, batches of {BATCH}; beyond payload"
    rows = []
    for label in cases:
        base = floor if label != floor else ""
        rows.append(series.row(label, "B/entry", base, note))
        for key in sorted(k for k in series.values if k.startswith(label + ": ")):
            if max(series.values[key]) >= 0.05:  # skip empty sub-databases
                rows.append(series.row(key, "B/entry", "", "pages*psize / entries"))
    return rows
