"""A worker's submitter: the fast path to the log process, and the way to its ``Submissions``.

The worker answers ``POST /add`` and ``POST /add-batch`` with the same handlers as the
single-process server (:mod:`translog.http.submit`); they parse the request and call
:meth:`FastPath.submit`.

* A plain submission (``wait=durable``, no idempotency key, a token without a rate limit)
  takes the **fast path**: the worker checks the limits (:func:`check_entries`, the log's own
  check), draws the salts and computes the commitments (:class:`Prepared`), and hands the
  entries to the log process, coalescing every such request of one event-loop tick into one
  ``add`` message. The answer (one range proof for the whole message, once the entries are
  durable in a signed tree) becomes each request's receipt here, encoded by
  :mod:`translog.formats.receipt_json` and checked against the checkpoint's root first.
* **Every other submission** goes to the log process as a ``submit`` message and is answered
  by its :class:`~translog.log.submission.Submissions`, as the single-process server answers
  it: one submission API, whichever process received the request. With an object store
  (``[objstore] url``) that is every submission: a receipt then carries the store's
  checkpoint, which the log process waits for (``Log.fenced``), never the batch's.

Errors come back as ``[kind, reason, retry_after]`` and are rebuilt by the error table
(:func:`translog.http.errors.error_from`), so they get the statuses and headers they get in
the single-process server.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Sequence
from typing import Any

import msgpack

from translog.config import Config
from translog.core.leaf import KIND_COMMITTED, SALT_SIZE, inline_leaf
from translog.core.merkle import HASH_SIZE
from translog.formats.receipt_json import (
    RunHashes,
    batch_receipt_json,
    quote_checkpoint,
    single_receipt_json,
)
from translog.http.errors import error_from
from translog.http.multiprocess.hub import pack, pack_request, read_message, unpack_published
from translog.log.base import SignedCheckpoint
from translog.log.requests import (
    Answer,
    Landed,
    Placed,
    RequestRun,
    SubmitRequest,
    check_entries,
)
from translog.log.sequencer import now_ms

log = logging.getLogger("translog.worker")


class Run:
    """One answer of the log process: consecutive entries, their checkpoint and range proof."""

    __slots__ = ("_hashes", "_quoted", "leaf_hashes", "note", "proof", "root", "size", "start")

    def __init__(
        self, start: int, size: int, root: bytes, note: bytes, proof: list[bytes], hashes: bytes
    ) -> None:
        self.start, self.size, self.root, self.note = start, size, root, note
        self.proof, self.leaf_hashes = proof, hashes
        self._hashes: RunHashes | None = None
        self._quoted: bytes | None = None

    def hashes(self) -> RunHashes:
        """Every subtree hash of the run, checked against the checkpoint root (made once)."""
        if self._hashes is None:
            end = self.start + len(self.leaf_hashes) // HASH_SIZE
            self._hashes = RunHashes(
                self.start, end, self.size, self.leaf_hashes, self.proof, self.root
            )
        return self._hashes

    def range_proof(self, offset: int, count: int) -> list[bytes]:
        """The range proof of ``count`` entries from ``offset`` in the run."""
        if offset == 0 and count * HASH_SIZE == len(self.leaf_hashes):
            return self.proof  # the whole run: the log process's own proof
        return self.hashes().range_proof(self.start + offset, self.start + offset + count)

    def quoted_checkpoint(self) -> bytes:
        """The checkpoint note as a JSON string (made once)."""
        if self._quoted is None:
            self._quoted = quote_checkpoint(self.note)
        return self._quoted


_Placed = tuple[Run, int, int]
"""A request's share of a run: the run, the offset of its first entry, its final timestamp."""


