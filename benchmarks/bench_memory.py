"""Memory and bytes on disk: ``python -m benchmarks.bench_memory ENTRIES``.

Builds a store of ENTRIES entries (benchmarks/stores.py) in a fresh data directory, reports
its bytes on disk per entry, serves it with ``translog serve`` (2 workers), sends 20 s of
sequential random ``get-entry-and-proof`` requests, and prints the anonymous and file-backed
RSS (``/proc/<pid>/status``) of the log process and of each worker, idle and after the reads,
as one JSON line. The store is removed afterwards.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.bench_http import ROOT, make_data_dir, start_translog
from benchmarks.common import scratch_dir
from benchmarks.stores import build


def rss_mib(pid: int) -> dict[str, float]:
    """``RssAnon`` and ``RssFile`` of a process, in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
    return out


def main() -> None:
    """Run the measurement and print its JSON."""
    n = int(sys.argv[1])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    with scratch_dir("memory") as work:
        data = make_data_dir(work / "data")
        started = time.time()
        build(data.path / "lmdb", n)
        built = time.time() - started
        du = int(
            subprocess.run(
                ["du", "-sb", str(data.path / "lmdb")], capture_output=True, text=True
            ).stdout.split()[0]
        )
        server = start_translog(data, work, "memory")
        try:
            pids = server.pids()
            before = {role: rss_mib(pid) for role, pid in pids.items()}
            url = f"http://127.0.0.1:{server.port}/ct/v1"
            size = json.loads(urllib.request.urlopen(f"{url}/get-sth").read())["tree_size"]
            rng = random.Random(1)
            t = time.time()
            k = 0
            while time.time() - t < 20:
                i = rng.randrange(size)
                path = f"{url}/get-entry-and-proof?leaf_index={i}&tree_size={size}"
                urllib.request.urlopen(path).read()
                k += 1
            after = {role: rss_mib(pid) for role, pid in pids.items()}
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "side": commit,
                "entries": n,
                "published": size,
                "build_s": round(built, 1),
                "disk_bytes": du,
                "bytes_per_entry": round(du / n, 1),
                "rss_mib_idle (anon/file)": before,
                "rss_mib_after_20s_random_proofs": after,
                "proof_requests": k,
            }
        )
    )


if __name__ == "__main__":
    main()
