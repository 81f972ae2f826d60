"""The log process of the multi-process server (``server.workers`` >= 1).

``translog serve`` with N workers runs N HTTP worker processes
(:mod:`translog.http.multiprocess.worker`)
and this process, which owns everything stateful: the LMDB environment, the :class:`Log`
(pool, sequencer, writer thread, publisher), the metrics registry, and the submission
state (rate buckets, idempotency). It does not listen on TCP itself:

Each worker talks to it over a private ``socketpair`` carrying msgpack messages, and every
submission, whichever worker received it, is answered by this process's one
:class:`~translog.log.submission.Submissions`:

* ``["add", id, requests]`` (the fast path) holds every plain submission (``wait=durable``,
  no idempotency key, no rate limit) that one worker received in one event-loop tick, with
  the leaves (timestamp, salt, commitment) and leaf hashes already computed.
  :meth:`Submissions.add_prepared` keeps timestamps non-decreasing, submits everything as one
  group, and once the group is durable in a signed tree this answers ``[id, "ok", start,
  size, root, note, range proof, timestamps, leaf hashes]`` (the hashes only when a timestamp
  had to move, which changes them). The worker derives each receipt from it
  (:mod:`translog.http.multiprocess.fastpath`).
* ``["submit", id, request]`` holds any other submission, parsed and authenticated by the
  worker (:func:`pack_request`); it is answered ``[id, "ok", status, body]`` by
  :meth:`Submissions.submit`, exactly as the single-process server answers it.
* ``["durable", id, request]`` holds the entries of an ingest request (OTLP, Kubernetes audit,
  JSON lines) that the worker parsed and mapped; :meth:`Submissions.durable` answers
  ``[id, "ok", indexes, duplicate flags]`` once they are durable.
* ``["prepared", id, [token name, request key, source, prepared request]]`` holds an ingest
  request under one request key (OTLP) whose leaves the worker built, as on the fast path
  (a token without a rate limit, no object store); :meth:`Submissions.durable_prepared`
  answers ``[id, "ok", first index, count, duplicate]`` once it is durable (or at once, for
  a request its key already names).
* Errors answer ``[id, "err", kind, reason, retry_after]``
  (:func:`translog.http.errors.error_fields`). The worker counts the refusal (``["inc",
  ...]``), as the single-process handler does.
* ``["published", checkpoint]`` goes to every worker as each checkpoint is published (and the
  hello carries the current one): workers answer the CT API from their read-only view of the
  LMDB environment at that size (:mod:`translog.http.multiprocess.worker`). It is sent before
  anyone waiting for that checkpoint is answered, so a worker learns it before its receipts.
* **Everything else** (reads, metrics, health) is proxied by the worker over HTTP to this
  process's ordinary app, on a Unix socket in a private directory, so every answer and error
  is the one the single-process server gives.

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
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgpack
from aiohttp import web

from translog.config import format_config
from translog.core.checkpoint import Checkpoint
from translog.errors import ConfigError, TranslogError
from translog.formats.batch import Batch
from translog.http import app as app_module
from translog.http.errors import error_fields
from translog.http.keys import CONFIG, LOG, METRICS, SUBMISSIONS
from translog.log.base import AppendedRun, SignedCheckpoint
from translog.log.requests import DuplicateRequest, PreparedRun, SubmitRequest
from translog.log.tokens import TokenInfo

log = logging.getLogger("translog.serve")

READY_TIMEOUT = 30.0
"""Seconds a worker may take to start accepting requests."""
RESTART_DELAY = 1.0
"""Seconds before a worker that died is started again."""
_COUNTERS = frozenset({"translog_submissions_rejected_total"})
PROXIED = "translog_proxied_requests_total"
"""Requests the workers passed to this process's app, by route (what they did not answer)."""
"""Counters a worker may increment in the log process's registry."""


_PACKERS = threading.local()
_KEEP_PACKER_BYTES = 8 << 20
"""A thread keeps its packer's buffer after messages up to this size (a larger one, rare,
is not kept)."""


