"""Faults beyond one process (issue 18): one writer's wall clock off by ``SKEW_MS``.

The offset is the test-only hook ``TRANSLOG_TEST_CLOCK_OFFSET_MS`` (read once, in
:func:`translog.log.sequencer.now_ms`, the one wall clock of leaf timestamps, checkpoints and
the lease). The lease tolerates clocks that agree within ``ttl/5``; ``SKEW_MS`` is beyond that,
so what it costs is shown, and what must hold whatever the clocks say is asserted:

* no two checkpoints for one size with different roots (bucket, ``/checkpoint``, receipts);
* leaf timestamps never go backwards within the log, even after a writer whose clock was
  ahead hands over to one whose clock is right;
* every acknowledged entry (``wait=durable`` and ``wait=published``) is in the final tree
  at its index: with an object store a receipt carries a checkpoint the store accepted.

Phase A: the leader's clock is ahead; it stops (SIGTERM, the lease is released) and the
standby (right clock) can only take over once its clock passes the released record's expiry,
written by the clock that is ahead: the skew is what it costs.
(Were the leader killed instead, the standby would wait ``ttl + SKEW_MS``: the expiry was
written by the clock that is ahead.)
Phase B: a standby whose clock is ahead starts beside a healthy leader; it believes the lease
expired ``SKEW_MS`` early.
"""

from __future__ import annotations

import asyncio
import struct
import time
from pathlib import Path
from typing import Any

from tests.reliability.cluster import (
    BucketWatcher,
    Client,
    Forks,
    make_writer_dirs,
    record_figures,
    watch_checkpoints,
)
from translog.log.sequencer import CLOCK_OFFSET_ENV

SKEW_MS = 2000
"""Phase B: the standby's clock ahead, beyond ttl/5 but under the ttl."""
HANDOVER_SKEW_MS = 4000
"""Phase A: the leader's clock ahead by more than a clean hand-over takes."""
TTL_MS = 3000


def timestamps(leaves: list[bytes]) -> list[int]:
    """Each leaf's timestamp (bytes 1-8, big-endian milliseconds)."""
    return [struct.unpack(">Q", lf[1:9])[0] for lf in leaves]


async def test_writer_clock_ahead_lease_and_timestamps(rgw: Any, tmp_path: Path) -> None:
    writers = make_writer_dirs(rgw, tmp_path, 2, ttl_ms=TTL_MS, renew_ms=1000)
    forks = Forks()
    watcher = BucketWatcher(writers.log, writers.public_url, forks)
    ahead = {CLOCK_OFFSET_ENV: str(SKEW_MS)}
    w0 = writers.server(0, tmp_path, {CLOCK_OFFSET_ENV: str(HANDOVER_SKEW_MS)})
    w1 = writers.server(1, tmp_path)
    servers = [w0, w1]
    client = Client(
        writers.log,
        lambda: [(s.name, s.url) for s in servers if s.port],
        waits=("durable", "published"),
    )
    figures: dict[str, Any] = {"repetitions": 1, "faults": 0, "recover_s": [], "lag_s": []}
    stop = asyncio.Event()
    w0.launch()
    await w0.wait_ready()
    polls = asyncio.create_task(watch_checkpoints(servers, forks, stop, writers.log.token))
    watcher.start()
    client.start()
    try:
        # Phase A: the leader (clock ahead) stops cleanly and releases the lease: the standby
        # takes over at once, its clock SKEW_MS behind the last leaf timestamps.
        w1.launch()
        await asyncio.sleep(1.5)
        assert not w1.ready()
        assert w0.stop() == 0
        w0.port = 0
        figures["faults"] += 1
        took = await w1.wait_ready(timeout=30)
        figures["recover_s"].append(round(took, 2))
        # The cost: the released record's expiry is "now" by the clock that is ahead, so the
        # standby waits out the skew; by then its clock is past every leaf timestamp.
        assert took > HANDOVER_SKEW_MS / 1000 - 1, took
        await asyncio.sleep(1.5)
        # Phase B: a standby whose clock is ahead beside a healthy leader.
        w0 = writers.server(0, tmp_path, ahead)
        w0.name = "w0b"
        servers[0] = w0
        w0.launch()
        figures["faults"] += 1
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 and not w0.ready():
            await asyncio.sleep(0.05)
        early = w0.ready()
        figures["lag_s"].append({"standby_ahead_took_over_from_a_live_leader": early})
        await asyncio.sleep(2.0)
        # A takeover after the 5 s above (at a late renewal's edge) deposes the live leader:
        # before the fence its wait=durable receipts beyond the store were the "lost" ones.
        figures["lag_s"].append({"standby_ahead_leader_at_end": w0.ready()})
    finally:
        await client.stop()
        stop.set()
        await polls
    for s in servers:
        if s.port:
            s.stop()
        else:
            s.kill_if_running()
    await watcher.stop()
    for r in client.receipts:
        forks.see(r.size, r.root, f"{r.wait} receipt of {r.key} from {r.server}")
    ts = timestamps(watcher.leaves)
    backwards = [i for i in range(1, len(ts)) if ts[i] < ts[i - 1]]
    lost = watcher.lost(client.receipts)
    writers.close()
    record_figures(
        f"writer clock ahead by {SKEW_MS} ms (hand-over to a clock behind; standby ahead)",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "handover_skew_ms": HANDOVER_SKEW_MS,
            "forks": forks.forks(),
            "durable_acknowledged": sum(r.wait == "durable" for r in client.receipts),
            "timestamps_backwards": len(backwards),
            "statuses": client.statuses,
            "withheld": 0,
        },
    )
    assert not watcher.problems, watcher.problems
    assert forks.forks() == []
    assert backwards == [], [(i, ts[i - 1], ts[i]) for i in backwards[:5]]
    assert lost == []
