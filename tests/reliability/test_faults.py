"""Faults beyond one process (issue 18): the bucket, the lease and the witnesses.

Real Ceph RGW (scripts/rgw.sh), real ``translog serve`` and ``translog witness`` processes;
faults by SIGKILL, SIGSTOP/SIGCONT, a TCP proxy (tests/reliability/faultproxy.py) and a clock
offset (``TRANSLOG_TEST_CLOCK_OFFSET_MS``). One repetition each in ``make test``;
``make soak`` sets ``TRANSLOG_FAULT_REPS``. Figures: docs/RELIABILITY.md §6.
"""

from __future__ import annotations

import asyncio
import random
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
                proxy.set(mode)
                figures["faults"] += 1
                acked_before = len(client.receipts)
                await asyncio.sleep(3.0)
                # Still accepting durably; the lag shows in /metrics and /healthz.
                assert len(client.receipts) > acked_before + 10, client.statuses
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
