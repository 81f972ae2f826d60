"""The real rsyslog (Debian's rsyslogd with rsyslog-relp) sending to translog over RELP/TLS.

A private rsyslogd takes 1,000 messages on a local imtcp input and forwards them with omrelp:
TLS (librelp's GnuTLS and OpenSSL drivers both), name authentication of translog's
certificate, a client certificate. RELP acknowledges each message only once it is durable,
so every message must be in the tree exactly once, with the client certificate's subject.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.ingest.syslog_helpers import (
    CLIENT_SUBJECT,
    RSYSLOGD,
    Certs,
    Rsyslogd,
    delivered,
    feed,
    free_port,
    lines,
    make_certs,
    running_log,
    syslog_config,
)
from translog.http.app import RELP
from translog.http.keys import METRICS

N = 1000


def omrelp_conf(work: Path, certs: Certs, in_port: int, out_port: int, tlslib: str) -> str:
    return f"""
global(workDirectory="{work}" maxMessageSize="8k")
module(load="imtcp")
module(load="omrelp" tls.tlslib="{tlslib}")
input(type="imtcp" address="127.0.0.1" port="{in_port}")
action(type="omrelp" target="127.0.0.1" port="{out_port}" tls="on"
       tls.caCert="{certs.ca}" tls.myCert="{certs.client_cert}"
       tls.myPrivKey="{certs.client_key}" tls.authMode="name"
       tls.permittedPeer=["localhost"] template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" queue.size="20000"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


def numbers(events: list[dict[str, Any]]) -> list[int]:
    return sorted(int(e["details"]["syslog"]["msg"].rsplit("msg=", 1)[1]) for e in events)


@pytest.mark.system
@pytest.mark.parametrize("tlslib", ["gnutls", "openssl"])
async def test_rsyslog_omrelp_delivers_1000_messages_each_once(tmp_path: Path, tlslib: str) -> None:
    assert Path(RSYSLOGD).exists(), "rsyslogd missing: run make system-deps"
    certs = make_certs(tmp_path / "certs")
    config = syslog_config(certs, listen="", relp_listen="127.0.0.1:0")
    async with running_log(config) as app:
        in_port = free_port()
        rsyslogd = Rsyslogd(
            tmp_path / "rsyslog", omrelp_conf(tmp_path, certs, in_port, app[RELP].port, tlslib)
        )
        rsyslogd.start()
        try:
            await feed(in_port, lines(N))
            events = await delivered(app, N, timeout=30)
        finally:
            output = await rsyslogd.stop()
        async with asyncio.timeout(10):  # the server side of the session ends
            while "translog_relp_connections_total{" not in app[METRICS].render():
                await asyncio.sleep(0.05)
        metrics = app[METRICS].render()
    assert len(events) == N, output
    assert numbers(events) == list(range(N))  # each message once
    for e in events:
        syslog = e["details"]["syslog"]
        assert e["details"]["transport"]["protocol"] == "relp-tls"
        assert e["details"]["transport"]["client_subject"] == CLIENT_SUBJECT
        assert syslog["format"] == "rfc5424" and syslog["version"] == 1
        assert (syslog["hostname"], syslog["app_name"]) == ("web1", "sshd")
        assert e["details"]["raw"].startswith("<86>1 ")
    assert f'translog_source_entries_total{{source="relp"}} {N}' in metrics
    # rsyslog closed its session on SIGTERM with a RELP close, answered in order
    assert 'translog_relp_connections_total{ended="close"} 1' in metrics, metrics
