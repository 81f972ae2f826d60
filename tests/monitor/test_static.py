"""A tlog-tiles log that is only a directory of files, written by an independent writer
(tests/monitor/fakelog.py) with non-translog leaves, served by a plain static file server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.logservers import ThreadedServer
from tests.monitor.fakelog import Key, TileLog
from tests.monitor.helpers import ListSink, check_offline
from translog.cli.command import main
from translog.formats.rules import rule_from_config
from translog.monitor.alerts import Reporter
from translog.monitor.config import LogConfig
from translog.monitor.follower import Follower
from translog.monitor.store import Store


@pytest.fixture
def static_log(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "www"
    log = TileLog(Key("static.example/log"))
    log.add(*[os.urandom(1 + i % 300) for i in range(1000)])  # not translog leaves
    log.write_static(root)
    app = web.Application()
    app.router.add_static("/", root)
    server = ThreadedServer(app).start()
    yield log, root, server
    server.stop()


def test_audit_static_directory(
    static_log: tuple[TileLog, Path, ThreadedServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, root, server = static_log
    args = ["audit", server.url, "--vkey", log.key.vkey, "--evidence-dir", str(tmp_path), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    # Rewrite one entry on disk: the bundle no longer matches the signed tree.
    bundle = root / "tile" / "entries" / "002"
    data = bytearray(bundle.read_bytes())
    data[10] ^= 1
    bundle.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(args) == 3
    alert = json.loads(capsys.readouterr().out)
    assert alert["alert"] == "bundle_mismatch"
    assert main(["verify", alert["evidence"], "--vkey", log.key.vkey]) == 0
    assert "ok: evidence (bundle_mismatch, proven)" in capsys.readouterr().out


async def test_monitor_follows_static_growth(
    static_log: tuple[TileLog, Path, ThreadedServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    log, root, server = static_log
    store = Store(tmp_path / "state.sqlite")
    sink = ListSink()
    rule = rule_from_config({"name": "any", "match": {"action": "x"}}, "rule[0]")
    cfg = LogConfig(name="static", url=server.url, vkey=log.key.vkey)
    f = Follower(cfg, Reporter(tmp_path / "ev", [sink], store), store, rules=[rule])
    try:
        assert await f.poll() == []
        assert "not a translog leaf" in capsys.readouterr().err
        log.add(*[os.urandom(40) for _ in range(66_000)])
        log.write_static(root)  # new files; earlier partial tiles stay, as tlog-tiles requires
        assert await f.poll() == []
        state = store.log("static")
        assert state is not None and state.size == 67_000 and state.root == log.root()
        # A level-1 tile completed by the next growth is rewritten: caught by comparing it
        # with the recomputation (67,000 + 65,536 entries: level 1 holds 517 hashes).
        log.add(*[os.urandom(40) for _ in range(65_536)])
        log.write_static(root)
        tile = root / "tile" / "1" / "001"
        good = tile.read_bytes()
        tile.write_bytes(good[: 32 * 7] + bytes(32) + good[32 * 8 :])
        alerts = await f.poll()
        assert [a.kind for a in alerts] == ["tile_mismatch"]
        lines = check_offline(alerts[0], log.key.vkey)
        assert "node (8, 263)" in lines[2] and "tile tile/1/001 disagrees" in lines[3]
        state = store.log("static")
        assert state is not None and state.size == 132_536  # the entries themselves verified
    finally:
        await f.close()
        store.close()
