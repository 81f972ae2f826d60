"""SIGKILL at random moments under concurrent idempotent load: nothing acknowledged is lost.

A bounded run of the harness (3 kills); ``make soak`` runs it with 25. See harness.py, and
docs/RELIABILITY.md for what "lost" means.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import aiohttp
import pytest

from tests.reliability.harness import (
    Ack,
    CrashHarness,
    CrashReport,
    LogDir,
    TreeChecker,
    make_log,
    wall_ms,
)
from translog.core.leaf import inline_leaf
from translog.core.merkle import leaf_hash


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.system
async def test_random_sigkills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    log = make_log(tmp_path / "data")
    harness = CrashHarness(log, tmp_path, workers=6, seed=6)
    report = await harness.run(kills=3)
    assert report.errors == []
    assert report.kills == 3 and report.restarts == 3
    assert report.fsck_runs == 4 and report.fsck_failures == []
    assert report.acked > 500, "the load must have made progress between kills"
    assert report.acked_promises > 0 and report.acked_receipts > 0
    assert report.lost == 0, report.explain()
    assert report.duplicates == 0
    # every entry was retried with its key until acked
    assert report.tree_size == report.acked, report.explain()
    assert report.checkpoints_checked > 3 and report.proofs_checked > 0
    assert log.token not in harness.server.output()

    # The checker itself must notice a loss, and say which entry and why: an "acknowledged"
    # receipt whose index holds another leaf, and a promise the log never saw.
    harness.server.start()
    try:
        async with aiohttp.ClientSession() as session:
            real = next(a for a in harness.acked if a.index is not None)
            fake = Ack(b"never sent", b"\x00" * 32, real.index, "fake-receipt")
            missing = Ack(b"never sent", b"\x01" * 32, None, "fake-promise", wall_ms())
            result = await harness.checker.catch_up(
                session,
                harness.server.url,
                [real, fake, missing],
                random.Random(0),
                0.5,
                check="probe",
                final=True,
            )
    finally:
        harness.server.kill_if_running()
    assert result.duplicates == 0
    lost = {e.key: e for e in result.lost}
    assert set(lost) == {"fake-receipt", "fake-promise"}
    assert lost["fake-receipt"].kind == "receipt" and lost["fake-receipt"].index == real.index
    assert lost["fake-receipt"].tree_leaf_hash == b64(real.leaf_hash)
    assert lost["fake-promise"].kind == "promise" and lost["fake-promise"].check == "probe"
    assert "nowhere in the tree" in lost["fake-promise"].reason


def test_a_late_promise_is_reported_late_and_a_missing_one_lost() -> None:
    """The accounting on its own, over a tree the test feeds: a promise missing when a check
    after a kill stops waiting is only overdue; if it lands later it is late (with its
    delay), not lost; one still missing at the final check is lost, with the details."""
    checker = TreeChecker(LogDir(Path("unused"), "unused", "unused"))
    now = wall_ms()
    receipt_leaf = inline_leaf(now, b"receipt")
    late_leaf = inline_leaf(now, b"late promise")
    moved_leaf = inline_leaf(now - 5, b"moved promise")  # same payload, another leaf
    checker.add_leaves([receipt_leaf])
    receipt = Ack(b"receipt", leaf_hash(receipt_leaf), 0, "r-ok")
    overwritten = Ack(b"overwritten", leaf_hash(inline_leaf(now, b"overwritten")), 0, "r-lost")
    late = Ack(b"late promise", leaf_hash(late_leaf), None, "p-late", now - 1)
    gone = Ack(b"never merged", leaf_hash(inline_leaf(now, b"never merged")), None, "p-gone", now)
    moved = Ack(
        b"moved promise", leaf_hash(inline_leaf(now, b"moved promise")), None, "p-moved", now
    )
    acked = [receipt, overwritten, late, gone, moved]

    assert checker.missing(acked, "after kill 1") == [overwritten, late, gone, moved]
    first = checker.account(acked, "after kill 1", final=False)
    assert first.overdue == 3 and first.late == []
    assert [(e.kind, e.key, e.check) for e in first.lost] == [("receipt", "r-lost", "after kill 1")]
    assert first.lost[0].tree_leaf_hash == b64(leaf_hash(receipt_leaf))
    assert first.lost[0].tree_payload == "receipt" and first.lost[0].payload_at == []

    checker.add_leaves([late_leaf, moved_leaf])  # the late promise lands after the check
    checker.missing(acked, "final")
    final = checker.account(acked, "final", final=True)
    assert [(e.key, e.index, e.missing_at, e.seen_at) for e in final.late] == [
        ("p-late", 1, "after kill 1", "final")
    ]
    assert final.late[0].late_ms >= 1
    lost = {e.key: e for e in final.lost}
    assert set(lost) == {"p-gone", "p-moved"}  # the lost receipt is not reported twice
    assert lost["p-gone"].first_missing == "after kill 1" and lost["p-gone"].check == "final"
    assert lost["p-gone"].payload_at == [] and "nowhere in the tree" in lost["p-gone"].reason
    assert lost["p-moved"].payload_at == [(2, b64(leaf_hash(moved_leaf)))]
    assert "its payload is in the tree at index 2" in lost["p-moved"].reason

    report = CrashReport()
    report.lost_details = [e.as_dict() for e in [*first.lost, *final.lost]]
    report.late_details = [e.as_dict() for e in final.late]
    report.lost, report.late = 3, 1
    text = report.explain()
    assert text.startswith("lost 3, late 1:")
    assert "LOST receipt key=r-lost (index 0" in text and "LOST promise key=p-gone" in text
    assert "LATE promise key=p-late" in text and "missing at after kill 1" in text
