"""RELP's promise through a crash: translog is SIGKILLed while rsyslog streams to it over
RELP/TLS, and restarted on the same port. rsyslog keeps every message translog has not
acknowledged and resends it on the new session, and translog acknowledges a message only
once it is durable, so every message is in the tree (a few perhaps twice: durable, but the
acknowledgement died with the process). The log passes fsck afterwards.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import pytest

from tests.ingest.syslog_helpers import (
    CLIENT_SUBJECT,
    RSYSLOGD,
    Rsyslogd,
    feed,
    free_port,
    lines,
    make_certs,
)
from tests.ingest.test_relp_rsyslog import omrelp_conf
from tests.reliability.harness import ServerProcess, fsck_ok, make_log, set_config
from translog.storage.lmdb import LMDBStorage

N = 2000
RATE = 400
"""``syslog.rate_per_s``: the bucket holds messages read but not yet durable (pushback is
waited out), so a full RELP window of them is in flight when the kill comes."""
KILL_AT = 600
"""Entries in the tree when translog is killed (the stream is then under a third through)."""


async def tree_size(session: aiohttp.ClientSession, url: str, token: str) -> int:
    async with session.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
    m = re.search(r"^translog_tree_size (\d+)$", text, re.M)
    assert m, text[:500]
    return int(m[1])


async def stream(port: int) -> None:
    """Feed rsyslog the N messages."""
    batch = 100
    for start in range(0, N, batch):
        await feed(port, lines(batch, start))
        await asyncio.sleep(0.01)


@pytest.mark.system
async def test_no_message_is_lost_when_translog_is_killed_mid_stream(tmp_path: Path) -> None:
    assert Path(RSYSLOGD).exists(), "rsyslogd missing: run make system-deps"
    certs = make_certs(tmp_path / "certs")
    log = make_log(tmp_path / "data")
    relp_port = free_port()
    set_config(log.data, "server.workers", 0)
    with (log.data / "translog.toml").open("a") as f:  # init writes no [syslog] section
        f.write(
            f'\n[syslog]\nrelp_listen = "127.0.0.1:{relp_port}"\n'
            f'tls_cert = "{certs.server_cert}"\ntls_key = "{certs.server_key}"\n'
            f'client_ca = "{certs.ca}"\ntenant = "acme"\nrate_per_s = {RATE}\n'
        )
    server = ServerProcess(log, tmp_path)
    server.start()
    in_port = free_port()
    rsyslogd = Rsyslogd(
        tmp_path / "rsyslog", omrelp_conf(tmp_path, certs, in_port, relp_port, "gnutls")
    )
    rsyslogd.start()
    killed_at = 0
    try:
        async with aiohttp.ClientSession() as session:
            feeder = asyncio.create_task(stream(in_port))
            async with asyncio.timeout(30):
                while (size := await tree_size(session, server.url, log.token)) < KILL_AT:
                    await asyncio.sleep(0.01)
            server.kill()
            killed_at = size
            await asyncio.sleep(1.0)  # rsyslog finds the session broken and queues
            server.start()
            await feeder
            # Everything arrives, with the resent ones; a lost message would leave the tree
            # short of N, and it stops growing (3 s).
            last, still = -1, 0.0
            async with asyncio.timeout(60):
                while still < 3.0:
                    size = await tree_size(session, server.url, log.token)
                    still = still + 0.1 if size == last else 0.0
                    last = size
                    await asyncio.sleep(0.1)
    finally:
        output = await rsyslogd.stop()
        if server.proc is not None and server.proc.poll() is None:
            assert server.stop() == 0
    assert killed_at < N // 2, f"the kill came too late to test anything ({killed_at})"
    storage = LMDBStorage(log.data / "lmdb", readonly=True)
    try:
        entries = storage.get_entries(0, storage.size())
    finally:
        storage.close()
    events = [json.loads(e.payload or b"{}") for e in entries]
    assert all(e["details"]["transport"]["client_subject"] == CLIENT_SUBJECT for e in events)
    numbers = [int(e["details"]["syslog"]["msg"].rsplit("msg=", 1)[1]) for e in events]
    assert set(numbers) == set(range(N)), (sorted(set(range(N)) - set(numbers))[:20], output)
    resent = len(numbers) - N  # durable, but their acknowledgement died with the process
    print(f"killed at {killed_at} entries; {len(numbers)} entries, {resent} resent")
    assert 0 <= resent <= 2048, resent  # at most what was in flight (the windows)
    ok, report = fsck_ok(log)
    assert ok, report
