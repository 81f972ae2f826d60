"""``make soak``: the long reliability runs, with figures for docs/RELIABILITY.md.

1. **Crash**: the crash harness (tests/reliability/harness.py) with ``--kills`` SIGKILLs at
   random moments under concurrent idempotent load (single, batch and ``?wait=0`` requests).
2. **Load**: on a fresh log, measure the maximum rate of ``POST /add`` (closed loop, 64
   connections, ``--max-seconds``), then hold ``--fraction`` (0.7) of it in an open loop for
   ``--minutes`` one-minute windows (benchmarks/http_load.py, a separate process), sampling
   the server's memory every few seconds. Each window reports p50/p99/max latency, non-2xx
   answers and errors; the server's anonymous memory (RssAnon of the log process and its HTTP
   workers together: heap, not the LMDB file pages mapped into it) may grow at most
   ``--memory-bound-mib`` from the end of the first window to the end of the last.
   Afterwards the server is stopped with SIGTERM and ``translog fsck`` must pass, with every
   acknowledged entry in the tree (which may also hold requests the generator gave up on).

Writes every figure to ``--out`` (JSON) and prints a summary; exits 1 if any check failed.
The machine is shared (2 vCPU, other jobs running): the figures say so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.http_load import run_process  # noqa: E402
from tests.reliability.harness import ServerProcess, fsck_ok, make_log, run_crash  # noqa: E402

EVENT = json.dumps(
    {
        "action": "user.login",
        "actor": {"type": "user", "id": "alice@example.com"},
        "source_ip": "203.0.113.7",
        "result": "success",
        "session": "8f14e45fceea167a5a36dedd4bea2543",
    }
).encode()


def say(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return sorted(kids)


def memory(pid: int) -> dict[str, int]:
    """Memory of the server: the log process plus its HTTP worker processes (summed), and the
    anonymous memory of the log process alone."""
    main = _status(pid)
    total = dict(main)
    for kid in _children(pid):
        try:
            for key, value in _status(kid).items():
                total[key] += value
        except OSError:
            continue
    return {**total, "RssAnon_log": main["RssAnon"], "processes": 1 + len(_children(pid))}


def run_load(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    log = make_log(workdir / "data")
    server = ServerProcess(log, workdir, "soak")
    server.start()
    assert server.proc is not None
    body = workdir / "event.json"
    body.write_bytes(EVENT)
    base = {
        "port": server.port,
        "method": "POST",
        "paths": ["/add"],
        "headers": {"Authorization": f"Bearer {log.token}", "Content-Type": "application/json"},
        "body_file": str(body),
    }
    acked = 0
    try:
        say("warm-up (5 s), then the maximum rate")
        acked += run_process({**base, "mode": "closed", "connections": 16, "duration": 5}, workdir)[
            "ok"
        ]
        peak = run_process(
            {**base, "mode": "closed", "connections": 64, "duration": args.max_seconds}, workdir
        )
        acked += peak["ok"]
        target = round(peak["rate"] * args.fraction)
        say(f"max {peak['rate']:.0f}/s (p99 {peak['p99_ms']:.1f} ms); holding {target}/s")
        samples: list[dict[str, Any]] = []
        stop = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not stop.wait(5.0):
                assert server.proc is not None
                samples.append({"t": round(time.monotonic() - start, 1), **memory(server.proc.pid)})

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        windows: list[dict[str, Any]] = []
        for minute in range(args.minutes):
            spec = {**base, "mode": "open", "rate": target, "duration": 60, "seed": minute}
            # Enough connections that the generator never drops a due request for want of
            # one (it counts those as errors): an error is then a real failure.
            spec["max_connections"] = 8192
            spec["max_idle_seconds"] = 10  # below the server's 15 s idle timeout
            r = run_process(spec, workdir)
            r.update(memory(server.proc.pid))
            r["loadavg_1m"] = os.getloadavg()[0]
            windows.append(r)
            acked += r["ok"]
            worst = r.get("worst_by_second_ms") or [0.0]
            slow = [(i, w) for i, w in enumerate(worst) if w > 250]
            if slow:
                say(f"minute {minute + 1}: seconds with a request over 250 ms: {slow[:20]}")
            say(
                f"minute {minute + 1}: {r['rate']:.0f}/s ok {r['ok']} non-2xx {r['non_2xx']} "
                f"errors {r['errors']} {r.get('error_kinds') or ''} "
                f"p50 {r['p50_ms']:.1f} ms p99 {r['p99_ms']:.1f} ms "
                f"RSS {r['VmRSS'] >> 20} MiB anon {r['RssAnon'] >> 20} MiB "
                f"({r['processes']} processes), load {r['loadavg_1m']:.1f}"
            )
        stop.set()
        sampler.join()
        code = server.stop()
    finally:
        server.kill_if_running()
    fsck_passed, fsck_out = fsck_ok(log)
    from translog.storage.lmdb import LMDBStorage

    storage = LMDBStorage(log.data / "lmdb", readonly=True)
    try:
        size = storage.size()
    finally:
        storage.close()
    anon_growth = windows[-1]["RssAnon"] - windows[0]["RssAnon"]
    p99s = [w["p99_ms"] for w in windows]
    result = {
        "max": peak,
        "target_rate": target,
        "windows": windows,
        "memory_samples": samples,
        "anon_growth_bytes": anon_growth,
        "p99_median_ms": statistics.median(p99s),
        "p99_worst_ms": max(p99s),
        "errors": sum(w["errors"] for w in windows),
        "non_2xx": sum(w["non_2xx"] for w in windows),
        "acked": acked,
        "tree_size": size,
        "sigterm_exit": code,
        "fsck": fsck_out,
        "fsck_passed": fsck_passed,
    }
    result["checks"] = {
        "no errors": result["errors"] == 0 and result["non_2xx"] == 0,
        "rate held (>= 97% of target in every window)": all(
            w["rate"] >= 0.97 * target for w in windows
        ),
        "steady latency (every window's p99 <= 3x the median p99, or <= 50 ms)": all(
            p <= max(3 * result["p99_median_ms"], 50.0) for p in p99s
        ),
        f"memory growth <= {args.memory_bound_mib} MiB": anon_growth <= args.memory_bound_mib << 20,
        # Every 2xx is in the tree; a request the generator gave up on (counted in errors)
        # may still have been committed, so the tree may hold up to that many more.
        "nothing lost (acknowledged <= tree size <= acknowledged + errors)": acked
        <= size
        <= acked + result["errors"],
        "fsck passed": fsck_passed,
        "clean exit on SIGTERM": code == 0,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--max-seconds", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--memory-bound-mib", type=int, default=64)
    parser.add_argument("--out", default="soak-results.json")
    parser.add_argument("--skip-crash", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument(
        "--keep",
        metavar="DIR",
        help="work in DIR (created) and keep it: the data directories and the server logs",
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": f"{platform.node()}: {os.cpu_count()} vCPU, shared with other jobs",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="translog-soak-")
    with scratch as tmp:
        if args.keep:
            tmp = args.keep
        if not args.skip_crash:
            say(f"crash run: {args.kills} SIGKILLs")
            report = run_crash(Path(tmp) / "crash", args.kills, seed=int(time.time()), progress=say)
            results["crash"] = report.as_dict()
            if report.lost or report.late:
                say(report.explain())  # which entry, where, why, and at which check
            results["crash"]["checks"] = {
                f"{args.kills} kills survived": report.kills == args.kills,
                "0 lost": report.lost == 0,
                "0 duplicates": report.duplicates == 0,
                "fsck passed after every kill": not report.fsck_failures,
                "no errors": not report.errors,
            }
        if not args.skip_load:
            results["load"] = run_load(Path(tmp) / "load", args)
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    failed = [
        f"{part}: {name}"
        for part in ("crash", "load")
        for name, ok in results.get(part, {}).get("checks", {}).items()
        if not ok
    ]
    crash = results.get("crash")
    if crash:
        say(
            f"crash: {crash['kills']} kills, {crash['acked']} acked, {crash['lost']} lost, "
            f"{crash['late']} late promises ({crash['overdue']} overdue at a check), "
            f"{crash['duplicates']} duplicates, {crash['fsck_runs']} fsck runs, "
            f"{crash['server_broken_promises']} broken promises logged by the server"
        )
    lr = results.get("load")
    if lr:
        say(
            f"load: max {lr['max']['rate']:.0f}/s, held {lr['target_rate']}/s for "
            f"{len(lr['windows'])} min, p99 median {lr['p99_median_ms']:.1f} ms worst "
            f"{lr['p99_worst_ms']:.1f} ms, errors {lr['errors']}, non-2xx {lr['non_2xx']}, "
            f"anon memory growth {lr['anon_growth_bytes'] / 2**20:.1f} MiB"
        )
    say(f"results in {args.out}; " + ("FAILED: " + "; ".join(failed) if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
