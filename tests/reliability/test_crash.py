"""SIGKILL at random moments under concurrent idempotent load: nothing acknowledged is lost.

A bounded run of the harness (3 kills); ``make soak`` runs it with 25. See harness.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.harness import Ack, CrashHarness, make_log

pytestmark = pytest.mark.system


async def test_random_sigkills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    log = make_log(tmp_path / "data")
    harness = CrashHarness(log, tmp_path, workers=6, seed=6)
    report = await harness.run(kills=3)
    assert report.errors == []
    assert report.kills == 3 and report.restarts == 3
    assert report.fsck_runs == 4 and report.fsck_failures == []
    assert report.acked > 500, "the load must have made progress between kills"
    assert report.acked_promises > 0 and report.acked_receipts > 0
    assert report.lost == 0
    assert report.duplicates == 0
    assert report.tree_size == report.acked  # every entry was retried with its key until acked
    assert report.checkpoints_checked > 3 and report.proofs_checked > 0
    assert log.token not in harness.server.output()

    # The checker itself must notice a loss: an "acknowledged" entry the log never saw.
    harness.server.start()
    try:
        async with aiohttp.ClientSession() as session:
            real = next(a for a in harness.acked if a.index is not None)
            fake = Ack(b"never sent", b"\x00" * 32, real.index)
            missing = Ack(b"never sent", b"\x01" * 32, None)
            lost, dups, _ = await harness.checker.catch_up(
                session, harness.server.url, [real, fake, missing], random.Random(0), 0.5
            )
        assert (lost, dups) == (2, 0)
    finally:
        harness.server.kill_if_running()
