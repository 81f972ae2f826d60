"""Shared benchmark plumbing: settings, result rows with paired ratios, machine facts, scratch
directories on the real disk, page-cache eviction and progress lines.

Every benchmark measures its baselines in the same process, interleaved with the thing
measured, repetition by repetition. A :class:`Series` keeps each case's per-repetition values
so that ratios are *paired* (the median of value/baseline within each repetition), which
cancels most of the drift on a shared, noisy machine.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
"""Results and scratch data live here (gitignored, on the same disk as the repository)."""

_STARTED = time.monotonic()


@dataclass(frozen=True)
class Settings:
    """What to run: ``quick`` shrinks sizes and repetitions, ``large`` adds 10^7 entries."""

    quick: bool = False
    large: bool = False
    reps: int = 3
    drop_caches: bool = False
    """Cold reads: also write 1 to /proc/sys/vm/drop_caches (system-wide) besides fadvise."""
    sweep: bool = True
    """Append: also sweep ``max_batch_entries`` (about half of the append time)."""


@dataclass
class Row:
    """One result line: the median of ``runs`` and, if any, the paired ratio to a baseline."""

    bench: str
    case: str
    unit: str
    runs: list[float]
    baseline: str = ""
    ratios: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        """Median of the runs."""
        return statistics.median(self.runs)

    @property
    def ratio(self) -> float | None:
        """Median of the per-repetition ratios to the baseline, or None."""
        return statistics.median(self.ratios) if self.ratios else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict with the median and ratio included."""
        return {
            "bench": self.bench,
            "case": self.case,
            "unit": self.unit,
            "median": self.median,
            "runs": self.runs,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "ratios": self.ratios,
            "note": self.note,
        }


class Series:
    """Per-repetition values of several cases of one benchmark, for paired ratios."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.values: dict[str, list[float]] = {}

    def add(self, case: str, value: float) -> None:
        """Record one repetition's value for ``case``."""
        self.values.setdefault(case, []).append(value)

    def row(
        self, case: str, unit: str, baseline: str = "", note: str = "", shown_as: str = ""
    ) -> Row:
        """A :class:`Row` for ``case``, with ratios to ``baseline`` paired by repetition.

        ``shown_as`` names the baseline in the table when its series key is an internal one.
        """
        runs = self.values[case]
        ratios: list[float] = []
        if baseline:
            base = self.values[baseline]
            ratios = [a / b for a, b in zip(runs, base, strict=False) if b]
        return Row(self.bench, case, unit, list(runs), shown_as or baseline, ratios, note)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] of ``values`` (which need not be sorted)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def progress(message: str) -> None:
    """Print a progress line to stderr with the time since the benchmarks started."""
    print(f"[{time.monotonic() - _STARTED:7.1f}s] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def scratch_dir(name: str) -> Iterator[Path]:
    """A fresh directory under benchmarks/out/tmp (real disk, not tmpfs), removed afterwards."""
    path = OUT / "tmp" / f"{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the objects that exist now (the harness's inputs) out of the cyclic GC's scans.

    Without this, every full collection during a measurement walks the benchmark's own
    millions of prepared payload references, which a server would not hold; that cost the
    sequencer about 20% of its CPU at 10^6 entries. Objects the code under test creates are
    collected as usual.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def evict_file(path: Path, *, global_drop: bool = False) -> str:
    """Drop ``path`` from the page cache; return the method used.

    ``posix_fadvise(DONTNEED)`` evicts the clean pages of this one file, which needs no
    privilege and does not disturb other users of the machine. It works only while no process
    maps the file, so close the LMDB environment first. ``global_drop`` additionally writes 1
    to /proc/sys/vm/drop_caches when permitted.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    method = "fadvise"
    if global_drop:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("1\n")
            method = "fadvise+drop_caches"
        except OSError:
            method = "fadvise (drop_caches refused)"
    return method


def resident_bytes(path: Path) -> int | None:
    """Bytes of ``path`` in the page cache per util-linux ``fincore``, or None if unavailable."""
    exe = shutil.which("fincore")
    if exe is None:
        return None
    cmd = [exe, "--bytes", "--noheadings", "--output", "RES", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return int(out.split()[0])
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None


def drop_caches_permitted() -> bool:
    """Whether this process may write /proc/sys/vm/drop_caches (checked without writing)."""
    return os.access("/proc/sys/vm/drop_caches", os.W_OK)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def _cpu_model() -> str:
    for line in _run(["lscpu"]).splitlines():
        if line.startswith("Model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _filesystem(path: Path) -> str:
    lines = _run(["df", "-T", str(path)]).splitlines()
    if len(lines) < 2:
        return "?"
    fields = lines[1].split()
    return f"{fields[1]} on {fields[0]} (mounted at {fields[-1]})"


def machine() -> dict[str, Any]:
    """Facts that name the machine and software versions the numbers come from."""
    import lmdb
    import pymerkle

    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parent.parent
    return {
        "nproc": _run(["nproc"]),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": sys.version.split()[0],
        "lmdb": f"py-lmdb {lmdb.__version__}, liblmdb {'.'.join(map(str, lmdb.version()))}",
        "pymerkle": pymerkle.__version__,
        "kernel": platform.release(),
        "filesystem": _filesystem(OUT),
        "drop_caches_permitted": drop_caches_permitted(),
        "git": _run(["git", "-C", str(root), "describe", "--always", "--dirty"]),
        "loadavg": os.getloadavg()[0],
    }
