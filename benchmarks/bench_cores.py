"""Issue 17's four rows, measured two ways in one run: ``python -m benchmarks.bench_cores``.

* **One core** for the server: every process of the server under test (translog's log
  process and its workers, or the trivial aiohttp baseline) is pinned to CPU 0 with
  ``taskset -c 0``, and the load generator (``wrk -t1``) to CPU 1.
* **Two cores** for the server: nothing is pinned; the load generator shares both CPUs, and
  the CPU seconds it used are reported beside the rate (``wrk CPU``), so the share of the
  machine left to the server is visible.

Rows, each as a ratio against a baseline measured in the same run, on the same cores:

1. single ``POST /add`` (200-byte event, 64 connections) to a durable receipt, against the
   trivial aiohttp ``POST`` that reads the body (``benchmarks/http_trivial.py``), on asyncio's
   loop and on uvloop (translog serves on uvloop by default: ``server.event_loop``);
2. ``POST /add-batch`` of 1,000 × 200 B (NDJSON, 4 connections), entries/s, against the
   hashing floor (a bare hashlib RFC 6962 tree build, ``bench_append.hashing_floor``),
   measured on one core;
3. random ``GET /ct/v1/get-entry-and-proof`` at 10^5 entries (64 connections), against the
   trivial aiohttp ``GET``; with ``get-proof-by-hash`` and ``get-sth-consistency`` beside it;
4. durable append in-process (``Log`` over LMDB, groups of 1,000, 16 tasks), against the
   hashing floor in the same process (``bench_append.run_log``), pinned to CPU 0 for one core.

Every server is started fresh per way and stopped after it; each figure is the median of
``--reps`` repetitions, interleaved (translog and its baseline one after the other). Writes
``benchmarks/out/cores.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_append import GROUP1000, hashing_floor, make_payloads, run_log
from benchmarks.bench_http import (
    BATCH_ENTRIES,
    Load,
    Server,
    batch_body,
    event_payload,
    make_data_dir,
    read_loads,
    run_wrk,
    start_translog,
    start_trivial,
)
from benchmarks.common import OUT, machine, progress, scratch_dir
from benchmarks.stores import build

WAYS = {"1 core": ("0", "1"), "2 cores": (None, None)}
"""Way → (CPUs of the server, CPUs of the load generator); None: not pinned."""
READ_SIZE = 100_000
SECONDS = 8.0
APPEND_ENTRIES = 200_000


def _consistency(size: int, rng: random.Random) -> Load:
    paths = [f"/ct/v1/get-sth-consistency?first={rng.randrange(1, size)}&second={size}"]
    paths += [
        f"/ct/v1/get-sth-consistency?first={rng.randrange(1, size)}&second={size}"
        for _ in range(1999)
    ]
    return Load("GET", paths, {})


def _wrk(
    server: Server, load: Load, connections: int, cpus: str | None, tmp: Path, seconds: float
) -> Any:
    return run_wrk(server.port, load, connections, seconds, tmp, cpus)


def measure_way(way: str, reps: int, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """Every HTTP row of one way: ``{case: [result per repetition]}``."""
    server_cpus, load_cpus = WAYS[way]
    write = make_data_dir(tmp / f"write-{way[0]}")
    read = make_data_dir(tmp / f"read-{way[0]}")
    build(read.path / "lmdb", READ_SIZE)
    rng = random.Random(17)
    reads = read_loads(read, READ_SIZE, rng)
    auth = {"Authorization": f"Bearer {write.token}", "Content-Type": "application/json"}
    single = Load("POST", ["/add"], auth, event_payload(1))
    batch_auth = {**auth, "Content-Type": "application/x-ndjson"}
    batch = Load("POST", ["/add-batch"], batch_auth, batch_body(BATCH_ENTRIES))
    loads = {
        "single": (single, 64, "translog"),
        "trivial post": (single, 64, "trivial"),
        "batch": (batch, 4, "translog"),
        "proof by index": (reads["proof by index"], 64, "translog read"),
        "proof by hash": (reads["proof by hash"], 64, "translog read"),
        "consistency": (_consistency(READ_SIZE, rng), 64, "translog read"),
        "trivial get": (reads["trivial get"], 64, "trivial"),
        "trivial post uvloop": (single, 64, "trivial uvloop"),
        "trivial get uvloop": (reads["trivial get"], 64, "trivial uvloop"),
    }
    servers = {
        "translog": start_translog(write, tmp, f"translog-{way[0]}", cpus=server_cpus),
        "translog read": start_translog(read, tmp, f"read-{way[0]}", cpus=server_cpus),
        # the stricter baseline on each: one process on one core, two on two
        "trivial": start_trivial(tmp, f"trivial-{way[0]}", procs=int(way[0]), cpus=server_cpus),
        "trivial uvloop": start_trivial(
            tmp, f"trivial-uv-{way[0]}", procs=int(way[0]), cpus=server_cpus, uvloop=True
        ),
    }
    out: dict[str, list[dict[str, Any]]] = {case: [] for case in loads}
    try:
        for load, connections, name in loads.values():  # warm every path once
            _wrk(servers[name], load, connections, load_cpus, tmp, 2.0)
        for rep in range(reps):
            for case, (load, connections, name) in loads.items():
                r = _wrk(servers[name], load, connections, load_cpus, tmp, SECONDS)
                out[case].append(r)
                progress(
                    f"cores: {way}, rep {rep + 1}: {case}: {r['rate']:,.0f} req/s, "
                    f"p99 {r['p99_ms']:.1f} ms, wrk CPU {r['generator_cpu_s']:.1f} s"
                )
    finally:
        for server in servers.values():
            server.stop()
    return out


def append_way(way: str, reps: int) -> list[dict[str, float]]:
    """Row 4 in a subprocess (pinned for one core): the floor and the log, per repetition."""
    cpus = WAYS[way][0]
    cmd = ["taskset", "-c", cpus] if cpus is not None else []
    cmd += [sys.executable, "-m", "benchmarks.bench_cores", "--append-child", str(reps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows: list[dict[str, float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def _append_child(reps: int) -> None:
    payloads = make_payloads(APPEND_ENTRIES)
    out = []
    for _ in range(reps):
        floor = hashing_floor(payloads)
        log = run_log(payloads, GROUP1000)
        out.append({"floor": floor.rate, "log": log.rate, "ratio": log.rate / floor.rate})
    print(json.dumps(out))


def summarise(way: str, http: dict[str, list[dict[str, Any]]], floor: float) -> dict[str, Any]:
    """Medians and the four ratios of one way."""

    def med(case: str, key: str = "rate") -> float:
        return float(statistics.median(r[key] for r in http[case]))

    def ratio(case: str, base: str) -> float:
        return float(
            statistics.median(
                a["rate"] / b["rate"] for a, b in zip(http[case], http[base], strict=True)
            )
        )

    batch_entries = med("batch") * BATCH_ENTRIES
    return {
        "way": way,
        "rates": {case: med(case) for case in http},
        "p99_ms": {case: med(case, "p99_ms") for case in http},
        "wrk_cpu_s": {case: med(case, "generator_cpu_s") for case in http},
        "single vs trivial post": ratio("single", "trivial post"),
        "single vs trivial post uvloop": ratio("single", "trivial post uvloop"),
        "proof by index vs trivial get uvloop": ratio("proof by index", "trivial get uvloop"),
        "batch entries/s": batch_entries,
        "batch vs floor": batch_entries / floor,
        "proof by index vs trivial get": ratio("proof by index", "trivial get"),
        "proof by hash vs trivial get": ratio("proof by hash", "trivial get"),
        "consistency vs trivial get": ratio("consistency", "trivial get"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run both ways; print the table; write benchmarks/out/cores.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--append-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.append_child:
        _append_child(args.append_child)
        return 0
    facts = machine()
    progress(f"cores: machine {facts}")
    payloads = make_payloads(APPEND_ENTRIES)
    floor = statistics.median(hashing_floor(payloads).rate for _ in range(5))  # one core
    del payloads
    progress(f"cores: hashing floor {floor:,.0f} leaves/s")
    results: dict[str, Any] = {"machine": facts, "floor": floor, "ways": []}
    with scratch_dir("cores") as tmp:
        for way in WAYS:
            http = measure_way(way, args.reps, tmp)
            summary = summarise(way, http, floor)
            appends = append_way(way, args.reps)
            summary["append vs floor"] = statistics.median(a["ratio"] for a in appends)
            summary["append entries/s"] = statistics.median(a["log"] for a in appends)
            summary["raw"] = {"http": http, "append": appends}
            results["ways"].append(summary)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cores.json").write_text(json.dumps(results, indent=1))
    for s in results["ways"]:
        r = s["rates"]
        print(f"== {s['way']}")
        print(f"single /add        {r['single']:>10,.0f} req/s  {s['single vs trivial post']:.2f}x")
        print(f"  trivial POST     {r['trivial post']:>10,.0f} req/s")
        print(
            f"  trivial POST uv  {r['trivial post uvloop']:>10,.0f} req/s  "
            f"(single {s['single vs trivial post uvloop']:.2f}x)"
        )
        print(
            f"batch              {s['batch entries/s']:>10,.0f} entries/s  "
            f"{s['batch vs floor']:.2f}x floor"
        )
        for case in ("proof by index", "proof by hash", "consistency"):
            ratio = s[f"{case} vs trivial get"]
            print(f"{case:18} {r[case]:>10,.0f} req/s  {ratio:.2f}x")
        print(f"  trivial GET      {r['trivial get']:>10,.0f} req/s")
        print(
            f"  trivial GET uv   {r['trivial get uvloop']:>10,.0f} req/s  "
            f"(proof by index {s['proof by index vs trivial get uvloop']:.2f}x)"
        )
        print(
            f"append in-process  {s['append entries/s']:>10,.0f} entries/s  "
            f"{s['append vs floor']:.2f}x floor"
        )
        print(f"  wrk CPU s per run: {s['wrk_cpu_s']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
