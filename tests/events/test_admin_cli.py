"""Offline admin actions (token create/revoke, reindex) are spooled and sequenced by the server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.events.helpers import ClientFactory
from translog.cli.command import main
from translog.config import Config, EventsSection, LogSection
from translog.formats.event_schema import parse_event
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.search import flush
from translog.log.datadir import init_data_dir, open_data_dir
from translog.log.self_audit import SPOOL_NAME
from translog.log.tokens import TokenStore


def _events_log(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    config = Config(log=LogSection(origin="admin.example/log"), events=EventsSection(enabled=True))
    init_data_dir(data, "admin.example/log", config)
    return data


async def test_token_and_reindex_actions_reach_the_log(
    tmp_path: Path, aiohttp_client: ClientFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _events_log(tmp_path)
    assert (
        main(
            [
                "token",
                "create",
                "--data",
                str(data),
                "--name",
                "ci",
                "--scope",
                "read",
                "--tenant",
                "acme",
            ]
        )
        == 0
    )
    assert main(["token", "revoke", "--data", str(data), "--name", "ci"]) == 0
    assert main(["reindex", "--data", str(data), "-q"]) == 0
    assert "reindexed 0 entries" in capsys.readouterr().out
    spool = data / SPOOL_NAME
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert len(spool.read_bytes().splitlines()) == 3
    data_dir = open_data_dir(data)
    app = make_app(
        data_dir.config,
        storage=data_dir.open_storage(),
        signer=data_dir.signer,
        tokens=TokenStore(data / "tokens.json"),
        data_dir=data,
    )
    await aiohttp_client(app)
    assert await flush(app) == 3
    assert not spool.exists() and not (data / (SPOOL_NAME + ".claimed")).exists()
    log = app[LOG]
    events = [parse_event(e.payload or b"") for e in log.entries(0, log.size)]
    assert [e["action"] for e in events] == [
        "translog.token.create",
        "translog.token.revoke",
        "translog.index.rebuild",
    ]
    assert events[0]["actor"]["type"] == "operator" and events[0]["tenant"] == "translog"
    assert events[0]["details"] == {"name": "ci", "scopes": ["read"], "tenants": ["acme"]}


def test_logs_without_events_spool_nothing(tmp_path: Path) -> None:
    data = tmp_path / "plain"
    init_data_dir(data, "plain.example/log")
    assert main(["token", "create", "--data", str(data), "--name", "ci"]) == 0
    assert not (data / SPOOL_NAME).exists()
    assert main(["reindex", "--data", str(data)]) == 1  # events are off: a clear error


def test_a_claimed_spool_from_a_crash_is_taken_again(tmp_path: Path) -> None:
    from translog.log.self_audit import take_spool

    data = tmp_path
    (data / (SPOOL_NAME + ".claimed")).write_bytes(b'{"a": 1}\n{"torn')
    (data / SPOOL_NAME).write_bytes(b'{"b": 2}\n')
    claimed, events = take_spool(data)
    assert claimed is not None and [json.loads(e) for e in events] == [{"a": 1}]
    claimed.unlink()
    _, events = take_spool(data)
    assert [json.loads(e) for e in events] == [{"b": 2}]
