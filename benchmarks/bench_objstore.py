"""Object-store publication, rebuild, and nginx vs ``translog serve`` reads (issue 9).

Three measurements, each against a baseline taken in the same run:

* **publication at maximum ingest**: a log (LMDB, fsync per batch) is fed as fast as it will
  go for a fixed time, with 8 groups of 1,000 committed entries in flight, while the
  publisher uploads to a directory or to the single-node RGW (scripts/rgw.sh). Reported:
  ingest rate (ratio: to the same loop with no publisher), objects (tiles, bundles, payload
  bundles) uploaded per second, and the publication lag sampled every 100 ms (p50, p99, max)
  plus the time to catch up once ingest stops. The publish interval is the default 1 s, so
  the lag includes up to one interval by design.
* **rebuild of 10^6 entries** (10^5 with ``--quick``): a store built offline
  (benchmarks/stores.py, committed 200-byte payloads) is published once (bulk upload timed
  too), then rebuilt into an empty LMDB from the directory and from RGW with
  ``sync_from_store`` (what ``translog rebuild`` runs). Baseline: ``fsck`` of the original
  store, i.e. recomputing and checking everything locally.
* **reads**: the same published log read through nginx (config/nginx-translog.conf) and
  through ``translog serve`` (its default 2 workers), closed loop, 64 connections, random full
  level-0 tiles and entry bundles (benchmarks/http_load.py). Ratio: nginx / serve.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import http_load
from benchmarks.bench_http import make_data_dir, start_translog
from benchmarks.common import OUT, Row, Series, Settings, progress, scratch_dir
from benchmarks.stores import build
from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.vkey import parse_vkey
from translog.log.datadir import open_data_dir
from translog.log.fsck import fsck
from translog.log.sequencer import Log, LogOptions, SignedCheckpoint
from translog.publish.publisher import Publisher, PublisherOptions
from translog.publish.rebuild import sync_from_store
from translog.publish.store import DirectoryStore, ObjectStore, S3Settings, S3Store
from translog.storage.base import StoredCheckpoint
from translog.storage.lmdb import LMDBStorage

ROOT = Path(__file__).resolve().parents[1]


def start_rgw(env: dict[str, str]) -> S3Settings:
    """scripts/rgw.sh start (a cluster of our own); the endpoint and credentials it prints."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "rgw.sh"), "start"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return S3Settings(
        env["RGW_ENDPOINT"], "us-east-1", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    )


def new_bucket(settings: S3Settings, prefix: str) -> S3Store:
    name = f"bench-{os.getpid()}-{random.randrange(1 << 30):x}"
    store = S3Store(name, prefix, settings)
    store.ensure_bucket(public_read=False)
    return store


# -- 1. publication at maximum ingest ----------------------------------------------------


async def _ingest(
    tmp: Path, seconds: float, public: ObjectStore | None, private: ObjectStore | None
) -> dict[str, float]:
    from translog.core.signing import NoteSigner

    signer = NoteSigner.generate("bench.example/objstore")
    storage = LMDBStorage(tmp / f"lmdb-{random.randrange(1 << 30):x}", map_size=1 << 30)
    log = Log(storage, signer.name, signer, options=LogOptions(max_pending=1_000_000))
    await log.start()
    publisher = None
    if public is not None:
        publisher = Publisher(log, signer.vkey, public, private, PublisherOptions(concurrency=8))
        await publisher.start()
    payloads = [os.urandom(200) for _ in range(1000)]
    lags: list[float] = []
    stop = time.monotonic() + seconds

    async def sample() -> None:
        while time.monotonic() < stop:
            if publisher is not None:
                lags.append(publisher.lag_seconds)
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    inflight: set[asyncio.Future[Any]] = set()
    started = time.monotonic()
    while time.monotonic() < stop:
        while len(inflight) < 8:
            inflight.add(log.submit(payloads))
        _done, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
    if inflight:
        await asyncio.wait(inflight)
    elapsed = time.monotonic() - started
    await sampler
    size = log.size
    result = {"ingest": size / elapsed}
    if publisher is not None:
        await log.publish()
        caught = time.monotonic()
        while publisher.store_size < size:
            await asyncio.sleep(0.02)
            if time.monotonic() - caught > 120:
                raise RuntimeError("publication did not catch up within 120 s")
        result["catch_up"] = time.monotonic() - caught
        result["objects"] = publisher.objects / (time.monotonic() - started)
        ordered = sorted(lags)
        result["lag_p50"] = statistics.median(ordered)
        result["lag_p99"] = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        result["lag_max"] = ordered[-1]
        await publisher.close(final=False)
    await log.close()
    return result


