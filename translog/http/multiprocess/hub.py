"""The log process of the multi-process server (``server.workers`` >= 1).

``translog serve`` with N workers runs N HTTP worker processes
(:mod:`translog.http.multiprocess.worker`)
and this process, which owns everything stateful: the LMDB environment, the :class:`Log`
(pool, sequencer, writer thread, publisher), the metrics registry, rate buckets and
idempotency state. It does not listen on TCP itself:

* **Fast path.** Each worker talks to it over a private ``socketpair`` carrying msgpack
  messages. ``["add", id, requests]`` holds every plain submission (``wait=durable``, no
  idempotency key, no rate limit) that one worker received in one event-loop tick, with the
  leaves (timestamp, salt, commitment) and leaf hashes already computed. :meth:`Hub.add`
  keeps timestamps non-decreasing (:meth:`Log.accept_prepared`), submits everything as one
  group, and once the group is durable in a signed tree answers ``[id, "ok", start, size,
  root, note, range proof, timestamps, leaf hashes]`` (the hashes only when a timestamp had to
  move, which changes them). One range proof per message, not one proof per entry: the
  worker derives each receipt's proof from it (:mod:`translog.formats.fastreceipt`). Errors answer
  ``[id, "err", class, reason, retry_after]``; they are counted here, as the single-process
  server counts them.
* **Everything else** (reads, metrics, health, promises, keyed or rate-limited submissions,
  any request the fast path would refuse) is proxied by the worker over HTTP to this process's
  ordinary app, on a Unix socket in a private directory, so every answer and error is the
  one the single-process server gives.

:func:`run_multiprocess` binds the port first (a bound, never-listening ``SO_REUSEPORT``
socket keeps it reserved, so ``--listen HOST:0`` picks one port for all workers), starts the
workers, and reports readiness once every worker accepts requests. SIGTERM or SIGINT: the
workers stop accepting and finish their requests (their submissions still reach this
process), then the log drains and publishes a final checkpoint. A worker that dies is
restarted; if this process dies, the workers notice the closed socket (and the kernel's
parent-death signal) and exit at once. Nothing is acknowledged before it is durable, so a
crash of either kind loses nothing that was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web

from translog.config import format_config
from translog.core.range_proof import prove_range
from translog.errors import ConfigError, PushbackError, StorageCorruptError, TranslogError
from translog.http import app as app_module
from translog.http.errors import status_for
from translog.http.keys import CONFIG, LOG, METRICS
from translog.http.submit import ProofNodes
from translog.log.sequencer import AcceptedRun, Appended

log = logging.getLogger("translog.serve")

READY_TIMEOUT = 30.0
"""Seconds a worker may take to start accepting requests."""
RESTART_DELAY = 1.0
"""Seconds before a worker that died is started again."""
_COUNTERS = frozenset({"translog_submissions_rejected_total"})
"""Counters a worker may increment in the log process's registry."""


def pack(obj: Any) -> bytes:
    """One IPC message."""
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def unpacker() -> msgpack.Unpacker:
    """A streaming reader of IPC messages (bounded: a message is at most one request body)."""
    return msgpack.Unpacker(raw=False, max_buffer_size=1 << 31)


async def read_message(reader: asyncio.StreamReader, stream: msgpack.Unpacker) -> Any:
    """The next message, or None at end of stream."""
    while True:
        for msg in stream:
            return msg
        data = await reader.read(1 << 20)
        if not data:
            return None
        stream.feed(data)


