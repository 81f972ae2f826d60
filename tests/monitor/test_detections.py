"""Every detection against the malicious log fixture, each with evidence that verifies offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.monitor.fakelog import TileLog, inline_leaf, promise_json
from tests.monitor.helpers import Rig, check_offline, make_log
from translog.errors import VerificationError
from translog.formats.verify import verify_file


@pytest.fixture
async def rig(tmp_path: Path):  # type: ignore[no-untyped-def]
    r = Rig(tmp_path, make_log(300))
    yield r
    await r.close()


async def test_honest_growth_raises_nothing_and_resumes(rig: Rig) -> None:
    assert await rig.poll() == []
    state = rig.store.log("fake")
    assert state is not None and state.size == 300
    assert state.root == rig.server.log.root()
    rig.server.log.add(*[f"more {i}".encode() for i in range(70_000 - 300)])
    assert await rig.poll() == []
    await rig.restart()
    rig.server.log.add(b"last")
    assert await rig.poll() == []
    state = rig.store.log("fake")
    assert state is not None and state.size == 70_001
    assert state.root == rig.server.log.root()


async def test_fork_two_views(rig: Rig) -> None:
    await rig.poll()
    other = TileLog(rig.server.log.key, rig.server.log.leaves[:200])
    other.add(*[f"other {i}".encode() for i in range(150)])
    rig.server.other = other
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["fork"]
    lines = check_offline(alerts[0], rig.cfg.vkey)
    assert lines[0].startswith("ok: evidence (fork, proven)")
    assert any("proven: the tree of size 350 has root" in x for x in lines)
    # The fork is not accepted: the state stays at the verified view.
    assert rig.store.log("fake").size == 300  # type: ignore[union-attr]


async def test_same_size_different_root(rig: Rig) -> None:
    await rig.poll()
    other = TileLog(rig.server.log.key, [*rig.server.log.leaves[:299], b"changed"])
    rig.server.other = other
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["same_size_different_root"]
    assert check_offline(alerts[0], rig.cfg.vkey)[0].startswith(
        "ok: evidence (same_size_different_root, proven)"
    )


async def test_rollback_replayed_checkpoint(rig: Rig) -> None:
    old = rig.server.log.checkpoint(100)
    await rig.poll()
    rig.server.checkpoint_override = old
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["rollback"]
    lines = check_offline(alerts[0], rig.cfg.vkey)
    assert "presented size 100 after size 300" in "\n".join(lines)


async def test_rewritten_tile(rig: Rig) -> None:
    await rig.poll()
    rig.server.log.add(*[f"new {i}".encode() for i in range(300)])
    good = rig.server.log.resources()["tile/0/001"]
    rig.server.tile_overrides["tile/0/001"] = good[:64] + bytes(32) + good[96:]
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["tile_mismatch"]
    lines = check_offline(alerts[0], rig.cfg.vkey)
    assert "node (0, 258)" in lines[2] and "tile tile/0/001 disagrees" in lines[3]


async def test_dropped_entry(rig: Rig) -> None:
    await rig.poll()
    rig.server.log.add(*[f"new {i}".encode() for i in range(100)])
    rig.server.bundle_filter = lambda path, es: [e for e in es if e != b"new 50"]
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["bundle_mismatch"]
    lines = check_offline(alerts[0], rig.cfg.vkey)
    assert lines[0].startswith("ok: evidence (bundle_mismatch, proven)")
    assert rig.store.log("fake").size == 300  # type: ignore[union-attr]


async def test_reordered_entries(rig: Rig) -> None:
    rig.server.bundle_filter = lambda path, es: (
        [es[1], es[0], *es[2:]] if path == "tile/entries/000" else es
    )
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["bundle_mismatch"]
    lines = check_offline(alerts[0], rig.cfg.vkey)
    assert "node (0, 0)" in "\n".join(lines)
    assert rig.store.log("fake") is None


async def test_bad_signature(rig: Rig) -> None:
    note = rig.server.log.checkpoint()
    rig.server.checkpoint_override = note.replace(b"\n300\n", b"\n301\n")
    alerts = await rig.poll()
    assert [a.kind for a in alerts] == ["bad_signature"]
    assert "confirmed: the checkpoint served does not verify" in "\n".join(
        check_offline(alerts[0], rig.cfg.vkey)
    )


async def test_stale(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_log(10), interval_seconds=0.01, stale_after_intervals=3)
    try:
        assert await r.poll() == []
        r.server.frozen = r.server.log.checkpoint()
        r.server.log.add(b"unpublished")
        import asyncio

        await asyncio.sleep(0.1)
        alerts = await r.poll()
        assert [a.kind for a in alerts] == ["stale"]
        assert "observed: checkpoint size 10" in "\n".join(check_offline(alerts[0], r.cfg.vkey))
        assert await r.poll() == []  # raised once
    finally:
        await r.close()


async def test_unavailable_is_not_tampering(rig: Rig) -> None:
    await rig.poll()
    rig.server.down = True
    kinds = [a.kind for _ in range(3) for a in await rig.poll()]
    assert kinds == ["unavailable"]
    alert = rig.sink.alerts[-1]
    assert alert.severity == "availability"
    assert "not evidence of tampering" in "\n".join(check_offline(alert, rig.cfg.vkey))
    rig.server.down = False
    assert [a.kind for a in await rig.poll()] == ["available"]


async def test_broken_promise(tmp_path: Path) -> None:
    log = make_log(0)
    t0 = 1_700_000_000_000
    log.add(*[inline_leaf(t0 + i, {"n": i}) for i in range(20)])
    promised = inline_leaf(t0 + 20, {"promised": True})
    log.add(inline_leaf(t0 + 20, {"n": 20}), inline_leaf(t0 + 21, {"n": 21}))
    pdir = tmp_path / "promises"
    pdir.mkdir()
    (pdir / "p.json").write_text(json.dumps(promise_json(log.key, promised, t0 + 20, t0 + 500)))
    kept = inline_leaf(t0 + 19, {"n": 19})
    (pdir / "kept.json").write_text(json.dumps(promise_json(log.key, kept, t0 + 19, t0 + 500)))
    r = Rig(tmp_path, log, promises_dir=pdir, promise_grace_seconds=0)
    try:
        alerts = await r.poll()
        assert [a.kind for a in alerts] == ["broken_promise"]
        lines = check_offline(alerts[0], r.cfg.vkey)
        assert lines[0].startswith("ok: evidence (broken_promise, proven)")
        assert [p.index for p in r.store.promises("fake", "kept")] == [19]
    finally:
        await r.close()


async def test_tampered_evidence_fails_offline(rig: Rig) -> None:
    await rig.poll()
    rig.server.other = TileLog(rig.server.log.key, [*rig.server.log.leaves[:299], b"x", b"y"])
    (alert,) = await rig.poll()
    assert alert.kind == "fork" and alert.evidence is not None
    obj = json.loads(alert.evidence.read_text())
    verify_file(json.dumps(obj).encode(), rig.cfg.vkey)
    obj["proof"] = obj["proof"][::-1]
    with pytest.raises(VerificationError):
        verify_file(json.dumps(obj).encode(), rig.cfg.vkey)
    obj = json.loads(alert.evidence.read_text())
    obj["older"], obj["newer"] = obj["newer"], obj["newer"]
    with pytest.raises(VerificationError, match=r"refuted|not proven"):
        verify_file(json.dumps(obj).encode(), rig.cfg.vkey)


async def test_witness_policy_not_met(tmp_path: Path) -> None:
    from translog.core.signing import CosignatureSigner

    log = make_log(20)
    witness = CosignatureSigner.generate("w1.example")
    policy = tmp_path / "log.policy"
    policy.write_text(f"log {log.key.vkey}\nwitness W1 {witness.vkey}\nquorum W1\n")
    r = Rig(tmp_path, log, policy=policy)
    try:
        alerts = await r.poll()
        assert [a.kind for a in alerts] == ["witness_policy"]
        lines = check_offline(alerts[0], r.cfg.vkey)
        assert "does not meet the policy" in "\n".join(lines)
        assert r.store.log("fake") is None
    finally:
        await r.close()