class Prepared:
    """One request's leaves, built in the worker; the log process has the final word on time."""

    __slots__ = ("bodies", "hashes", "leaves", "salts", "timestamp_ms")

    def __init__(self, payloads: list[bytes], committed: list[bool]) -> None:
        ts = now_ms()
        self.timestamp_ms = ts
        header = inline_leaf(ts, b"")
        committed_header = header[:-1] + bytes([KIND_COMMITTED])
        sha = hashlib.sha256
        self.salts: list[bytes | None]
        self.bodies: list[bytes | None]
        self.leaves: list[bytes]
        if all(committed):  # the usual case (server.default_kind): one pass per column
            n = len(payloads)
            randomness = os.urandom(SALT_SIZE * n)
            salts = [randomness[i : i + SALT_SIZE] for i in range(0, SALT_SIZE * n, SALT_SIZE)]
            self.leaves = [
                committed_header + sha(salt + payload).digest()
                for salt, payload in zip(salts, payloads, strict=True)
            ]
            self.salts, self.bodies = list(salts), list(payloads)
            self.hashes = b"".join([sha(b"\x00" + leaf).digest() for leaf in self.leaves])
            return
        self.salts = []
        self.leaves = []
        self.bodies = []
        randomness = os.urandom(SALT_SIZE * sum(committed))
        at = 0
        hashes = []
        for payload, keep in zip(payloads, committed, strict=True):
            if keep:
                salt = randomness[at : at + SALT_SIZE]
                at += SALT_SIZE
                leaf = committed_header + sha(salt + payload).digest()
                self.salts.append(salt)
                self.bodies.append(payload)
            else:
                leaf = header + payload
                self.salts.append(None)
                self.bodies.append(None)
            self.leaves.append(leaf)
            hashes.append(sha(b"\x00" + leaf).digest())
        self.hashes = b"".join(hashes)

    def leaves_at(self, ts: int) -> list[bytes]:
        """The leaves with the timestamp the log process gave them (usually their own)."""
        if ts == self.timestamp_ms:
            return self.leaves
        stamp = inline_leaf(ts, b"")[1:9]
        return [leaf[:1] + stamp + leaf[9:] for leaf in self.leaves]


class _Message:
    """The requests of one ``add`` message to the log process, waiting for its answer."""

    __slots__ = ("futures", "hashes", "sizes")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[_Placed]] = []
        self.sizes: list[int] = []
        self.hashes: list[bytes] = []


class HubClient:
    """The worker's side of its connection to the log process."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        stream: msgpack.Unpacker,
        writer: asyncio.StreamWriter,
        published: SignedCheckpoint | None = None,
    ) -> None:
        self._reader, self._stream, self._writer = reader, stream, writer
        self.published = published
        """The log's latest published checkpoint, as the log process last announced it."""
        self._next = 0
        self._pending: dict[int, _Message | asyncio.Future[list[Any]]] = {}
        self._queue: list[list[Any]] = []
        self._message = _Message()
        self._scheduled = False

    def add(self, started: float, batch: bool, prepared: Prepared) -> asyncio.Future[_Placed]:
        """Queue one request's entries for the next message; resolves once they are durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Placed] = loop.create_future()
        p = prepared
        self._queue.append([started, batch, p.timestamp_ms, p.salts, p.leaves, p.bodies, p.hashes])
        msg = self._message
        msg.futures.append(fut)
        msg.sizes.append(len(p.leaves))
        msg.hashes.append(p.hashes)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        self._next += 1
        self._pending[self._next] = self._message
        self._writer.write(pack(["add", self._next, self._queue]))
        self._queue, self._message = [], _Message()

    async def call(self, kind: str, fields: list[Any]) -> list[Any]:
        """Have the log process's ``Submissions`` take a request (``kind``: ``submit``,
        ``durable`` or ``prepared``, with its message fields); the fields of its ``ok``
        answer, or the error it raised."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._next += 1
        self._pending[self._next] = fut
        self._writer.write(pack([kind, self._next, fields]))
        # shield: the log process answers anyway; a client that hangs up changes nothing.
        return await asyncio.shield(fut)

    def inc(self, name: str, amount: int, **labels: str) -> None:
        """Increment a counter in the log process's metrics."""
        self._writer.write(pack(["inc", name, amount, labels]))

    async def run(self) -> None:
        """Route answers until the log process goes away; then exit at once."""
        while True:
            msg = await read_message(self._reader, self._stream)
            if msg is None:
                break
            self._answer(msg)
        log.critical("the log process went away; worker exiting")
        logging.shutdown()
        os._exit(1)

    def _answer(self, msg: list[Any]) -> None:
        if msg[0] == "published":
            self.published = unpack_published(msg[1])
            return
        waiting = self._pending.pop(msg[0])
        if isinstance(waiting, asyncio.Future):
            if waiting.done():
                return
            if msg[1] == "ok":
                waiting.set_result(msg[2:])
            else:
                waiting.set_exception(error_from(msg[2], msg[3], msg[4]))
            return
        if msg[1] == "ok":
            _, _, start, size, root, note, proof, stamps, hashes = msg
            if hashes is None:
                hashes = b"".join(waiting.hashes)
            run = Run(start, size, root, note, proof, hashes)
            offset = 0
            for fut, n, ts in zip(waiting.futures, waiting.sizes, stamps, strict=True):
                if not fut.done():
                    fut.set_result((run, offset, ts))
                offset += n
            return
        for fut in waiting.futures:
            if not fut.done():
                fut.set_exception(error_from(msg[2], msg[3], msg[4]))


