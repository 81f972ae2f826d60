"""Shared pieces of the monitor tests: a follower over a fake log, and offline evidence checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.monitor.fakelog import Key, MaliciousServer, TileLog
from translog.formats.rules import Rule
from translog.formats.verify import verify_file
from translog.monitor.alerts import Alert, Reporter
from translog.monitor.config import LogConfig
from translog.monitor.follower import Follower
from translog.monitor.store import Store

ORIGIN = "fake.example/log"


class ListSink:
    """Collects alerts."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    async def emit(self, alert: Alert) -> None:
        self.alerts.append(alert)

    async def close(self) -> None:
        pass


def make_log(n: int, key: Key | None = None) -> TileLog:
    log = TileLog(key or Key(ORIGIN))
    log.add(*[f"entry {i}".encode() for i in range(n)])
    return log


class Rig:
    """A malicious server, a store and a follower for it."""

    def __init__(self, tmp: Path, log: TileLog, **cfg: Any) -> None:
        self.tmp = tmp
        self.server = MaliciousServer(log).start()
        self.store = Store(tmp / "state.sqlite")
        self.sink = ListSink()
        self.reporter = Reporter(tmp / "evidence", [self.sink], self.store)
        self.cfg = LogConfig(
            name="fake", url=self.server.url, vkey=log.key.vkey, timeout_seconds=5, retries=0, **cfg
        )
        self.rules: list[Rule] = []
        self.follower: Follower | None = None

    def make_follower(self) -> Follower:
        return Follower(self.cfg, self.reporter, self.store, rules=self.rules)

    async def poll(self) -> list[Alert]:
        if self.follower is None:
            self.follower = self.make_follower()
        return await self.follower.poll()

    async def restart(self) -> None:
        """Drop the follower and reopen the state, as a process restart does."""
        if self.follower is not None:
            await self.follower.close()
        self.follower = None
        self.store.close()
        self.store = Store(self.tmp / "state.sqlite")
        self.reporter = Reporter(self.tmp / "evidence", [self.sink], self.store)

    async def close(self) -> None:
        if self.follower is not None:
            await self.follower.close()
        self.store.close()
        self.server.stop()


def check_offline(alert: Alert, vkey: str) -> list[str]:
    """``translog verify`` on the alert's evidence file: its output lines."""
    assert alert.evidence is not None
    data = alert.evidence.read_bytes()
    assert json.loads(data)["kind"] == alert.kind
    return verify_file(data, vkey).lines()
