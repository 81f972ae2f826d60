"""The real rsyslog (Debian's rsyslogd with rsyslog-gnutls) forwarding over TLS to translog.

A private rsyslogd (its own config, work directory and pid file; no imuxsock, so the host's
/dev/log is left alone) takes 1,000 messages on a local imtcp input and forwards them with
omfwd: StreamDriver gtls, x509/name authentication of translog's certificate, a client
certificate, octet-counted framing, RFC 5424 (RSYSLOG_SyslogProtocol23Format). Every message
must be in the tree exactly once, with the client certificate's subject.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ingest.syslog_helpers import (
    CLIENT_SUBJECT,
    RSYSLOGD,
    Rsyslogd,
    delivered,
    feed,
    free_port,
    lines,
    listener_port,
    make_certs,
    running_log,
    syslog_config,
)

N = 1000


def rsyslog_conf(work: Path, certs_dir: Path, in_port: int, out_port: int) -> str:
    return f"""
global(workDirectory="{work}"
       defaultNetstreamDriverCAFile="{certs_dir}/ca.pem"
       defaultNetstreamDriverCertFile="{certs_dir}/client.pem"
       defaultNetstreamDriverKeyFile="{certs_dir}/client.key"
       maxMessageSize="8k")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{in_port}")
action(type="omfwd" target="127.0.0.1" port="{out_port}" protocol="tcp"
       StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
       StreamDriverPermittedPeers="localhost"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format"
       queue.type="LinkedList" queue.size="20000"
       action.resumeRetryCount="-1" action.resumeInterval="1")
"""


@pytest.mark.system
async def test_rsyslog_forwards_1000_messages_over_tls(tmp_path: Path) -> None:
    assert Path(RSYSLOGD).exists(), "rsyslogd missing: run make system-deps"
    certs = make_certs(tmp_path / "certs")
    work = tmp_path / "rsyslog"
    async with running_log(syslog_config(certs)) as app:
        in_port = free_port()
        rsyslogd = Rsyslogd(work, rsyslog_conf(work, certs.dir, in_port, listener_port(app)))
        rsyslogd.start()
        try:
            await feed(in_port, lines(N))
            events = await delivered(app, N, timeout=20)
        finally:
            output = await rsyslogd.stop()
    assert len(events) == N, output
    numbers = sorted(int(e["details"]["syslog"]["msg"].rsplit("msg=", 1)[1]) for e in events)
    assert numbers == list(range(N))  # each message once
    for e in events:
        syslog = e["details"]["syslog"]
        assert e["details"]["transport"]["client_subject"] == CLIENT_SUBJECT
        assert syslog["format"] == "rfc5424" and syslog["version"] == 1
        assert (syslog["hostname"], syslog["app_name"]) == ("web1", "sshd")
        assert e["actor"] == {"type": "host", "id": "web1"}
        assert (e["action"], e["category"]) == ("syslog.info", "authentication")
        assert e["details"]["raw"].startswith("<86>1 ")