def pack(obj: Any) -> bytes:
    """One IPC message.

    Packed by one ``msgpack.Packer`` per thread, kept between messages: ``msgpack.packb``
    makes a new packer, whose buffer grows by reallocation for every large message (about
    1.3 µs per entry of a 1,000-entry message, against 0.15 µs with the buffer kept;
    benchmarks/RESULTS.md, OTLP).
    """
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(obj)
    if len(data) > _KEEP_PACKER_BYTES:
        _PACKERS.packer = None
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
    """The log process's side of the worker connections: a transport to :class:`Submissions`."""

    def __init__(self, app: web.Application) -> None:
        self.submissions = app[SUBMISSIONS]
        self.metrics = app[METRICS]
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(
        self, reader: asyncio.StreamReader, stream: msgpack.Unpacker, writer: asyncio.StreamWriter
    ) -> None:
        """Answer one worker's messages until it closes the connection."""
        while True:
            msg = await read_message(reader, stream)
            if msg is None:
                return
            if msg[0] == "add":
                self.submissions.add_prepared(msg[2], partial(self._prepared, msg[1], writer))
            elif msg[0] in ("submit", "durable", "prepared"):
                task = asyncio.create_task(self._submit(msg[0], msg[1], msg[2], writer))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif msg[0] == "inc" and msg[1] in _COUNTERS:
                self.metrics.inc(msg[1], msg[2], **msg[3])

    def _prepared(
        self, msgid: int, writer: asyncio.StreamWriter, run: PreparedRun | TranslogError
    ) -> None:
        if isinstance(run, TranslogError):
            _send(writer, [msgid, "err", *error_fields(run)])
        else:
            _send(writer, [msgid, "ok", *run])

    async def _submit(
        self, kind: str, msgid: int, fields: list[Any], writer: asyncio.StreamWriter
    ) -> None:
        """A submission the fast path does not cover, as the single-process server does it
        (``submit``), or an ingest request a worker mapped (``durable``, ``prepared``)."""
        try:
            if kind == "prepared":
                run = await self.submissions.durable_prepared(*fields)
                duplicate = isinstance(run, DuplicateRequest)
                _send(writer, [msgid, "ok", run.first, len(run), duplicate])
                return
            request = unpack_request(fields)
            if kind == "submit":
                answer = await self.submissions.submit(request)
                reply = [msgid, "ok", answer.status, answer.body]
            else:
                landed = await self.submissions.durable(request)
                if isinstance(landed, AppendedRun):  # appended whole: no duplicate in it
                    first, n = landed.first, len(landed)
                    reply = [msgid, "ok", list(range(first, first + n)), [False] * n]
                else:
                    reply = [msgid, "ok", [a.index for a in landed], [a.duplicate for a in landed]]
        except TranslogError as e:
            reply = [msgid, "err", *error_fields(e)]
        _send(writer, reply)


def _send(writer: asyncio.StreamWriter, msg: list[Any]) -> None:
    if not writer.is_closing():
        writer.write(pack(msg))


def pack_published(signed: SignedCheckpoint | None) -> list[Any] | None:
    """A published checkpoint as message fields (None before the first publish)."""
    if signed is None:
        return None
    cp = signed.checkpoint
    ts, note, sth = signed.timestamp_ms, signed.note, signed.tree_head_signature
    return [cp.origin, cp.size, cp.root_hash, list(cp.extensions), ts, note, sth]


def unpack_published(fields: list[Any] | None) -> SignedCheckpoint | None:
    """The checkpoint of :func:`pack_published` fields."""
    if fields is None:
        return None
    origin, size, root, extensions, ts, note, sth = fields
    return SignedCheckpoint(Checkpoint(origin, size, root, tuple(extensions)), ts, note, sth)


def pack_request(request: SubmitRequest) -> list[Any]:
    """A :class:`SubmitRequest` as the fields of a ``submit`` message."""
    t, e = request.token, request.entries
    token = [t.name, t.hash, t.scopes, t.created_ms, t.revoked_ms, t.rate_per_s, t.tenants]
    entries = [e.payloads, e.keys, e.labels]
    return [
        token,
        entries,
        request.wait,
        request.kind,
        request.batch,
        request.started,
        request.source,
        request.request_key,
    ]


def unpack_request(fields: list[Any]) -> SubmitRequest:
    """The :class:`SubmitRequest` of a ``submit`` message's fields."""
    token, (payloads, keys, labels), wait, kind, batch, started, source, request_key = fields
    name, digest, scopes, created, revoked, rate, tenants = token
    info = TokenInfo(name, digest, tuple(scopes), created, revoked, rate, tuple(tenants))
    entries = Batch(payloads, keys, labels)
    return SubmitRequest(info, entries, wait, kind, batch, started, source, request_key)


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
        self._log = app[LOG]
        self._log.on_publish.append(self._published)

    def _published(self, signed: SignedCheckpoint) -> None:
        """Tell every worker about a checkpoint just published."""
        msg = ["published", pack_published(signed)]
        for w in self.workers:
            if w.writer is not None:
                _send(w.writer, msg)

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
                self.hello["event_loop"],
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        w.writer = writer
        stream = unpacker()
        writer.write(pack({**self.hello, "published": pack_published(self._log.published)}))
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
        self._log.on_publish.remove(self._published)
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
    count_proxied(app)
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
            "event_loop": app[CONFIG].server.event_loop,
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


def count_proxied(app: web.Application) -> None:
    """Count every request this process's app answers (the workers' proxied ones) in
    ``translog_proxied_requests_total``, by route pattern."""
    metrics = app[METRICS]
    metrics.counter(PROXIED, "requests the workers passed to the log process, by route")

    async def count(request: web.Request, response: web.StreamResponse) -> None:
        resource = request.match_info.route.resource
        metrics.inc(PROXIED, route="unmatched" if resource is None else resource.canonical)

    app.on_response_prepare.append(count)


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)
