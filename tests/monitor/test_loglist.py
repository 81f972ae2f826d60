"""The monitor follows a published log list: every trusted log, successors, frozen logs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.integration.logservers import ThreadedServer
from tests.monitor.fakelog import Key, MaliciousServer
from tests.monitor.helpers import ListSink, make_log
from translog.errors import ConfigError
from translog.monitor.config import parse_monitor_config
from translog.monitor.monitor import Monitor


class ListServer:
    """Serves ``/logs.json`` from a mutable document."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"version": "translog-log-list/v1", "logs": []}
        app = web.Application()
        app.router.add_get("/logs.json", self._get)
        self.server = ThreadedServer(app).start()
        self.url = self.server.url + "/logs.json"

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self.doc)

    def stop(self) -> None:
        self.server.stop()


def _entry(name: str, key: Key, server: MaliciousServer, **extra: Any) -> dict[str, Any]:
    return {"name": name, "origin": key.origin, "vkey": key.vkey, "url": server.url, **extra}


async def test_follows_listed_logs_frozen_and_successor(tmp_path: Path) -> None:
    k1, k2, k3, evil = (Key(f"shard.example/{n}") for n in ("h1", "h2", "h3", "evil"))
    old, new, later, bad = make_log(4, k1), make_log(3, k2), make_log(2, k3), make_log(1, evil)
    servers = [MaliciousServer(log).start() for log in (old, new, later, bad)]
    s_old, s_new, s_later, s_bad = servers
    s_old.frozen = old.checkpoint()  # frozen: its final checkpoint forever
    lists = ListServer()
    lists.doc["logs"] = [
        _entry(
            "h1",
            k1,
            s_old,
            state="frozen",
            final_checkpoint=old.checkpoint().decode(),
            successor="h2",
        ),
        _entry("h2", k2, s_new, state="active"),
        _entry("evil", evil, s_bad, state="active"),  # its vkey is not pinned
    ]
    (tmp_path / "vkeys.txt").write_text(f"# pinned\n{k1.vkey}\n{k2.vkey}\n")
    cfg = parse_monitor_config(
        f'[[log_list]]\nurl = "{lists.url}"\nvkeys_file = "vkeys.txt"\n'
        "interval_seconds = 1\nstale_after_intervals = 3\ntimeout_seconds = 5\nretries = 0\n",
        base=tmp_path,
    )
    now = [1_800_000_000_000]
    sink = ListSink()
    mon = Monitor(cfg, sinks=[sink], clock=lambda: now[0])
    try:
        await mon.poll_all()
        assert sorted(mon.followers) == ["h1", "h2"]  # evil is listed but not trusted
        assert s_bad.requests == 0
        state = {n: mon.store.log(n) for n in ("h1", "h2")}
        assert state["h1"] is not None and state["h1"].size == 4
        assert state["h2"] is not None and state["h2"].size == 3
        assert mon.followers["h1"].final is not None and mon.followers["h1"].final.size == 4
        assert mon.followers["h2"].final is None

        # Rotation: h2 is frozen too and h3 announced (its key pinned by the operator).
        new.add(b"last one")
        s_new.frozen = new.checkpoint()
        (tmp_path / "vkeys.txt").write_text(f"{k1.vkey}\n{k2.vkey}\n{k3.vkey}\n")
        lists.doc["logs"][1].update(
            state="frozen", final_checkpoint=new.checkpoint().decode(), successor="h3"
        )
        lists.doc["logs"].append(_entry("h3", k3, s_later, state="active"))
        await mon.poll_all()
        assert sorted(mon.followers) == ["h1", "h2", "h3"]
        h3 = mon.store.log("h3")
        assert h3 is not None and h3.size == 2
        h2 = mon.store.log("h2")
        assert h2 is not None and h2.size == 4
        assert sink.alerts == []

        # Time passes with no change anywhere: only the active log is stale, never the frozen.
        now[0] += 60_000
        await mon.poll_all()
        stale = [a for a in sink.alerts if a.kind == "stale"]
        assert [a.log for a in stale] == ["h3"]
        assert [a.kind for a in sink.alerts] == ["stale"]
    finally:
        await mon.close()
        lists.stop()
        for s in servers:
            s.stop()