def publication(settings: Settings, rgw: S3Settings, series: Series) -> None:
    seconds = 4.0 if settings.quick else 10.0
    with scratch_dir("objstore-pub") as tmp:
        for rep in range(settings.reps):
            base = asyncio.run(_ingest(tmp, seconds, None, None))
            series.add("ingest, no publisher", base["ingest"])
            for target in ("directory", "rgw"):
                if target == "directory":
                    public: ObjectStore = DirectoryStore(tmp / f"pub-{rep}")
                    private: ObjectStore = DirectoryStore(tmp / f"priv-{rep}")
                else:
                    public, private = new_bucket(rgw, "pub"), new_bucket(rgw, "priv")
                r = asyncio.run(_ingest(tmp, seconds, public, private))
                for key, value in r.items():
                    series.add(f"{target}: {key}", value)
                progress(
                    f"objstore: rep {rep + 1} {target}: ingest {r['ingest']:,.0f}/s "
                    f"(alone {base['ingest']:,.0f}/s), {r['objects']:,.0f} objects/s, "
                    f"lag p99 {r['lag_p99']:.2f} s, catch-up {r['catch_up']:.2f} s"
                )
            shutil.rmtree(tmp / f"pub-{rep}", ignore_errors=True)
            shutil.rmtree(tmp / f"priv-{rep}", ignore_errors=True)


# -- 2. rebuild ---------------------------------------------------------------------------


