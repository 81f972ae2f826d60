"""The syslog-over-TLS listener (RFC 5425): TLS, octet-counted frames, durable entries.

One asyncio TLS server in the process that owns the log (``translog serve`` starts it beside
the HTTP server, :func:`translog.http.app.make_app`). Per connection:

* **Framing and parsing** are :mod:`translog.formats.syslog`. A frame that is malformed or
  larger than ``syslog.max_message_bytes`` closes that connection, with the reason logged;
  nothing else is affected. Message bodies are never refused: what RFC 5424 cannot read is
  read as RFC 3164, and the original bytes are always kept.
* **Identity**: with ``syslog.client_ca`` the TLS handshake requires a client certificate that
  CA issued; its subject (RFC 4514) goes into every event and names the connection's rate
  bucket: a :class:`TokenInfo` ``syslog:<subject>`` (``syslog:anonymous`` without one) with
  ``syslog.rate_per_s``.
* **Group commit**: the messages of one read go to :meth:`Submissions.durable` together.
* **Backpressure**: at most ``max_inflight_per_connection`` messages of a connection (and
  ``max_inflight`` of all) are read and not yet durable. At the bound the connection stops
  reading, so TCP's window fills and the sender blocks. A pushback from the pool (or the rate
  bucket) is waited out and the same messages retried; nothing is dropped, nothing buffered
  beyond the bounds.

Plain syslog has no application acknowledgement: docs/EVENTS.md says what a crash can lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TypeVar

from cryptography import x509

from translog.config import SyslogSection
from translog.errors import ConfigError, PushbackError, TranslogError
from translog.formats.batch import Batch
from translog.formats.event_builder import encode_event
from translog.formats.framing import StreamFramer
from translog.formats.syslog import OctetFramer, parse_message, syslog_event
from translog.keyfile import read_private_file
from translog.log.requests import SubmitRequest
from translog.log.submission import Submissions
from translog.log.tokens import TokenInfo

SOURCE = "syslog"
"""The ``source`` label of ``translog_source_entries_total``."""
READ_SIZE = 64 * 1024
RETRY_MAX_S = 1.0
"""Longest wait between two tries of messages the pool pushed back."""
CLOSE_TIMEOUT_S = 10.0

T = TypeVar("T")

_log = logging.getLogger("translog.syslog")


def server_context(
    cert: Path, key: Path, client_ca: Path | None, *, setting: str = "syslog"
) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM files; with ``client_ca``, client certificates
    are required and verified against it. The key file must be mode 0600 (``setting``: the
    config section errors name; ``translog serve``'s HTTPS uses this too)."""
    read_private_file(key)  # refuses a key file that group or others can read
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"{setting}.tls_cert/tls_key: couldn't load {cert} and {key}: {e}") from e
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"{setting}.client_ca: couldn't load {client_ca}: {e}") from e
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_subject(ssl_object: ssl.SSLObject | None) -> str | None:
    """The RFC 4514 subject of the verified client certificate, or None without one."""
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