class Hub:
    """The log process's side of the fast path, shared by every worker connection."""

    def __init__(self, app: web.Application) -> None:
        self.log = app[LOG]
        self.metrics = app[METRICS]
        self.proof_nodes = ProofNodes(self.log.storage)

    async def serve(
        self, reader: asyncio.StreamReader, stream: msgpack.Unpacker, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one worker's messages until it closes the connection."""
        while True:
            msg = await read_message(reader, stream)
            if msg is None:
                return
            if msg[0] == "add":
                self.add(msg[1], msg[2], writer)
            elif msg[0] == "inc" and msg[1] in _COUNTERS:
                self.metrics.inc(msg[1], msg[2], **msg[3])

    def add(self, msgid: int, requests: list[list[Any]], writer: asyncio.StreamWriter) -> None:
        """Accept and submit one message's requests as one group; answer once it is durable."""
        log = self.log
        accepted = AcceptedRun()
        payloads: list[bytes | None] = []
        stamps: list[int] = []
        rebuilt = False
        try:
            for _started, _batch, ts, salts, leaves, bodies, hashes in requests:
                got, moved = log.accept_prepared(ts, salts, leaves, hashes)
                stamps.append(got.stamps[0])
                rebuilt |= moved
                accepted.extend(got)
                payloads += bodies
            fut = log.submit(payloads, committed=True, accepted=accepted)  # type: ignore[arg-type]
        except TranslogError as e:
            self._refuse(msgid, requests, writer, e)
            return
        done = partial(self._durable, msgid, requests, stamps, accepted, rebuilt, writer)
        fut.add_done_callback(done)

    def _durable(
        self,
        msgid: int,
        requests: list[list[Any]],
        stamps: list[int],
        accepted: AcceptedRun,
        rebuilt: bool,
        writer: asyncio.StreamWriter,
        fut: asyncio.Future[Sequence[Appended]],
    ) -> None:
        if fut.cancelled():
            self._refuse(msgid, requests, writer, PushbackError("the log is shutting down", 5.0))
            return
        error = fut.exception()
        if isinstance(error, TranslogError):
            self._refuse(msgid, requests, writer, error)
            return
        if error is not None:
            raise error
        appended = fut.result()
        start, signed = appended[0].index, appended[0].checkpoint
        end = start + len(appended)
        try:
            if appended[-1].index != end - 1:
                raise StorageCorruptError(f"a group was not sequenced contiguously at {start}")
            nodes = prove_range(start, end, signed.size, self.proof_nodes)
        except TranslogError as e:
            self._refuse(msgid, requests, writer, e)
            return
        now = time.monotonic()
        latency = self.metrics.histograms["translog_receipt_seconds"]
        for started, batch, *_ in requests:
            latency.observe(now - started)
            mode = "batch" if batch else "single"
            self.metrics.inc("translog_submissions_total", mode=mode, wait="durable")
        # The worker has the leaf hashes, unless a timestamp moved and they were made again.
        hashes = b"".join(accepted.hashes) if rebuilt else None
        answer = [msgid, "ok", start, signed.size, signed.root_hash, signed.note]
        _send(writer, [*answer, list(nodes), stamps, hashes])

    def _refuse(
        self,
        msgid: int,
        requests: list[list[Any]],
        writer: asyncio.StreamWriter,
        error: TranslogError,
    ) -> None:
        reason = status_for(error)[1]
        self.metrics.inc("translog_submissions_rejected_total", len(requests), reason=reason)
        retry = error.retry_after if isinstance(error, PushbackError) else 0.0
        _send(writer, [msgid, "err", type(error).__name__, str(error), retry])


def _send(writer: asyncio.StreamWriter, msg: list[Any]) -> None:
    if not writer.is_closing():
        writer.write(pack(msg))


class _Worker:
    """One worker process and its connection."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None


class Workers:
    """Starts, watches, restarts and stops the worker processes."""

    def __init__(self, app: web.Application, hello: dict[str, Any], count: int) -> None:
        self.hub = Hub(app)
        self.hello = hello
        self.workers = [_Worker(i) for i in range(count)]
        self.stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every worker; ConfigError (with the worker's reason) if one cannot serve."""
        await asyncio.gather(*(self._start(w) for w in self.workers))
        self._watchers = [asyncio.create_task(self._watch(w)) for w in self.workers]

    async def _start(self, w: _Worker) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            w.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "translog.http.multiprocess.worker",
                str(child.fileno()),
                str(w.number),
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        w.writer = writer
        stream = unpacker()
        writer.write(pack(self.hello))
        try:
            first = await asyncio.wait_for(read_message(reader, stream), READY_TIMEOUT)
        except TimeoutError:
            first = ["error", f"worker {w.number} did not start within {READY_TIMEOUT:g} s"]
        if first is None or first[0] != "ready":
            reason = first[1] if first else f"worker {w.number} exited while starting"
            with contextlib.suppress(ProcessLookupError):
                w.proc.kill()
            await w.proc.wait()
            raise ConfigError(str(reason))
        w.task = asyncio.create_task(self.hub.serve(reader, stream, writer))

    async def _watch(self, w: _Worker) -> None:
        while True:
            assert w.proc is not None
            code = await w.proc.wait()
            if self.stopping:
                return
            log.error("worker %d exited with %s; starting it again", w.number, code)
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            try:
                await self._start(w)
            except (ConfigError, OSError) as e:
                log.critical("couldn't restart worker %d: %s", w.number, e)
                return

    async def stop(self) -> None:
        """SIGTERM every worker and wait until each finished its requests and exited."""
        self.stopping = True
        for task in self._watchers:
            task.cancel()
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), app_module.SHUTDOWN_TIMEOUT + 5)
            except TimeoutError:
                log.error("a worker did not stop in time; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for w in self.workers:
            if w.task is not None:
                w.task.cancel()
            if w.writer is not None:
                w.writer.close()


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (never listen) an ``SO_REUSEPORT`` socket, so every worker binds the same port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"couldn't listen on {host}:{port}: {e.strerror or e}") from e
    return sock


def _lmdb_path(app: web.Application) -> str | None:
    """The directory of the log's LMDB environment (None for another storage backend)."""
    from translog.storage.lmdb import LMDBStorage

    storage = app[LOG].storage
    return str(storage.path) if isinstance(storage, LMDBStorage) else None


async def run_multiprocess(
    app: web.Application,
    host: str,
    port: int,
    *,
    workers: int,
    tokens_file: Path,
    tls: tuple[Path, Path] | None = None,
    ready_file: Path | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` through ``workers`` HTTP worker processes until SIGTERM or SIGINT.

    ``tls`` (certificate and key files) makes every worker serve HTTPS.
    """
    reserved = reserve_port(host, port)
    received = app_module.install_signal_handlers()
    bound = int(reserved.getsockname()[1])
    private = Path(tempfile.mkdtemp(prefix="translog-"))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=app_module.SHUTDOWN_TIMEOUT)
    pool: Workers | None = None
    try:
        await runner.setup()
        await web.UnixSite(runner, str(private / "log.sock")).start()
        hello = {
            "config": format_config(app[CONFIG]),
            "tokens": str(tokens_file),
            "host": host,
            "port": bound,
            "proxy": str(private / "log.sock"),
            "tls": [str(p) for p in tls] if tls else None,
            # Workers read full tiles and entry bundles from here themselves (read-only).
            "lmdb": _lmdb_path(app),
        }
        pool = Workers(app, hello, workers)
        await pool.start()
        if on_ready is not None:
            on_ready(bound)
        if ready_file is not None:
            app_module.write_ready_file(ready_file, bound)
        log.info("%s: draining accepted entries, then a final checkpoint", (await received).name)
    finally:
        app_module.remove_signal_handlers()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        if pool is not None:
            await pool.stop()
        reserved.close()
        await runner.cleanup()
        shutil.rmtree(private, ignore_errors=True)
    published = app[LOG].published
    log.info("stopped; final checkpoint size %s", "none" if published is None else published.size)


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)
