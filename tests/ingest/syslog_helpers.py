"""Shared by the syslog tests and the benchmark: test certificates, a log app with the
syslog listener, and an asyncio TLS client that sends octet-counted messages."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from translog.config import Config, EventsSection, LogSection, SequencerSection, SyslogSection
from translog.core.signing import NoteSigner
from translog.formats.syslog import frame
from translog.http.app import SYSLOG, make_app
from translog.http.keys import LOG
from translog.storage.base import Storage
from translog.storage.memory import MemoryStorage

CLIENT_SUBJECT = "CN=relay1,O=Acme Corp"


@dataclass(frozen=True)
class Certs:
    """PEM files in one directory (keys mode 0600)."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_cert: Path
    other_key: Path


def _name(text: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(text)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        b = b.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.write_bytes(data)
    if private:
        os.chmod(path, 0o600)
    return path


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for localhost / 127.0.0.1, and a client certificate
    (``CLIENT_SUBJECT``) it issued; and a client certificate from another CA."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM

    def key_pem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("CN=Test Syslog CA", ca_key, None, ca=True)
    s_key, c_key, o_key, oca_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    server = _issue("CN=localhost", s_key, (ca.subject, ca_key), server=True)
    client = _issue(CLIENT_SUBJECT, c_key, (ca.subject, ca_key))
    other_ca = _issue("CN=Other CA", oca_key, None, ca=True)
    other = _issue("CN=intruder", o_key, (other_ca.subject, oca_key))
    d = directory
    return Certs(
        d,
        _write(d / "ca.pem", ca.public_bytes(pem)),
        _write(d / "server.pem", server.public_bytes(pem)),
        _write(d / "server.key", key_pem(s_key), True),
        _write(d / "client.pem", client.public_bytes(pem)),
        _write(d / "client.key", key_pem(c_key), True),
        _write(d / "other-ca.pem", other_ca.public_bytes(pem)),
        _write(d / "other.pem", other.public_bytes(pem)),
        _write(d / "other.key", key_pem(o_key), True),
    )


def syslog_config(certs: Certs, *, max_pending: int = 100_000, **syslog: Any) -> Config:
    """A config with events on and the listener on 127.0.0.1, any port, client certs on."""
    section = SyslogSection(
        listen="127.0.0.1:0",
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
        client_ca=str(certs.ca),
        tenant="acme",
    )
    config = Config(
        log=LogSection(origin="example.com/syslog-test"),
        sequencer=SequencerSection(max_pending=max_pending),
        events=EventsSection(enabled=True),
        syslog=replace(section, **syslog),
    )
    config.validate()
    return config


@asynccontextmanager
async def running_log(
    config: Config, storage: Storage | None = None
) -> AsyncIterator[web.Application]:
    """The log app started (its log and syslog listener; no HTTP site needed)."""
    app = make_app(
        config, storage=storage or MemoryStorage(), signer=NoteSigner.generate(config.log.origin)
    )
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        yield app
    finally:
        await runner.cleanup()


def client_context(certs: Certs, *, cert: bool = True, other: bool = False) -> ssl.SSLContext:
    """A client TLS context trusting the test CA, with the client certificate."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    if other:
        context.load_cert_chain(certs.other_cert, certs.other_key)
    elif cert:
        context.load_cert_chain(certs.client_cert, certs.client_key)
    return context


def message(i: int, *, tag: str = "test", size: int = 0) -> bytes:
    """An RFC 5424 message with structured data, number ``i`` (padded to about ``size``)."""
    base = (
        b"<86>1 2026-09-21T10:00:00.%06dZ web-%d.example.com %s %d login "
        b'[auth@32473 user="u%d" result="ok"] \xef\xbb\xbfaccepted publickey for u%d'
        % (i % 1_000_000, i % 7, tag.encode(), 1000 + i, i, i)
    )
    return base + b" " + b"x" * max(0, size - len(base) - 1) if size > len(base) else base


async def send(
    port: int, context: ssl.SSLContext, messages: Sequence[bytes], *, chunk: int = 256
) -> None:
    """Open a TLS connection, write ``messages`` octet-counted, close it."""
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    for i in range(0, len(messages), chunk):
        writer.write(b"".join(frame(m) for m in messages[i : i + chunk]))
        await writer.drain()
    writer.close()
    with suppress(ConnectionError, ssl.SSLError):
        await writer.wait_closed()


def listener_port(app: web.Application) -> int:
    return app[SYSLOG].port


RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslogd:
    """One private rsyslogd (its own config, work directory and pid file)."""

    def __init__(self, work: Path, conf: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.conf = work / "rsyslog.conf"
        self.conf.write_text(conf)
        self.pid = work / "rsyslogd.pid"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        check = subprocess.run(
            [RSYSLOGD, "-N1", "-f", str(self.conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    async def stop(self) -> str:
        """SIGTERM, and wait without blocking the loop: omrelp sends a RELP close that the
        listener (in this loop) must answer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                while self.proc.poll() is None:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            self.proc.kill()
        return self.proc.communicate()[0].decode(errors="replace")


async def feed(port: int, lines: list[bytes]) -> None:
    """Write ``lines`` to rsyslog's imtcp input once it is up."""
    async with asyncio.timeout(10):
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
    w.write(b"".join(lines))
    await w.drain()
    w.close()


def lines(n: int, start: int = 0) -> list[bytes]:
    """RFC 3164 lines for rsyslog's imtcp input, numbered ``msg=<i>``."""
    return [
        b"<86>Sep 21 10:00:00 web1 sshd[%d]: accepted publickey for user%d msg=%05d\n"
        % (1000 + i, i, i)
        for i in range(start, start + n)
    ]


async def delivered(app: web.Application, n: int, *, timeout: float) -> list[dict[str, Any]]:
    """The log's events once it holds ``n`` entries, and nothing more arrived for 0.5 s."""
    log = app[LOG]
    async with asyncio.timeout(timeout):
        while log.size < n:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    return [json.loads(e.payload or b"{}") for e in log.entries(0, log.size)]