class FastPath:
    """The worker's :class:`~translog.log.submission.Submitter`."""

    def __init__(self, config: Config, hub: HubClient) -> None:
        self.config, self.hub = config, hub
        self.fenced = bool(config.objstore.url)
        """With an object store no request takes the fast path (its batch checkpoint is not
        the store's)."""

    async def submit(self, request: SubmitRequest) -> Answer:
        """The fast path for a plain submission; the log process's answer for any other."""
        if request.wait != "durable" or request.entries.keys is not None or self.fenced:
            return Answer(*await self.hub.call("submit", pack_request(request)))
        if request.token.rate_per_s > 0:
            return Answer(*await self.hub.call("submit", pack_request(request)))
        entries = request.entries
        committed = check_entries(entries, request.kind, self.config)
        prepared = Prepared(entries.payloads, committed)
        run, offset, ts = await self.hub.add(request.started, request.batch, prepared)
        if request.batch:
            body = batch_receipt_json(
                run.quoted_checkpoint(),
                run.start + offset,
                prepared.leaves_at(ts),
                run.leaf_hashes,
                ts,
                prepared.salts,
                run.range_proof(offset, len(entries)),
                offset * HASH_SIZE,
            )
        else:
            index = run.start + offset
            at = offset * HASH_SIZE
            body = single_receipt_json(
                run.quoted_checkpoint(),
                index,
                prepared.leaves_at(ts)[0],
                run.leaf_hashes[at : at + HASH_SIZE],
                ts,
                prepared.salts[0],
                run.hashes().inclusion_proof_json(index),
            )
        return Answer(200, body)

    async def durable(self, request: SubmitRequest) -> Sequence[Landed]:
        """An ingest request: mapped here, made durable by the log process's Submissions.

        A request under one request key (OTLP) from a token without a rate limit, with no
        object store, has its limits checked and its leaves built here, as on the fast path
        (a ``prepared`` message): the log process then only checks the key and appends.
        """
        if request.request_key is not None and not self.fenced and request.token.rate_per_s <= 0:
            entries = request.entries
            prepared = Prepared(entries.payloads, check_entries(entries, request.kind, self.config))
            p = prepared
            row = [request.started, True, p.timestamp_ms, p.salts, p.leaves, p.bodies, p.hashes]
            fields = [request.token.name, request.request_key, request.source, row]
            first, n, duplicate = await self.hub.call("prepared", fields)
            return RequestRun(first, n, duplicate)
        indexes, duplicates = await self.hub.call("durable", pack_request(request))
        return list(map(Placed, indexes, duplicates))

    def rejected(self, kind: str) -> None:
        """Count a refused request in the log process's metrics."""
        self.hub.inc("translog_submissions_rejected_total", 1, reason=kind)
