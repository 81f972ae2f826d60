"""The RELP-over-TLS listener: each syslog message acknowledged once it is durable.

RELP (librelp's ``doc/relp.md``; rsyslog's ``omrelp``) carries syslog messages as commands
that the server answers one by one, in the order they came. A sender keeps every message
until its ``200 OK`` arrives and resends the unanswered ones on a new session, so a crash
loses nothing the sender still holds. It runs beside the plain syslog listener
(:mod:`translog.ingest.syslog`, whose TLS identity, event mapping, windows, group commit and
pushback it shares) on ``syslog.relp_listen``. Per connection:

* ``open`` is answered with the offers both speak (:func:`open_answer`); a ``syslog``
  before it, a TXNR that does not increase, or a broken frame closes the connection with
  the reason logged.
* The ``syslog`` commands of one read are one group (:meth:`SyslogListener.submit`). Their
  ``rsp 200 OK`` is written only after :meth:`Submissions.durable` returned for the group,
  and answers go out in command order (a responder task awaits the groups in turn).
* A submission refused for another reason than pushback (the log stopped being writable,
  the disk is full) is answered ``500`` with the reason, and the connection then closes:
  the sender keeps those messages and resends them.
* ``close`` is answered once every earlier command is; the connection then ends. On
  shutdown or idle timeout the listener stops reading, answers what became durable, sends
  the ``serverclose`` hint and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from translog import __version__
from translog.errors import RelpFrameError, RelpFrameTooLargeError, TranslogError
from translog.formats.relp import (
    SERVER_CLOSE,
    RelpFrame,
    RelpFramer,
    check_txnr,
    encode_frame,
    open_answer,
    parse_offers,
    response,
)
from translog.ingest.syslog import CLOSE_TIMEOUT_S, SyslogListener, Window

OPEN_OVERHEAD = 4096
"""Frame data allowed beyond ``syslog.max_message_bytes`` (an ``open`` carries offers)."""
MAX_OWED = 1024
"""Answers a connection may owe before it stops reading (a group of messages is one; a
client that sends commands and never reads their answers is held here)."""

_log = logging.getLogger("translog.relp")


@dataclass
class Answer:
    """Answers owed, in order: for ``txnrs``, once ``task`` is done (None: now, ``code``)."""

    txnrs: list[int]
    task: asyncio.Task[str | None] | None = None
    code: int = 200
    """200 OK, 500 error; 0: an empty ``rsp`` (the answer to ``close``)."""
    text: str = "OK"
    extra: bytes = b""
    """After the status line: the offers answering an ``open``."""
    last: bool = False
    """The connection ends after this answer (``close``, or a refused ``open``)."""


@dataclass
class Session:
    """One connection's RELP state."""

    opened: bool = False
    txnr: int = 0
    """The last transaction number read (0: none yet)."""
    ending: str = ""
    """How the responder ended the connection, if it did."""
    answers: asyncio.Queue[Answer | None] = field(default_factory=lambda: asyncio.Queue(MAX_OWED))