def rebuild_and_reads(settings: Settings, rgw: S3Settings, series: Series) -> None:
    size = 100_000 if settings.quick else 1_000_000
    with scratch_dir("objstore-rebuild") as tmp:
        data = make_data_dir(tmp / "log")
        progress(f"objstore: building a store of {size:,} entries")
        built = build(data.path / "lmdb", size)
        data_dir = open_data_dir(data.path)
        storage = data_dir.open_storage()
        note = sign_checkpoint(
            Checkpoint(data_dir.config.log.origin, size, built.root), data_dir.signer
        )
        storage.put_checkpoint(StoredCheckpoint(size, time.time_ns() // 1_000_000, note))
        verifier = parse_vkey(data.vkey)
        origin = data_dir.config.log.origin
        log = Log(storage, origin, data_dir.signer)
        target = SignedCheckpoint(Checkpoint(origin, size, built.root), 0, note)
        stores: dict[str, tuple[ObjectStore, ObjectStore]] = {
            "directory": (DirectoryStore(tmp / "www"), DirectoryStore(tmp / "private")),
            "rgw": (new_bucket(rgw, "pub"), new_bucket(rgw, "priv")),
        }
        for name, (public, private) in stores.items():
            publisher = Publisher(log, data.vkey, public, private, PublisherOptions(16))
            started = time.perf_counter()
            publisher.publish_now(target)
            took = time.perf_counter() - started
            publisher.shutdown()
            series.add(f"bulk publish to {name}", publisher.objects / took)
            progress(f"objstore: published {publisher.objects:,} objects to {name} in {took:.1f} s")
        for rep in range(settings.reps):
            started = time.perf_counter()
            report = fsck(storage, verifier, origin)
            if not report.ok:
                raise RuntimeError(f"fsck failed: {report.problems[:1]}")
            series.add("fsck (baseline)", time.perf_counter() - started)
            for name, (public, private) in stores.items():
                fresh = LMDBStorage(tmp / f"rebuilt-{name}-{rep}", map_size=1 << 30)
                started = time.perf_counter()
                got = sync_from_store(fresh, public, private, verifier, origin, concurrency=16)
                took = time.perf_counter() - started
                fresh.close()
                shutil.rmtree(tmp / f"rebuilt-{name}-{rep}")
                if got.entries != size or got.payloads != size:
                    raise RuntimeError(f"rebuild restored {got}")
                series.add(f"rebuild from {name}", took)
                progress(f"objstore: rep {rep + 1} rebuild from {name}: {took:.1f} s")
        storage.close()
        reads(settings, data, tmp, size, series)


# -- 3. reads: nginx vs translog serve -----------------------------------------------------


def reads(settings: Settings, data: Any, tmp: Path, size: int, series: Series) -> None:
    from tests.objstore.conftest import Nginx

    seconds = 3.0 if settings.quick else 8.0
    tiles = size // 256
    paths = [f"/tile/0/{_index(n)}" for n in random.sample(range(tiles), min(tiles, 500))]
    paths += [f"/tile/entries/{_index(n)}" for n in random.sample(range(tiles), min(tiles, 500))]
    (tmp / "www").chmod(0o755)
    work = tmp / "nginx"
    work.mkdir()
    nginx = Nginx(tmp / "www", work).start()
    server = start_translog(data, tmp, "objstore-serve")
    try:
        for rep in range(settings.reps):
            for name, port in (("nginx", nginx.port), ("translog serve", server.port)):
                spec = {
                    "port": port,
                    "method": "GET",
                    "paths": paths,
                    "headers": {},
                    "body_file": None,
                    "mode": "closed",
                    "duration": seconds,
                    "connections": 64,
                    "rate": 0,
                    "max_connections": 1024,
                    "seed": random.randrange(1 << 30),
                }
                result = http_load.run_process(spec, tmp)
                if result["non_2xx"] or result["errors"] > result["requests"] // 1000:
                    raise RuntimeError(f"{name}: {result}")
                series.add(f"reads: {name}", result["rate"])
                series.add(f"reads p99: {name}", result["p99_ms"])
                progress(f"objstore: rep {rep + 1} reads from {name}: {result['rate']:,.0f}/s")
    finally:
        server.stop()
        nginx.stop()


def _index(n: int) -> str:
    from translog.core.tiles import format_index

    return format_index(n)


def run(settings: Settings) -> list[Row]:
    """All three measurements, on a gateway of its own (scripts/rgw.sh), stopped at the end."""
    from tests.objstore.conftest import rgw_env

    OUT.mkdir(exist_ok=True)
    env = rgw_env(f"/tmp/translog-rgw-bench-{os.getpid()}")
    rgw = start_rgw(env)
    series = Series("objstore")
    try:
        publication(settings, rgw, series)
        rebuild_and_reads(settings, rgw, series)
    finally:
        subprocess.run([str(ROOT / "scripts" / "rgw.sh"), "stop"], env=env, check=False)
    base = "ingest, no publisher"
    rows = [series.row(base, "entries/s")]
    for t in ("directory", "rgw"):
        rows += [
            series.row(f"{t}: ingest", "entries/s", base),
            series.row(f"{t}: objects", "objects/s", note="tiles, bundles, payload bundles"),
            series.row(f"{t}: lag_p50", "s"),
            series.row(f"{t}: lag_p99", "s"),
            series.row(f"{t}: lag_max", "s"),
            series.row(f"{t}: catch_up", "s", note="after ingest stops"),
        ]
    rows += [
        series.row("bulk publish to directory", "objects/s"),
        series.row("bulk publish to rgw", "objects/s"),
        series.row("fsck (baseline)", "s"),
        series.row("rebuild from directory", "s", "fsck (baseline)"),
        series.row("rebuild from rgw", "s", "fsck (baseline)"),
        series.row("reads: translog serve", "req/s"),
        series.row("reads: nginx", "req/s", "reads: translog serve"),
        series.row("reads p99: translog serve", "ms"),
        series.row("reads p99: nginx", "ms", "reads p99: translog serve"),
    ]
    return rows
