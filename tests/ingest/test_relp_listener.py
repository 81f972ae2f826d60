"""The RELP-over-TLS listener in process, driven by a RELP client written here: answers
only once durable and in command order, protocol errors confined to their connection, a
failed submission answered 500, and the server's hints."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest

from tests.ingest.syslog_helpers import (
    CLIENT_SUBJECT,
    Certs,
    client_context,
    make_certs,
    message,
    running_log,
    syslog_config,
)
from translog.errors import ConfigError, StorageFullError
from translog.formats.relp import RelpFrame, RelpFramer, encode_frame
from translog.http.app import RELP, SYSLOG
from translog.http.keys import LOG, METRICS, SUBMISSIONS
from translog.log.requests import SubmitRequest

OPEN = encode_frame(1, "open", b"relp_version=0\nrelp_software=test,1\ncommands=syslog")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def relp_config(certs: Certs, **syslog: Any) -> Any:
    return syslog_config(certs, listen="", relp_listen="127.0.0.1:0", **syslog)


class Client:
    """A RELP client over TLS: write raw frames, read the server's frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = RelpFramer(1 << 20)
        self.got: list[RelpFrame] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def frames(self, n: int, timeout: float = 10.0) -> list[RelpFrame]:
        """The next ``n`` frames from the server."""
        async with asyncio.timeout(timeout):
            while len(self.got) < n:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError(f"closed after {self.got}")
                self.got += self.framer.feed(data)
        out, self.got = self.got[:n], self.got[n:]
        return out

    async def closed(self, timeout: float = 10.0) -> list[RelpFrame]:
        """Every frame until the server closes the connection."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    data = await self.reader.read(65536)
                except (ConnectionError, ssl.SSLError):
                    break
                if not data:
                    break
                self.got += self.framer.feed(data)
        out, self.got = self.got, []
        return out

    async def opened(self) -> None:
        await self.send(OPEN)
        [answer] = await self.frames(1)
        assert answer.txnr == 1 and answer.command == "rsp"
        assert answer.data.startswith(b"200 OK\nrelp_version=0\nrelp_software=translog,")
        assert answer.data.endswith(b"\ncommands=syslog")


@asynccontextmanager
async def connect(app: Any, certs: Certs) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", app[RELP].port, ssl=client_context(certs), server_hostname="localhost"
    )
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def syslogs(first_txnr: int, n: int, start: int = 0) -> bytes:
    return b"".join(encode_frame(first_txnr + i, "syslog", message(start + i)) for i in range(n))


def events(app: Any) -> list[dict[str, Any]]:
    log = app[LOG]
    return [json.loads(e.payload) for e in log.entries(0, log.size)]


def stall(app: Any) -> asyncio.Event:
    """Hold every submission until the returned event is set (the log "never" gets durable)."""
    submissions = app[SUBMISSIONS]
    gate = asyncio.Event()
    original = submissions.durable

    async def stalled(request: SubmitRequest) -> Any:
        await gate.wait()
        return await original(request)

    submissions.durable = stalled  # type: ignore[method-assign]
    return gate


async def ended(app: Any, how: str, timeout: float = 5.0) -> None:
    """Until the connection counter shows one connection that ended ``how``."""
    line = f'translog_relp_connections_total{{ended="{how}"}} 1'
    async with asyncio.timeout(timeout):
        while line not in app[METRICS].render():
            await asyncio.sleep(0.02)


async def test_messages_answered_in_order_once_durable_and_close(certs: Certs) -> None:
    async with running_log(relp_config(certs)) as app, connect(app, certs) as client:
        await client.opened()
        await client.send(syslogs(2, 150))
        await client.send(syslogs(152, 150, start=150))
        answers = await client.frames(300)
        assert [a.txnr for a in answers] == list(range(2, 302))
        assert {(a.command, a.data) for a in answers} == {("rsp", b"200 OK")}
        assert app[LOG].size == 300  # answered: so durable
        got = events(app)
        assert sorted(e["details"]["raw"].encode() for e in got) == sorted(
            message(i) for i in range(300)
        )
        for e in got:
            assert e["details"]["transport"]["protocol"] == "relp-tls"
            assert e["details"]["transport"]["client_subject"] == CLIENT_SUBJECT
            assert e["tenant"] == "acme"
        await client.send(encode_frame(302, "close"))
        assert await client.closed() == [RelpFrame(302, "rsp", b"")]
        await ended(app, "close")
        assert 'translog_source_entries_total{source="relp"} 300' in app[METRICS].render()


async def test_no_answer_before_the_messages_are_durable(certs: Certs) -> None:
    async with running_log(relp_config(certs)) as app, connect(app, certs) as client:
        gate = stall(app)
        await client.opened()
        await client.send(syslogs(2, 5))
        await client.send(encode_frame(7, "bogus") + syslogs(8, 2, start=5))
        with pytest.raises(TimeoutError):  # not even the answer to bogus: order is kept
            await client.frames(1, timeout=0.5)
        assert app[LOG].size == 0 and app[RELP].window.used == 7
        gate.set()
        answers = await client.frames(8)
        assert [a.txnr for a in answers] == list(range(2, 10))
        assert answers[5].data == b"500 command not supported: bogus"
        assert all(a.data == b"200 OK" for i, a in enumerate(answers) if i != 5)
        assert app[LOG].size == 7


async def test_protocol_errors_close_only_that_connection(certs: Certs) -> None:
    async with running_log(relp_config(certs)) as app:
        async with connect(app, certs) as before_open:
            await before_open.send(syslogs(1, 1))
            assert await before_open.closed() == []
        await ended(app, "bad_frame")
        async with connect(app, certs) as refused:
            await refused.send(encode_frame(1, "open", b"relp_version=0\ncommands=eventlog"))
            [answer] = await refused.closed()
            assert answer.data == b"500 RELP open: the client does not offer the syslog command"
        await ended(app, "bad_open")
        async with connect(app, certs) as good, connect(app, certs) as bad:
            await good.opened()
            await bad.opened()
            # message 3 is kept and answered; the repeated TXNR 3 ends that connection
            await bad.send(syslogs(2, 2) + encode_frame(3, "syslog", b"again"))
            answers = await bad.closed()
            assert [(a.txnr, a.data) for a in answers] == [(2, b"200 OK"), (3, b"200 OK")]
            await good.send(syslogs(2, 3, start=10))
            assert [a.data for a in await good.frames(3)] == [b"200 OK"] * 3
        assert app[LOG].size == 5


async def test_a_message_over_the_limit_closes_the_connection(certs: Certs) -> None:
    async with running_log(relp_config(certs, max_message_bytes=200)) as app:
        async with connect(app, certs) as client:
            await client.opened()
            await client.send(syslogs(2, 1) + encode_frame(3, "syslog", b"x" * 201))
            assert [(a.txnr, a.data) for a in await client.closed()] == [(2, b"200 OK")]
        await ended(app, "bad_frame")
        assert app[LOG].size == 1


async def test_a_failed_submission_is_answered_500_and_the_session_closed(
    certs: Certs,
) -> None:
    async with running_log(relp_config(certs)) as app, connect(app, certs) as client:
        submissions = app[SUBMISSIONS]

        async def full(request: SubmitRequest) -> Any:
            raise StorageFullError("storage full: the LMDB map is full")

        await client.opened()
        submissions.durable = full  # type: ignore[method-assign]
        await client.send(syslogs(2, 2))
        frames = await client.closed()
        assert [(f.txnr, f.command) for f in frames] == [(2, "rsp"), (3, "rsp"), (0, "serverclose")]
        assert frames[0].data == b"500 not durable: storage full: the LMDB map is full"
        await ended(app, "not_durable")
        assert app[LOG].size == 0 and app[RELP].window.used == 0


async def test_an_idle_session_gets_the_serverclose_hint(certs: Certs) -> None:
    async with running_log(relp_config(certs, idle_timeout_ms=300)) as app:
        async with connect(app, certs) as client:
            await client.opened()
            assert await client.closed() == [RelpFrame(0, "serverclose", b"")]
        await ended(app, "idle")


async def test_the_listener_is_configured_beside_plain_syslog(certs: Certs) -> None:
    config = syslog_config(certs, relp_listen="127.0.0.1:0")
    async with running_log(config) as app, connect(app, certs) as client:
        assert app[SYSLOG].port != app[RELP].port
        await client.opened()
        await client.send(syslogs(2, 1))
        assert (await client.frames(1))[0].data == b"200 OK"
    with pytest.raises(ConfigError, match="relp_listen: expected HOST:PORT"):
        syslog_config(certs, relp_listen="nowhere")
    with pytest.raises(ConfigError, match="must differ"):
        syslog_config(certs, listen="127.0.0.1:6514", relp_listen="127.0.0.1:6514")


async def test_a_second_open_is_answered_and_ignored(certs: Certs) -> None:
    async with running_log(relp_config(certs)) as app, connect(app, certs) as client:
        await client.opened()
        await client.send(encode_frame(2, "open", b"relp_version=0\ncommands=syslog"))
        await client.send(syslogs(3, 1))
        answers = await client.frames(2)
        assert [(a.txnr, a.data) for a in answers] == [
            (2, b"200 connection already open - ignored"),
            (3, b"200 OK"),
        ]
        assert app[LOG].size == 1


async def test_on_shutdown_durable_messages_are_answered_then_serverclose(certs: Certs) -> None:
    async with running_log(relp_config(certs)) as app, connect(app, certs) as client:
        gate = stall(app)
        await client.opened()
        await client.send(syslogs(2, 3))
        async with asyncio.timeout(5):
            while app[RELP].window.used < 3:
                await asyncio.sleep(0.01)
        closing = asyncio.create_task(app[RELP].close())
        await asyncio.sleep(0.2)  # the listener has stopped reading, the messages are pending
        assert not closing.done()
        gate.set()
        frames = await client.closed()
        await closing
        assert [(f.txnr, f.command, f.data) for f in frames] == [
            (2, "rsp", b"200 OK"),
            (3, "rsp", b"200 OK"),
            (4, "rsp", b"200 OK"),
            (0, "serverclose", b""),
        ]
        assert app[LOG].size == 3
        await ended(app, "shutdown")