class RelpListener(SyslogListener):
    """RELP over TLS over one log's :class:`Submissions`."""

    NAME = "relp"
    SOURCE = "relp"
    PROTOCOL = "relp-tls"
    SETTING = "syslog.relp_listen"

    def refused(self, writer: asyncio.StreamWriter) -> None:
        """A failed group is answered 500 by the responder, which then closes."""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject, address, who = self.peer(writer)
        conn = Window(self.config.max_inflight_per_connection)
        framer = RelpFramer(self.config.max_message_bytes + OPEN_OVERHEAD)
        session = Session()
        responder = asyncio.create_task(self._respond(session, writer, who))
        limit = self.config.max_message_bytes
        ending = "eof"

        async def messages(run: list[RelpFrame], received_ms: int) -> bool:
            data = [m.data for m in run]
            task = await self.admit(data, received_ms, subject, address, conn, writer, who)
            return await self._owe(session, responder, Answer([m.txnr for m in run], task))

        async def handle(frames: list[RelpFrame], received_ms: int) -> bool:
            """The frames of one read; consecutive messages are submitted together. False:
            the session is over (``close``, a refused ``open``, the responder gone). On a
            protocol error, the messages before it are still submitted (and answered)."""
            run: list[RelpFrame] = []
            try:
                for frame in frames:
                    check_txnr(session.txnr, frame.txnr)
                    session.txnr = frame.txnr
                    if frame.command == "syslog" and session.opened:
                        if len(frame.data) > limit:
                            raise RelpFrameTooLargeError(
                                f"RELP: syslog command {frame.txnr}: a message of "
                                f"{len(frame.data)} bytes exceeds syslog.max_message_bytes "
                                f"({limit})"
                            )
                        run.append(frame)
                        if len(run) >= self.group:
                            run, group = [], run
                            if not await messages(group, received_ms):
                                return False
                        continue
                    if run:
                        run, group = [], run
                        if not await messages(group, received_ms):
                            return False
                    answer = self._command(frame, session, who)
                    if not await self._owe(session, responder, answer) or answer.last:
                        return False
            finally:
                if run:
                    await messages(run, received_ms)
            return True

        try:
            async with contextlib.aclosing(self.reads(reader, framer)) as reads:
                async for frames, received_ms in reads:
                    if not await handle(frames, received_ms):
                        ending = "close"
                        break
        except (TranslogError, OSError, EOFError, asyncio.CancelledError) as e:
            # close() cancels: answer what becomes durable, hint, close (not re-raised)
            ending = self.ending(e, who)
        await self._finish(session, responder, writer, hint=ending in ("idle", "shutdown"))
        self.ended(session.ending or ending)

    async def _owe(self, session: Session, responder: asyncio.Task[None], answer: Answer) -> bool:
        """Queue ``answer`` for the responder; while MAX_OWED are queued, wait (no read).
        False if the responder has ended the connection."""
        if responder.done():
            return False
        if not session.answers.full():
            session.answers.put_nowait(answer)
            return True
        put = asyncio.ensure_future(session.answers.put(answer))
        await asyncio.wait({put, responder}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            return False
        return True

    def _command(self, frame: RelpFrame, session: Session, who: str) -> Answer:
        """The answer to a command other than a ``syslog`` in an open session."""
        txnr = [frame.txnr]
        if frame.command == "open":
            if session.opened:  # as librelp: a repeated open is answered, and ignored
                return Answer(txnr, text="connection already open - ignored")
            try:
                extra = open_answer(parse_offers(frame.data), __version__)
            except RelpFrameError as e:
                _log.warning("relp: refusing the session from %s: %s", who, e)
                session.ending = "bad_open"
                return Answer(txnr, code=500, text=str(e), last=True)
            session.opened = True
            return Answer(txnr, extra=extra)
        if frame.command == "close":
            return Answer(txnr, code=0, last=True)
        if frame.command == "syslog":
            raise RelpFrameError(f"RELP: syslog command {frame.txnr} before open")
        return Answer(txnr, code=500, text=f"command not supported: {frame.command}")

    async def _respond(self, session: Session, writer: asyncio.StreamWriter, who: str) -> None:
        """Write the answers in command order; a group's once it is durable (or failed)."""
        answer: Answer | None = None
        try:
            while (answer := await session.answers.get()) is not None:
                code, text = answer.code, answer.text
                if answer.task is not None:
                    reason = await answer.task
                    if reason is not None:
                        code, text = 500, f"not durable: {reason}"
                if code == 0:
                    data = b"".join(encode_frame(t, "rsp") for t in answer.txnrs)
                else:
                    data = b"".join(response(t, code, text, answer.extra) for t in answer.txnrs)
                writer.write(data)
                await writer.drain()
                if answer.last:
                    return
                if answer.task is not None and code != 200:  # the sender resends the rest
                    session.ending = "not_durable"
                    writer.write(SERVER_CLOSE)
                    writer.transport.close()
                    return
        except (OSError, RuntimeError) as e:  # the peer went away: unanswered, so resent
            writer.transport.abort()
            if answer is not None and answer.last and answer.code == 0:
                return  # a client may close without reading the answer to its close
            _log.info("relp: couldn't answer %s: %s", who, e)
            session.ending = session.ending or "error"

    async def _finish(
        self,
        session: Session,
        responder: asyncio.Task[None],
        writer: asyncio.StreamWriter,
        *,
        hint: bool,
    ) -> None:
        """Let the responder write every answer owed (a bounded wait), then hint the
        client that the server closes (idle, shutdown)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if not responder.done():
                    await session.answers.put(None)
                await responder
        except TimeoutError:
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder
        if hint and not writer.transport.is_closing():
            writer.write(SERVER_CLOSE)
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                await asyncio.wait_for(writer.drain(), 1.0)
