"""``translog audit`` and ``translog monitor`` end to end through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.monitor.fakelog import MaliciousServer
from tests.monitor.helpers import make_log
from translog.cli.command import main


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = MaliciousServer(make_log(700)).start()
    yield s
    s.stop()


def test_audit_honest_log_exits_0(
    server: MaliciousServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["audit", server.url, "--vkey", server.log.key.vkey, "--evidence-dir", str(tmp_path)]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == ""
    assert "audited 700 entries" in err and "0 alert(s)" in err
    assert "audit: [" in err  # the progress bar


def test_audit_rewritten_tile_exits_3_and_evidence_verifies(
    server: MaliciousServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = server.log.resources()["tile/0/001"]
    server.tile_overrides["tile/0/001"] = bytes(32) + good[32:]
    vkey = server.log.key.vkey
    code = main(["audit", server.url, "--vkey", vkey, "--evidence-dir", str(tmp_path), "-q"])
    out, err = capsys.readouterr()
    assert code == 3, err
    alert = json.loads(out)
    assert alert["alert"] == "tile_mismatch" and alert["severity"] == "tampering"
    assert main(["verify", alert["evidence"], "--vkey", vkey]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("ok: evidence (tile_mismatch, proven)")


def test_audit_fork_against_earlier_checkpoint_exits_4(
    server: MaliciousServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.checkpoint"
    old.write_bytes(server.log.checkpoint(500))
    server.log.leaves[100] = b"rewritten"
    vkey = server.log.key.vkey
    code = main(
        [
            "audit",
            server.url,
            "--vkey",
            vkey,
            "--checkpoint",
            str(old),
            "--evidence-dir",
            str(tmp_path),
            "-q",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 4, err
    assert json.loads(out)["alert"] == "fork"


def test_audit_unreachable_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vkey = make_log(1).key.vkey
    code = main(
        [
            "audit",
            "http://127.0.0.1:9",
            "--vkey",
            vkey,
            "--evidence-dir",
            str(tmp_path),
            "-q",
            "--timeout",
            "2",
        ]
    )
    out, _ = capsys.readouterr()
    assert code == 1
    assert json.loads(out)["severity"] == "availability"


def test_monitor_once_with_config(
    server: MaliciousServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'state = "state.sqlite"\nevidence_dir = "ev"\n[output]\nfile = "alerts.jsonl"\n'
        f'[[log]]\nname = "fake"\nurl = "{server.url}"\nvkey = "{server.log.key.vkey}"\n'
    )
    assert main(["monitor", "-c", str(cfg), "--once"]) == 0
    assert (tmp_path / "state.sqlite").exists()
    server.checkpoint_override = server.log.checkpoint(10)
    assert main(["monitor", "-c", str(cfg), "--once"]) == 0
    out, _ = capsys.readouterr()
    lines = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert [json.loads(x)["alert"] for x in lines] == ["rollback"]
    assert json.loads(out)["alert"] == "rollback"


def test_monitor_process_polls_until_sigterm(server: MaliciousServer, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    cfg = tmp_path / "monitor.toml"
    cfg.write_text(
        f'state = "state.sqlite"\n[output]\nfile = "alerts.jsonl"\n'
        f'[[log]]\nurl = "{server.url}"\nvkey = "{server.log.key.vkey}"\n'
        "interval_seconds = 0.1\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "translog", "monitor", "-c", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while server.requests < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.checkpoint_override = server.log.checkpoint(5)
        lines: list[str] = []
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
            path = tmp_path / "alerts.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "following" in err and "stopped" in err
    assert json.loads(out.splitlines()[0])["alert"] == "rollback"
    assert [json.loads(x)["alert"] for x in lines] == ["rollback"]