class Window:
    """A bound on messages in flight: :meth:`acquire` waits until ``n`` more fit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used + n <= self.limit)
            self.used += n

    async def release(self, n: int) -> None:
        async with self._changed:
            self.used -= n
            self._changed.notify_all()


class SyslogListener:
    """The listener over one log's :class:`Submissions`."""

    NAME = "syslog"
    """Names its metrics (``translog_<NAME>_...``) and log lines."""
    SOURCE = SOURCE
    PROTOCOL = "syslog-tls"
    """``details.transport.protocol`` of its events."""
    SETTING = "syslog.listen"

    def __init__(
        self, submissions: Submissions, config: SyslogSection, context: ssl.SSLContext
    ) -> None:
        self.submissions = submissions
        self.config = config
        self.context = context
        self.window = Window(config.max_inflight)
        self.group = max(1, min(config.max_inflight_per_connection, self._pool() // 4))
        """Most messages in one durable() call: a quarter of the pool at most, so a group
        always fits once the pool drains (a larger one would be pushed back forever)."""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._submits: set[asyncio.Task[str | None]] = set()
        self._tokens: dict[str, TokenInfo] = {}
        self._closing = False
        metrics = submissions.metrics
        metrics.counter(
            f"translog_{self.NAME}_connections_total", f"{self.NAME} connections, by how they ended"
        )
        metrics.gauge(
            f"translog_{self.NAME}_inflight",
            f"{self.NAME} messages read, not yet durable",
            self._inflight,
        )

    def _pool(self) -> int:
        return self.submissions.config.sequencer.max_pending

    def _inflight(self) -> float:
        return float(self.window.used)

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; the bound port."""
        try:
            self._server = await asyncio.start_server(
                self._accept, host, port, ssl=self.context, limit=READ_SIZE
            )
        except OSError as e:
            raise ConfigError(f"{self.SETTING}: couldn't listen on {host}:{port}: {e}") from e
        self.port = int(self._server.sockets[0].getsockname()[1])
        _log.info("%s over TLS on %s:%d", self.NAME, host, self.port)
        return self.port

    async def close(self) -> None:
        """Stop accepting, close every connection, and let submissions in flight finish."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._submits:
            await asyncio.wait(list(self._submits), timeout=CLOSE_TIMEOUT_S)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT_S)

    def token(self, subject: str | None) -> TokenInfo:
        """The rate-bucket identity of a client."""
        name = f"syslog:{subject or 'anonymous'}"
        info = self._tokens.get(name)
        if info is None:
            info = TokenInfo(name, "", ("submit",), 0, rate_per_s=float(self.config.rate_per_s))
            if len(self._tokens) < 10_000:
                self._tokens[name] = info
        return info

    # -- one connection ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closing or len(self._connections) >= self.config.max_connections:
            _log.warning("%s: refusing a connection: syslog.max_connections reached", self.NAME)
            self.ended("refused")
            writer.transport.abort()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject, address, who = self.peer(writer)
        conn = Window(self.config.max_inflight_per_connection)
        ending = "eof"
        try:
            async with contextlib.aclosing(
                self.reads(reader, OctetFramer(self.config.max_message_bytes))
            ) as reads:
                async for frames, received_ms in reads:
                    step = self.group
                    for i in range(0, len(frames), step):
                        group = frames[i : i + step]
                        await self.admit(group, received_ms, subject, address, conn, writer, who)
        except (TranslogError, OSError, EOFError, asyncio.CancelledError) as e:
            # CancelledError is close(): not re-raised, asyncio's stream callback would log
            # the cancelled task as an error
            ending = self.ending(e, who)
        self.ended(ending)

    # -- shared with the RELP listener ---------------------------------------------------

    def peer(self, writer: asyncio.StreamWriter) -> tuple[str | None, tuple[str, int] | None, str]:
        """The client certificate's subject, the peer address, and how log lines name it."""
        peer = writer.get_extra_info("peername")
        address = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        subject = peer_subject(writer.get_extra_info("ssl_object"))
        return subject, address, f"{address[0] if address else '?'} ({subject or 'no certificate'})"

    def payloads(
        self,
        messages: list[bytes],
        received_ms: int,
        subject: str | None,
        address: tuple[str, int] | None,
    ) -> list[bytes]:
        """The events of ``messages`` (docs/EVENTS.md), encoded."""
        return [
            encode_event(
                syslog_event(
                    parse_message(raw, received_ms),
                    event_id=str(uuid.uuid4()),
                    tenant=self.config.tenant,
                    received_ms=received_ms,
                    client=subject,
                    peer=address,
                    protocol=self.PROTOCOL,
                )
            )
            for raw in messages
        ]

    async def reads(
        self, reader: asyncio.StreamReader, framer: StreamFramer[T]
    ) -> AsyncGenerator[tuple[list[T], int], None]:
        """The frames of each read, with when it was read (ms since the epoch). Ends at end
        of stream (a partial frame raises); a broken frame raises once the frames before it
        were handled; TimeoutError after ``idle_timeout_ms`` without a byte."""
        idle = self.config.idle_timeout_ms / 1000 or None
        while True:
            data = await asyncio.wait_for(reader.read(READ_SIZE), idle)
            if not data:
                framer.end()
                return
            yield framer.feed(data), time.time_ns() // 1_000_000
            framer.check()

    def ending(self, e: BaseException, who: str) -> str:
        """How a connection that ``e`` ended is counted, with the reason logged."""
        if isinstance(e, TranslogError):  # framing: this connection only
            _log.warning("%s: closing the connection from %s: %s", self.NAME, who, e)
            return "bad_frame"
        if isinstance(e, TimeoutError):
            _log.info("%s: closing the idle connection from %s", self.NAME, who)
            return "idle"
        if isinstance(e, asyncio.CancelledError):
            return "shutdown"
        _log.info("%s: connection from %s failed: %s", self.NAME, who, e)
        return "error"

    def ended(self, how: str) -> None:
        """Count a connection that ended ``how``."""
        self.submissions.metrics.inc(f"translog_{self.NAME}_connections_total", ended=how)

    async def admit(
        self,
        messages: list[bytes],
        received_ms: int,
        subject: str | None,
        address: tuple[str, int] | None,
        conn: Window,
        writer: asyncio.StreamWriter,
        who: str,
    ) -> asyncio.Task[str | None]:
        """Wait for room in the connection's window and the listener's (no read meanwhile:
        the backpressure), then :meth:`submit` the events of ``messages``."""
        await conn.acquire(len(messages))
        await self.window.acquire(len(messages))
        payloads = self.payloads(messages, received_ms, subject, address)
        return self.submit(payloads, subject, conn, writer, who)

    def submit(
        self,
        payloads: list[bytes],
        subject: str | None,
        conn: Window,
        writer: asyncio.StreamWriter,
        who: str,
    ) -> asyncio.Task[str | None]:
        """Submit ``payloads`` in the background, until durable; the task returns None
        once they are, or why they are not (the connection is then aborted, unless the
        caller answers for itself: the RELP listener)."""
        labels = [f"{self.NAME} message {i + 1}" for i in range(len(payloads))]
        request = SubmitRequest(
            self.token(subject),
            Batch(payloads, None, labels),
            batch=True,
            started=time.monotonic(),
            source=self.SOURCE,
        )
        task = asyncio.create_task(self._durable(request, conn, writer, who))
        self._submits.add(task)
        task.add_done_callback(self._submits.discard)
        return task

    def refused(self, writer: asyncio.StreamWriter) -> None:
        """What a submission that failed does to its connection: plain syslog cannot say
        which messages failed, so it is aborted."""
        writer.transport.abort()

    async def _durable(
        self, request: SubmitRequest, conn: Window, writer: asyncio.StreamWriter, who: str
    ) -> str | None:
        """Submit until durable: pushback is waited out, another refusal ends the connection."""
        n = len(request.entries)
        try:
            while True:
                try:
                    await self.submissions.durable(request)
                    return None
                except PushbackError as e:
                    if self._closing:
                        _log.warning(
                            "%s: shutting down; %d messages from %s dropped", self.NAME, n, who
                        )
                        return "shutting down"
                    await asyncio.sleep(min(max(e.retry_after, 0.01), RETRY_MAX_S))
                except TranslogError as e:
                    _log.error(
                        "%s: closing the connection from %s: %d messages: %s", self.NAME, who, n, e
                    )
                    self.refused(writer)
                    return str(e)
        finally:
            await conn.release(n)
            await self.window.release(n)
