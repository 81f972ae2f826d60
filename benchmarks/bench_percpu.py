"""CPU per entry by process: ``python -m benchmarks.bench_percpu``.

``translog serve`` (2 workers) on fresh data directories, 8 s closed loops of single
``POST /add`` (64 connections) and of ``/add-batch`` of 1,000 (4 connections) from
benchmarks/http_load.py pinned to CPU 1; the CPU time (``/proc/<pid>/stat``) the log process
and the workers used per entry, three repetitions each, the median printed last as JSON.
"""

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
root = Path(__file__).resolve().parent.parent
tl = str(Path(sys.executable).parent / "translog")


def cpu(pid):
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def main() -> None:
    """Run the measurement and print its JSON."""
    work = root / "benchmarks" / "out" / "tmp" / "percpu"
    subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    out = {}
    for kind in ("single", "batch"):
        vals = []
        for rep in range(3):
            data = work / f"{kind}{rep}"
            subprocess.run(
                [tl, "init", "--data", str(data), "--origin", "bench.example/p"],
                check=True,
                capture_output=True,
            )
            token = (
                subprocess.run(
                    [tl, "token", "create", "--data", str(data), "--name", "b"],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            ready = data / "ready"
            proc = subprocess.Popen(
                [
                    tl,
                    "serve",
                    "--data",
                    str(data),
                    "--listen",
                    "127.0.0.1:0",
                    "--ready-file",
                    str(ready),
                ],
                cwd=root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not ready.exists():
                time.sleep(0.1)
            port = int(ready.read_text())
            time.sleep(1)
            kids = [
                int(p)
                for p in subprocess.run(
                    ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
                ).stdout.split()
            ]
            if kind == "single":
                body = json.dumps({"msg": "x" * 180}).encode()
                path = "/add"
                conns = 64
                ctype = "application/json"
                per = 1
            else:
                body = b"\n".join(
                    b'"' + base64.b64encode(os.urandom(150)) + b'"' for _ in range(1000)
                )
                path = "/add-batch"
                conns = 4
                ctype = "application/x-ndjson"
                per = 1000
            (work / "body").write_bytes(body)
            spec = {
                "port": port,
                "method": "POST",
                "paths": [path],
                "headers": {"Authorization": f"Bearer {token}", "Content-Type": ctype},
                "mode": "closed",
                "duration": 8,
                "connections": conns,
                "seed": 1,
                "body_file": str(work / "body"),
            }
            (work / "spec.json").write_text(json.dumps(spec))
            c0 = {p: cpu(p) for p in [proc.pid, *kids]}
            res = json.loads(
                subprocess.run(
                    [
                        "taskset",
                        "-c",
                        "1",
                        sys.executable,
                        "-m",
                        "benchmarks.http_load",
                        str(work / "spec.json"),
                    ],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            c1 = {p: cpu(p) for p in [proc.pid, *kids]}
            proc.terminate()
            proc.wait(60)
            n = res["ok"] * per
            log_us = (c1[proc.pid] - c0[proc.pid]) / n * 1e6
            workers_us = sum(c1[k] - c0[k] for k in kids) / n * 1e6
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
