"""Faults beyond one process (issue 18): the bucket, the lease and the witnesses.

Real Ceph RGW (scripts/rgw.sh), real ``translog serve`` and ``translog witness`` processes;
faults by SIGKILL, SIGSTOP/SIGCONT, a TCP proxy (tests/reliability/faultproxy.py) and a clock
offset (``TRANSLOG_TEST_CLOCK_OFFSET_MS``). One repetition each in ``make test``;
``make soak`` sets ``TRANSLOG_FAULT_REPS``. Figures: docs/RELIABILITY.md §6.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.reliability.cluster import (
    REPS,
    BucketWatcher,
    Client,
    Forks,
    audit,
    get,
    make_writer_dirs,
    metric,
    record_figures,
    watch_checkpoints,
)
from tests.reliability.harness import fsck_ok

pytestmark = pytest.mark.system


async def test_bucket_blackholed_mid_publication_then_back(rgw: Any, tmp_path: Path) -> None:
    """Scenario 1: the bucket is blackholed (or resets) while tiles and checkpoints upload."""
    writers = make_writer_dirs(rgw, tmp_path, 1, ttl_ms=20_000, renew_ms=2000, max_lag_ms=1000)
    server = writers.server(0, tmp_path)
    proxy = writers.proxies[0]
    forks = Forks()
    watcher = BucketWatcher(writers.log, writers.public_url, forks)
    rng = random.Random(18)
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    server.launch()
    await server.wait_ready()
    client = Client(writers.log, lambda: [("w0", server.url)])
    token = writers.log.token
    async with aiohttp.ClientSession() as http:
        try:
            watcher.start()
            client.start()
            for rep in range(REPS):
                await asyncio.sleep(0.5 + rng.random())
                mode = "blackhole" if rep % 2 == 0 else "reset"
                size_before = await metric(http, server.url, "translog_tree_size", token)
                proxy.set(mode)
                figures["faults"] += 1
                await asyncio.sleep(0.5)
                # Still accepting durably (receipts wait for the store: a writer shows only
                # checkpoints it accepted); the lag shows in /metrics and /healthz.
                async with http.post(
                    f"{server.url}/add?wait=0",
                    data=b"during the fault %d" % rep,
                    headers={"Authorization": f"Bearer {token}"},
                ) as r:
                    assert r.status == 202, await r.text()
                await asyncio.sleep(2.5)
                size = await metric(http, server.url, "translog_tree_size", token)
                assert size is not None and size_before is not None and size > size_before
                lag = await metric(http, server.url, "translog_objstore_lag_seconds", token)
                assert lag is not None and lag > 1.5, lag
                status, body = await get(http, f"{server.url}/healthz")
                assert status == 503 and b"behind" in body, (status, body)
                if rep == 0:
                    ok, out = audit(writers.log, writers.public_url)
                    assert ok, out
                figures["lag_s"].append(lag)
                proxy.set("pass")
                healed = time.monotonic()
                target = len(client.receipts)
                while watcher.size < target:
                    assert time.monotonic() - healed < 30, "publication did not resume"
                    await asyncio.sleep(0.05)
                figures["recover_s"].append(round(time.monotonic() - healed, 2))
        finally:
            await client.stop()
            await asyncio.sleep(0.5)
        status, _ = await get(http, f"{server.url}/healthz")
        assert status == 200
    assert server.stop() == 0  # SIGTERM: the final checkpoint is uploaded
    await watcher.stop()
    assert not watcher.problems, watcher.problems
    for r in client.receipts:
        forks.see(r.size, r.root, f"receipt of {r.key}")
    assert forks.forks() == []
    lost = watcher.lost(client.receipts)
    assert lost == []
    ok, out = audit(writers.log, writers.public_url)
    assert ok, out
    ok, out = fsck_ok(server.log)
    assert ok, out
    writers.close()
    record_figures(
        "bucket blackholed/reset mid-publication",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "forks": forks.forks(),
            "statuses": client.statuses,
            "withheld": 0,
        },
    )


async def test_zombie_leader_paused_past_its_lease(rgw: Any, tmp_path: Path) -> None:
    """Scenario 2: SIGSTOP the leader past the lease TTL, the standby takes over, SIGCONT."""
    writers = make_writer_dirs(rgw, tmp_path, 2, ttl_ms=3000, renew_ms=1000)
    forks = Forks()
    watcher = BucketWatcher(writers.log, writers.public_url, forks)
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    servers = [writers.server(0, tmp_path), writers.server(1, tmp_path)]
    leader, standby = servers
    leader.launch()
    await leader.wait_ready()
    order = [leader, standby]
    client = Client(
        writers.log,
        lambda: [(s.name, s.url) for s in order if s.port],
        waits=("durable", "published"),
    )
    stop = asyncio.Event()
    # /checkpoint of either writer goes into the same fork check as the bucket and receipts.
    polls = asyncio.create_task(watch_checkpoints(servers, forks, stop, writers.log.token))
    late: list[str] = []
    watcher.start()
    client.start()
    try:
        for rep in range(REPS):
            if rep:
                # The deposed leader's disk holds entries the store never accepted (never
                # acknowledged): it rejoins as a standby from the store (docs/OBJSTORE.md).
                shutil.rmtree(writers.dirs[servers.index(standby)] / "lmdb")
            standby.launch()
            await asyncio.sleep(1.0)
            assert not standby.ready()
            assert leader.proc is not None
            leader.proc.send_signal(signal.SIGSTOP)
            figures["faults"] += 1
            stopped = time.monotonic()
            took = await standby.wait_ready()
            figures["recover_s"].append(round(took, 2))
            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - stopped)))
            order[:] = [standby, leader]
            woke = time.time_ns() // 1_000_000
            leader.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(2.5)
            # An entry the old leader accepted after it woke up would be a write without the
            # lease (an answer computed before the pause may still arrive after it).
            late += [
                f"{r.key} accepted by {r.server} {r.timestamp_ms - woke} ms after SIGCONT"
                for r in client.receipts
                if r.server == leader.name and r.timestamp_ms >= woke
            ]
            # The old leader stays up, refusing; the next repetition's standby is a fresh one.
            leader.kill()
            leader.port = 0
            leader, standby = standby, leader
            order[:] = [leader]
    finally:
        await client.stop()
        stop.set()
        await polls
    assert leader.stop() == 0
    await watcher.stop()
    # With an object store a writer shows only checkpoints the store accepted (its
    # conditional PUT is the fence): no receipt, durable or published, of either writer and
    # no /checkpoint may fork the bucket's tree, and every acknowledged entry is in it.
    for r in client.receipts:
        forks.see(r.size, r.root, f"{r.wait} receipt of {r.key} from {r.server}")
    problems = watcher.problems
    lost = watcher.lost(client.receipts)
    writers.close()
    record_figures(
        "zombie leader (SIGSTOP past the lease, standby takes over, SIGCONT)",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "forks": forks.forks(),
            "statuses": client.statuses,
            "acked_after_sigcont": late,
            "durable_acknowledged": sum(r.wait == "durable" for r in client.receipts),
            "withheld": 0,
        },
    )
    assert not problems, problems
    assert late == []
    assert forks.forks() == []
    assert lost == []


async def test_partition_writer_bucket_longer_than_the_lease(rgw: Any, tmp_path: Path) -> None:
    """Scenario 3: the writer cannot reach the bucket for longer than its lease."""
    writers = make_writer_dirs(rgw, tmp_path, 1, ttl_ms=3000, renew_ms=1000)
    server = writers.server(0, tmp_path)
    proxy = writers.proxies[0]
    forks = Forks()
    watcher = BucketWatcher(writers.log, writers.public_url, forks)
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    server.launch()
    await server.wait_ready()
    client = Client(writers.log, lambda: [("w0", server.url)], waits=("durable", "published"))
    token = writers.log.token
    watcher.start()
    client.start()
    async with aiohttp.ClientSession() as http:
        try:
            for _ in range(REPS):
                await asyncio.sleep(1.0)
                proxy.set("blackhole")
                figures["faults"] += 1
                await asyncio.sleep(5.0)  # > ttl: the lease's own deadline passed
                # What clients are told meanwhile: 503 with Retry-After, and /healthz says why.
                headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "probe"}
                async with http.post(
                    f"{server.url}/add?kind=inline", data=b"probe", headers=headers
                ) as r:
                    assert r.status == 503, (r.status, await r.text())
                    assert "Retry-After" in r.headers
                    assert "lease" in await r.text()
                status, body = await get(http, f"{server.url}/healthz")
                assert status == 503 and b"lease" in body, body
                refused = await metric(http, server.url, "translog_lease_refused_total", token)
                assert refused is not None and refused >= 1
                acked = len(client.receipts)
                proxy.set("pass")
                healed = time.monotonic()
                while len(client.receipts) < acked + 20 or watcher.size < acked:
                    assert time.monotonic() - healed < 30, client.statuses
                    await asyncio.sleep(0.05)
                figures["recover_s"].append(round(time.monotonic() - healed, 2))
        finally:
            await client.stop()
    assert server.stop() == 0
    await watcher.stop()
    for r in client.receipts:
        forks.see(r.size, r.root, f"receipt of {r.key}")
    lost = watcher.lost(client.receipts)
    writers.close()
    record_figures(
        "partition writer-bucket longer than the lease",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "forks": forks.forks(),
            "statuses": client.statuses,
            "retry_after_on": sorted(client.retry_after),
            "withheld": 0,
        },
    )
    assert not watcher.problems, watcher.problems
    assert forks.forks() == []
    assert lost == []


async def test_rebuild_after_losing_the_data_directory(rgw: Any, tmp_path: Path) -> None:
    """Scenario 5: SIGKILL the writer, delete its LMDB, ``translog rebuild``, serve again.

    What is lost is what was durable on the lost disk but not yet in the store
    (``unpublished_at_kill``, bounded by the lag): with an object store no receipt, not even
    ``wait=durable``, is given for such entries (the writer answers against the store's
    checkpoint only), so no acknowledged entry may be lost.
    """
    writers = make_writer_dirs(rgw, tmp_path, 1, ttl_ms=3000, renew_ms=1000)
    server = writers.server(0, tmp_path)
    forks = Forks()
    watcher = BucketWatcher(writers.log, writers.public_url, forks)
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    data = writers.dirs[0]
    client = Client(writers.log, lambda: [("w0", server.url)], waits=("durable", "published"))
    lost_total: list[str] = []
    server.launch()
    await server.wait_ready()
    watcher.start()
    client.start()
    try:
        for rep in range(REPS):
            await asyncio.sleep(1.5)
            await watcher.poll()
            before = {i: lf for i, lf in enumerate(watcher.leaves)}
            server.kill()
            server.port = 0
            figures["faults"] += 1
            killed = time.monotonic()
            lag_entries = max(r.index for r in client.receipts) + 1 - watcher.size
            shutil.rmtree(data / "lmdb")
            out = subprocess.run(
                [sys.executable, "-m", "translog", "rebuild", "--data", str(data), "-q"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=writers.env,
            )
            assert out.returncode == 0, out.stderr
            ok, text = fsck_ok(server.log)
            assert ok, text
            server.launch()
            await server.wait_ready()
            figures["recover_s"].append(round(time.monotonic() - killed, 2))
            await asyncio.sleep(1.0)
            await watcher.poll()
            # What was published comes back exactly (the watcher also rejects a rollback).
            assert all(watcher.leaves[i] == lf for i, lf in before.items())
            lost = [x for x in watcher.lost(client.receipts) if x not in lost_total]
            lost_total += lost
            figures["lag_s"].append({"rep": rep, "unpublished_at_kill": lag_entries})
    finally:
        await client.stop()
    assert server.stop() == 0
    await watcher.stop()
    published = [r for r in client.receipts if r.wait == "published"]
    for r in published:
        forks.see(r.size, r.root, f"published receipt of {r.key}")
    final_lost = watcher.lost(client.receipts)
    writers.close()
    record_figures(
        "rebuild after losing the data directory",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": final_lost,
            "forks": forks.forks(),
            "statuses": client.statuses,
            "max_lag_ms": 1000,
            "withheld": 0,
        },
    )
    assert not watcher.problems, watcher.problems
    assert forks.forks() == []
    assert watcher.lost(published) == []
    assert final_lost == []
    ok, text = fsck_ok(server.log)
    assert ok, text