async def test_unverifiable_list_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    k1 = Key("shard.example/h1")
    log = make_log(2, k1)
    server = MaliciousServer(log).start()
    lists = ListServer()
    other = Key("shard.example/h1")  # same origin, another key: the final note won't verify
    lists.doc["logs"] = [
        _entry("h1", k1, server, state="frozen", final_checkpoint=log.checkpoint().decode()),
    ]
    cfg = parse_monitor_config(
        f'[[log_list]]\nurl = "{lists.url}"\nvkeys = ["{k1.vkey}"]\nretries = 0\n',
        base=tmp_path,
    )
    mon = Monitor(cfg, sinks=[ListSink()])
    try:
        await mon.poll_all()
        assert list(mon.followers) == ["h1"]
        lists.doc["logs"][0]["final_checkpoint"] = make_log(2, other).checkpoint().decode()
        lists.doc["logs"].append(_entry("h9", k1, server, state="active"))
        await mon.poll_all()
        assert list(mon.followers) == ["h1"]
        assert "log list" in capsys.readouterr().err
    finally:
        await mon.close()
        lists.stop()
        server.stop()


def test_log_list_config_needs_pinned_vkeys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"log_list\[0\]: give vkeys or vkeys_file"):
        parse_monitor_config('[[log_list]]\nurl = "http://x/logs.json"\n', base=tmp_path)
    with pytest.raises(ConfigError, match=r"log_list\[0\]\.vkeys\[0\]"):
        parse_monitor_config(
            '[[log_list]]\nurl = "http://x/logs.json"\nvkeys = ["nope"]\n', base=tmp_path
        )
    cfg = parse_monitor_config(
        '[[log_list]]\nurl = "http://x/logs.json"\nvkeys_file = "k"\n', base=tmp_path
    )
    assert cfg.logs == () and cfg.log_lists[0].vkeys_file == tmp_path / "k"


async def test_running_monitor_picks_up_a_successor(tmp_path: Path) -> None:
    k1, k2 = Key("shard.example/h1"), Key("shard.example/h2")
    old, new = make_log(3, k1), make_log(5, k2)
    s_old, s_new = MaliciousServer(old).start(), MaliciousServer(new).start()
    lists = ListServer()
    s_old.frozen = old.checkpoint()
    frozen = _entry("h1", k1, s_old, state="frozen", final_checkpoint=old.checkpoint().decode())
    lists.doc["logs"] = [frozen]
    cfg = parse_monitor_config(
        f'[[log_list]]\nurl = "{lists.url}"\nvkeys = ["{k1.vkey}", "{k2.vkey}"]\n'
        "interval_seconds = 0.1\nstale_after_intervals = 2\nretries = 0\n",
        base=tmp_path,
    )
    sink = ListSink()
    mon = Monitor(cfg, sinks=[sink])
    task = asyncio.create_task(mon.run())
    try:

        async def until(cond: Callable[[], bool]) -> None:
            async with asyncio.timeout(10):
                while not cond():
                    await asyncio.sleep(0.05)

        def size(name: str) -> int:
            st = mon.store.log(name)
            return -1 if st is None else st.size

        await until(lambda: size("h1") == 3)
        # Rotation announced while running: h2 named as h1's successor.
        lists.doc["logs"] = [{**frozen, "successor": "h2"}, _entry("h2", k2, s_new, state="active")]
        await until(lambda: size("h2") == 5)
        new.add(b"more")
        await until(lambda: size("h2") == 6)
        # Well past stale_after_intervals (0.2 s): the frozen h1 is never stale.
        await asyncio.sleep(0.6)
        assert "h1" not in {a.log for a in sink.alerts if a.kind == "stale"}
    finally:
        mon.stop()
        await asyncio.wait_for(task, 10)
        await mon.close()
        lists.stop()
        s_old.stop()
        s_new.stop()
