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
* **CPU per entry**: entries per CPU second of the audit process alone, and of the server's
  whole process tree (log process and HTTP workers), against the floor per CPU second (so
  other load on the machine does not skew the comparison): where the time goes.

The ratio audit / hashing floor is paired per repetition; the target is >= 0.40.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
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


def _cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process ``pid`` and its descendants
    (``translog serve`` runs HTTP worker processes beside the log process), from /proc."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        stats[int(entry.name)] = (int(fields[1]), ticks / os.sysconf("SC_CLK_TCK"))
    tree, total = {pid}, 0.0
    grew = True
    while grew:
        grew = False
        for p, (parent, _) in stats.items():
            if parent in tree and p not in tree:
                tree.add(p)
                grew = True
    for p in tree:
        total += stats.get(p, (0, 0.0))[1]
    return total


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


def _set_workers(data_path: Path, workers: int) -> None:
    """Set ``server.workers`` in the log's config (0: reads served by the log process)."""
    config = data_path / "translog.toml"
    lines = config.read_text().splitlines()
    out = [f"workers = {workers}" if ln.startswith("workers = ") else ln for ln in lines]
    config.write_text("\n".join(out) + "\n")


def _audit_once(
    series: Series, case: str, cfg: LogConfig, server_pid: int, tmp: Path, size: int
) -> float:
    """One timed audit; records wall and CPU rates under ``case``; returns entries/s."""
    cpu0, srv0 = _cpu_seconds(), _cpu_seconds(server_pid)
    started = time.perf_counter()
    result = asyncio.run(audit(cfg, Reporter(tmp / "evidence", [], None)))
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu0
    srv = _cpu_seconds(server_pid) - srv0
    if result.alerts or result.size < size:
        raise RuntimeError(f"audit found {result.alerts} at size {result.size}")
    series.add(case, result.size / seconds)
    series.add(f"{case}: client CPU", result.size / cpu)
    series.add(f"{case}: server CPU", result.size / max(srv, 1e-9))
    return result.size / seconds


def _floors(series: Series, leaves: list[bytes], root: bytes, case: str) -> float:
    started, cpu = time.perf_counter(), time.process_time()
    if hashing_floor(leaves) != root:
        raise RuntimeError("the hashing floor computed another root")
    rate = len(leaves) / (time.perf_counter() - started)
    cpu_rate = len(leaves) / (time.process_time() - cpu)
    series.add("hashing floor", rate)
    series.add("hashing floor, per CPU second", cpu_rate)
    series.add(f"floor|{case}", rate)
    series.add(f"cpu floor|{case}", cpu_rate)
    started = time.perf_counter()
    leaf_floor(leaves)
    series.add("leaf-hash floor", len(leaves) / (time.perf_counter() - started))
    return rate


CASES = {
    "audit (serve, workers = 0)": 0,
    "audit (serve, workers = 2, default)": 2,
}


def run(settings: Settings) -> list[Row]:
    """Build, serve, and time audit vs the floors, interleaved per repetition."""
    size = 100_000 if settings.quick else 1_000_000
    series = Series("audit")
    with scratch_dir("audit") as tmp:
        data = make_data_dir(tmp / "log")
        progress(f"audit: building a store of {size:,} entries")
        built = build(data.path / "lmdb", size)
        progress(f"audit: built in {built.seconds:.1f} s")
        leaves = _fetch_leaves(tmp, data.path, size)
        for case, workers in CASES.items():
            _set_workers(data.path, workers)
            server = start_translog(data, tmp, f"audit-serve-{workers}")
            try:
                url = f"http://127.0.0.1:{server.port}"
                cfg = LogConfig(name="bench", url=url, vkey=data.vkey, read_token=data.token)
                for rep in range(settings.reps):
                    rate = _audit_once(series, case, cfg, server.proc.pid, tmp, size)
                    floor = _floors(series, leaves, built.root, case)
                    progress(
                        f"audit: {case} rep {rep + 1}: {rate:,.0f}/s, floor {floor:,.0f}/s "
                        f"({rate / floor:.2f})"
                    )
            finally:
                server.stop()
    note = f"{size:,} entries, loopback, server on the same 2 cores"
    rows = []
    for case in CASES:
        rows += [
            series.row(case, "entries/s", f"floor|{case}", note, "hashing floor"),
            series.row(
                f"{case}: client CPU",
                "entries/s",
                f"cpu floor|{case}",
                "entries per CPU second of the audit process alone",
                "hashing floor per CPU s",
            ),
            series.row(
                f"{case}: server CPU",
                "entries/s",
                f"cpu floor|{case}",
                "entries per CPU second of translog serve (all its processes)",
                "hashing floor per CPU s",
            ),
        ]
    rows.append(series.row("hashing floor", "entries/s", note="leaf + node hashes, bare loop"))
    rows.append(
        series.row("hashing floor, per CPU second", "entries/s", note="the same, per CPU second")
    )
    rows.append(series.row("leaf-hash floor", "entries/s", note="leaf hashes only"))
    return rows
