"""Memory and bytes on disk: ``python -m benchmarks.bench_memory ENTRIES``.

Builds a store of ENTRIES entries (benchmarks/stores.py) in a fresh data directory, reports
its bytes on disk per entry, serves it with ``translog serve`` (2 workers), sends 20 s of
sequential random ``get-entry-and-proof`` requests, and prints the anonymous and file-backed
RSS (``/proc/<pid>/status``) of the log process and of each worker, idle and after the reads,
as one JSON line. The store is removed afterwards.
"""

import json
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> None:
    """Run the measurement and print its JSON."""
    n = int(sys.argv[1])
    root = Path(__file__).resolve().parent.parent
    py = sys.executable
    tl = str(Path(sys.executable).parent / "translog")
    side = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    work = root / "benchmarks" / "out" / "tmp" / f"memory-{n}"
    subprocess.run(["rm", "-rf", str(work)])
    work.mkdir(parents=True)
    data = work / "data"
    subprocess.run(
        [tl, "init", "--data", str(data), "--origin", "bench.example/rss"],
        check=True,
        capture_output=True,
    )
    subprocess.run(["rm", "-rf", str(data / "lmdb")])
    t = time.time()
    subprocess.run(
        [
            py,
            "-c",
            "from pathlib import Path; from benchmarks.stores import build; "
            f"build(Path({str(data / 'lmdb')!r}), {n})",
        ],
        cwd=root,
        check=True,
    )
    built = time.time() - t
    du = int(
        subprocess.run(
            ["du", "-sb", str(data / "lmdb")], capture_output=True, text=True
        ).stdout.split()[0]
    )
    ready = work / "ready"
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
            "--workers",
            "2",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not ready.exists():
        time.sleep(0.1)
    port = int(ready.read_text())

    def rss(pid):
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("RssAnon", "RssFile")):
                out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 1)
        return out

    kids = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
    ]
    before = {p: rss(p) for p in [proc.pid, *kids]}
    rng = random.Random(1)
    size = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ct/v1/get-sth").read())[
        "tree_size"
    ]
    t = time.time()
    k = 0
    while time.time() - t < 20:
        i = rng.randrange(size)
        urllib.request.urlopen(
            f"http://127.0.0.1:{port}/ct/v1/get-entry-and-proof?leaf_index={i}&tree_size={size}"
        ).read()
        k += 1
    after = {p: rss(p) for p in [proc.pid, *kids]}
    proc.terminate()
    proc.wait(60)
    print(
        json.dumps(
            {
                "side": side,
                "entries": n,
                "published": size,
                "build_s": round(built, 1),
                "disk_bytes": du,
                "bytes_per_entry": round(du / n, 1),
                "rss_mib_idle (anon/file)": {
                    ("log" if p == proc.pid else f"worker{kids.index(p)}"): v
                    for p, v in before.items()
                },
                "rss_mib_after_20s_random_proofs": {
                    ("log" if p == proc.pid else f"worker{kids.index(p)}"): v
                    for p, v in after.items()
                },
                "proof_requests": k,
            }
        )
    )
    subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
