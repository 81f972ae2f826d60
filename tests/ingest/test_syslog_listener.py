"""The syslog-over-TLS listener in process: client certificates, framing errors confined to
their connection, group commit, pushback retried, and TCP backpressure (it stops reading)."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pytest

from tests.ingest.syslog_helpers import (
    CLIENT_SUBJECT,
    Certs,
    client_context,
    listener_port,
    make_certs,
    message,
    running_log,
    send,
    syslog_config,
)
from translog.config import parse_config
from translog.errors import ConfigError, PushbackError
from translog.formats.syslog import frame
from translog.http.app import SYSLOG
from translog.http.keys import LOG, METRICS, SUBMISSIONS
from translog.log.requests import SubmitRequest


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def events(app: Any) -> list[dict[str, Any]]:
    log = app[LOG]
    return [json.loads(e.payload) for e in log.entries(0, log.size)]


async def until_size(app: Any, n: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while app[LOG].size < n:
            await asyncio.sleep(0.02)


async def test_messages_become_events_with_the_client_subject_each_once(certs: Certs) -> None:
    async with running_log(syslog_config(certs)) as app:
        port = listener_port(app)
        sent = [message(i) for i in range(300)]
        await asyncio.gather(
            send(port, client_context(certs), sent[:150], chunk=7),
            send(port, client_context(certs), sent[150:], chunk=150),
        )
        await until_size(app, 300)
        got = events(app)
        assert sorted(e["details"]["raw"].encode() for e in got) == sorted(sent)
        assert {e["details"]["transport"]["client_subject"] for e in got} == {CLIENT_SUBJECT}
        assert all(e["tenant"] == "acme" and e["action"] == "syslog.info" for e in got)
        assert {e["category"] for e in got} == {"authentication"}  # facility 10, authpriv
        first = next(e for e in got if e["details"]["syslog"]["procid"] == "1000")
        assert first["details"]["syslog"]["structured_data"] == {
            "auth@32473": {"user": "u0", "result": "ok"}
        }
        metrics = app[METRICS]
        async with asyncio.timeout(5):  # durable() counts once it returns, after the write
            while metrics.value("translog_source_entries_total", source="syslog") < 300:
                await asyncio.sleep(0.01)
        assert metrics.value("translog_source_entries_total", source="syslog") == 300


async def test_a_bad_frame_closes_only_its_connection(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_log(syslog_config(certs, max_message_bytes=512)) as app:
        port = listener_port(app)
        good = asyncio.create_task(
            send(port, client_context(certs), [message(i) for i in range(50)])
        )
        for stream in (b"20 <13>1 - - - - - - ok" + b"x3 abc", b"9999 " + b"a" * 100):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
            )
            writer.write(stream)
            await writer.drain()
            async with asyncio.timeout(5):
                assert await reader.read() == b""  # closed by the listener
            writer.close()
        await good
        await until_size(app, 51)  # the good 50, and the one well-framed message before "x3"
        assert len(events(app)) == 51
    text = caplog.text
    assert "bad MSG-LEN b'x3'" in text
    assert "frame of 9999+ bytes exceeds the 512-byte limit" in text
    assert CLIENT_SUBJECT in text


@pytest.mark.parametrize("how", ["no certificate", "another CA"])
async def test_clients_without_a_certificate_of_the_ca_are_refused(certs: Certs, how: str) -> None:
    async with running_log(syslog_config(certs)) as app:
        context = client_context(certs, cert=False, other=how == "another CA")
        refused = False
        try:  # TLS 1.3: the server's refusal arrives after the client's handshake is done
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", listener_port(app), ssl=context, server_hostname="localhost"
            )
            writer.write(b"".join(b"%d %s" % (len(m), m) for m in map(message, range(5))))
            async with asyncio.timeout(5):
                refused = await reader.read() == b""  # closed, nothing answered
        except (ssl.SSLError, ConnectionError):
            refused = True
        assert refused
        await asyncio.sleep(0.2)
        assert app[LOG].size == 0


async def test_anonymous_clients_without_client_ca(certs: Certs) -> None:
    async with running_log(syslog_config(certs, client_ca="")) as app:
        await send(listener_port(app), client_context(certs, cert=False), [message(1)])
        await until_size(app, 1)
        assert "client_subject" not in events(app)[0]["details"]["transport"]
        assert app[SYSLOG].token(None).name == "syslog:anonymous"


async def test_pushback_is_waited_out_and_nothing_is_lost_or_duplicated(certs: Certs) -> None:
    async with running_log(syslog_config(certs, max_pending=20)) as app:
        submissions = app[SUBMISSIONS]
        original = submissions.durable
        pushed = 0

        async def counting(request: SubmitRequest) -> Any:
            nonlocal pushed
            try:
                return await original(request)
            except PushbackError:
                pushed += 1
                raise

        submissions.durable = counting  # type: ignore[method-assign]
        sent = [message(i) for i in range(400)]
        await asyncio.gather(
            *(send(listener_port(app), client_context(certs), sent[i::4]) for i in range(4))
        )
        await until_size(app, 400)
        await asyncio.sleep(0.2)
        assert pushed > 0
        assert sorted(e["details"]["raw"].encode() for e in events(app)) == sorted(sent)


async def test_the_listener_stops_reading_when_messages_are_not_durable(certs: Certs) -> None:
    config = syslog_config(certs, max_inflight_per_connection=64, max_inflight=100)
    async with running_log(config) as app:
        submissions = app[SUBMISSIONS]
        gate = asyncio.Event()
        original = submissions.durable

        async def stalled(request: SubmitRequest) -> Any:
            await gate.wait()  # the log "never" gets durable
            return await original(request)

        submissions.durable = stalled  # type: ignore[method-assign]
        port = listener_port(app)
        writers = []
        for _ in range(2):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
            )
            writers.append(writer)
        per_chunk = 250
        chunk = b"".join(frame(message(i, size=4000)) for i in range(per_chunk))  # ~1 MB
        written = 0
        for w in writers:  # write until the sender blocks: the listener has stopped reading
            for _ in range(64):
                w.write(chunk)
                written += per_chunk
                try:
                    await asyncio.wait_for(w.drain(), 0.5)
                except TimeoutError:
                    break
            else:
                pytest.fail("the sender never blocked: the listener kept reading")
        listener = app[SYSLOG]
        assert 64 <= listener.window.used <= 100  # full, and bounded overall
        assert app[LOG].size == 0
        gate.set()
        for w in writers:
            async with asyncio.timeout(20):
                await w.drain()
            w.close()
        await until_size(app, written, timeout=20)
        assert app[LOG].size == written
        # the window is given back once each submit returns, just after its entries land
        async with asyncio.timeout(5):
            while listener.window.used:
                await asyncio.sleep(0.01)


async def test_max_connections(certs: Certs) -> None:
    async with running_log(syslog_config(certs, max_connections=1)) as app:
        port = listener_port(app)
        _, first = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
        )
        reader, _second = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
        )
        async with asyncio.timeout(5):
            with pytest.raises((ConnectionError, ssl.SSLError)):
                assert await reader.read() == b""
                raise ConnectionResetError
        first.write(b"%d %s" % (len(message(1)), message(1)))
        await first.drain()
        await until_size(app, 1)
        first.close()


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ('listen = "127.0.0.1:6514"', "syslog.tls_cert and syslog.tls_key: required"),
        ('listen = "nope"\ntls_cert = "c"\ntls_key = "k"', "syslog.listen: expected HOST:PORT"),
        (
            'listen = ":1"\ntls_cert = "c"\ntls_key = "k"\nmax_message_bytes = 99999',
            "syslog.listen",
        ),
        (
            'listen = "h:1"\ntls_cert = "c"\ntls_key = "k"\nmax_message_bytes = 99999',
            "syslog.max_message_bytes",
        ),
        (
            'listen = "h:1"\ntls_cert = "c"\ntls_key = "k"\nmax_connections = 0',
            "syslog.max_connections",
        ),
        (
            'listen = "h:1"\ntls_cert = "c"\ntls_key = "k"\nmax_inflight = 10',
            "syslog.max_inflight_per_connection",
        ),
        ('listen = "h:1"\ntls_cert = "c"\ntls_key = "k"\ntenant = "a b"', "syslog.tenant"),
        ('listen = "h:1"\ntls_cert = "c"\ntls_key = "k"\nrate_per_s = -1', "syslog.rate_per_s"),
        ("bogus = 1", "syslog.bogus: unknown key"),
    ],
)
def test_config_errors_name_the_key(section: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_config(f'[log]\norigin = "example.com/x"\n[syslog]\n{section}\n')


def test_the_listener_is_off_by_default(tmp_path: Path) -> None:
    config = parse_config('[log]\norigin = "example.com/x"\n')
    assert config.syslog.listen == ""
