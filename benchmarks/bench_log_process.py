"""The log process's share of ``POST /add-batch``, without HTTP: CPU per entry.

In ``translog serve`` the workers build leaves, salts and leaf hashes; the log process takes
each message with ``Log.accept_prepared``, submits it as one group and runs the writer
(frontier, LMDB append with the leaf-hash index, fsync, signature). This drives exactly that
path with messages of 1,000 prepared committed 200-byte entries from 4 concurrent senders
(the batch benchmark's c4) and reports the process CPU time (both threads) per entry. 100k
entries/s on this 2-core machine needs it at about 8 µs or less (benchmarks/RESULTS.md).

    .venv/bin/python -m benchmarks.bench_log_process [--entries N] [--reps R]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import frozen_heap, scratch_dir
from translog.core.ct import TreeHeadSigner
from translog.core.leaf import committed_leaves, new_salts
from translog.core.merkle import leaf_hashes
from translog.core.signing import NoteSigner
from translog.log.sequencer import Log, LogOptions, now_ms
from translog.storage.lmdb import LMDBStorage

MESSAGE = 1000
SENDERS = 4
ORIGIN = "bench.example/log"

_Message = tuple[int, list[bytes], list[bytes], list[bytes], bytes]


def prepare(n: int) -> list[_Message]:
    """What workers send: per message a timestamp, salts, leaves, payloads and leaf hashes."""
    pool = os.urandom(200 * MESSAGE)
    payloads = [pool[i : i + 200] for i in range(0, 200 * MESSAGE, 200)]
    base = now_ms() + 1000
    out = []
    for k in range(n // MESSAGE):
        salts = new_salts(MESSAGE)
        leaves = committed_leaves(base + k, payloads, salts)
        out.append((base + k, salts, leaves, list(payloads), b"".join(leaf_hashes(leaves))))
    return out


async def drive(path: Path, messages: Sequence[_Message]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) to sequence ``messages`` durably."""
    log = Log(
        LMDBStorage(path),
        ORIGIN,
        NoteSigner.generate(ORIGIN),
        TreeHeadSigner.generate(),
        LogOptions(max_pending=100_000),
    )
    await log.start()
    source = iter(messages)

    async def sender() -> None:
        for ts, salts, leaves, bodies, hashes in source:
            run, _ = log.accept_prepared(ts, salts, leaves, hashes)
            appended = await log.submit(bodies, committed=True, accepted=run)
            if appended[-1].index - appended[0].index != len(bodies) - 1:
                raise AssertionError("a message was not sequenced contiguously")

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if log.size != MESSAGE * len(messages):
        raise AssertionError(f"log holds {log.size} entries")
    await log.close()
    return wall, cpu


def main(argv: Sequence[str] | None = None) -> None:
    """Print the CPU and wall time per entry, median of ``--reps`` runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    cpu_us, wall_us = [], []
    for _ in range(args.reps):
        messages = prepare(args.entries)
        n = MESSAGE * len(messages)
        with scratch_dir("log-process") as path, frozen_heap():
            wall, cpu = asyncio.run(drive(path / "db", messages))
        cpu_us.append(1e6 * cpu / n)
        wall_us.append(1e6 * wall / n)
        del messages
        gc.collect()
        print(f"{n} entries: {cpu_us[-1]:.2f} µs CPU and {wall_us[-1]:.2f} µs wall per entry")
    cpu_med, wall_med = statistics.median(cpu_us), statistics.median(wall_us)
    print(f"median: {cpu_med:.2f} µs CPU per entry ({1e6 / cpu_med:,.0f} entries per CPU-second)")
    print(f"median: {wall_med:.2f} µs wall per entry ({1e6 / wall_med:,.0f} entries/s)")


if __name__ == "__main__":
    main()
