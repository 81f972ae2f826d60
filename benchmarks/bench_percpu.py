"""CPU per entry by process: ``python -m benchmarks.bench_percpu``.

``translog serve`` (2 workers) on fresh data directories, 8 s closed loops of single
``POST /add`` (64 connections) and of ``/add-batch`` of 1,000 (4 connections) from
benchmarks/http_load.py pinned to CPU 1; the CPU time (``/proc/<pid>/stat``) the log process
and the workers used per entry, three repetitions each, the median printed last as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.bench_http import (
    BATCH_ENTRIES,
    ROOT,
    Load,
    batch_body,
    event_payload,
    make_data_dir,
    start_translog,
)
from benchmarks.common import scratch_dir

TICK = os.sysconf("SC_CLK_TCK")
SECONDS = 8


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def pinned_load(port: int, load: Load, connections: int, work: Path) -> dict[str, float]:
    """A closed loop of benchmarks/http_load.py on CPU 1 (its own process)."""
    assert load.body is not None
    (work / "body").write_bytes(load.body)
    spec = {
        "port": port,
        "method": load.method,
        "paths": load.paths,
        "headers": load.headers,
        "mode": "closed",
        "duration": SECONDS,
        "connections": connections,
        "seed": 1,
        "body_file": str(work / "body"),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    cmd = ["taskset", "-c", "1", sys.executable, "-m", "benchmarks.http_load"]
    done = subprocess.run(
        [*cmd, str(work / "spec.json")], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Run the measurement and print its JSON."""
    out = {}
    with scratch_dir("percpu") as work:
        for kind in ("single", "batch"):
            vals = []
            for rep in range(3):
                data = make_data_dir(work / f"{kind}{rep}")
                if kind == "single":
                    ctype, connections, per = "application/json", 64, 1
                    path, body = "/add", event_payload(1)
                else:
                    ctype, connections, per = "application/x-ndjson", 4, BATCH_ENTRIES
                    path, body = "/add-batch", batch_body(BATCH_ENTRIES)
                headers = {"Authorization": f"Bearer {data.token}", "Content-Type": ctype}
                server = start_translog(data, work, f"{kind}{rep}")
                try:
                    pids = server.pids()
                    before = {role: cpu_s(pid) for role, pid in pids.items()}
                    res = pinned_load(
                        server.port, Load("POST", [path], headers, body), connections, work
                    )
                    after = {role: cpu_s(pid) for role, pid in pids.items()}
                finally:
                    server.stop()
                n = res["ok"] * per
                log_us = (after["log"] - before["log"]) / n * 1e6
                workers_us = sum(after[r] - before[r] for r in pids if r != "log") / n * 1e6
                vals.append((res["rate"] * per, log_us, workers_us))
                print(
                    f"{kind} rep {rep}: {res['rate'] * per:,.0f} entries/s, "
                    f"log process {log_us:.2f} us/entry, workers {workers_us:.2f} us/entry",
                    flush=True,
                )
            vals.sort(key=lambda v: v[1])
            out[kind] = vals[1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
