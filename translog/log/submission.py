"""The log's submission API: every source of entries goes through :class:`Submissions`.

``POST /add`` and ``POST /add-batch`` (:mod:`translog.http.submit`) parse a request into a
:class:`SubmitRequest` and hand it to a :class:`Submitter`. In the single-process server, and
in the log process of the multi-process one, that is :class:`Submissions`, which owns the
semantics:

* **Limits**: payload size per entry, the inline-leaf limit, events validation
  (:func:`check_entries`), and a per-token rate (:class:`Bucket`, 429 with Retry-After).
* **Idempotency**: keys are scoped by token name (:func:`scope_key`); a repeated key answers
  the first entry, marked ``duplicate``, whether that entry is durable or still in flight.
* **Durability**: ``wait=durable`` answers a receipt once the entries are durable in a signed
  tree; ``wait=published`` once the next published checkpoint covers them; ``wait=0`` a
  signed promise per entry (:mod:`translog.log.promises`). With an object store both receipts
  carry the store's checkpoint covering the entries (``Log.fenced``; 503 if it does not come
  in time): never one signed here only, which a paused leader could sign over a fork.
* **Prepared runs** (:meth:`Submissions.add_prepared`): the multi-process fast path, leaves
  already built by an HTTP worker, answered with one range proof for the whole run.

An answer is the HTTP status and the exact JSON bytes; receipts are encoded by
:mod:`translog.formats.receipt_json`, the one receipt encoder of both servers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from translog.config import Config
from translog.core.merkle import HashReader
from translog.core.range_proof import prove_range
from translog.errors import (
    MalformedError,
    PushbackError,
    RateLimitedError,
    StorageCorruptError,
    TranslogError,
)
from translog.formats.batch import Batch
from translog.formats.receipt import ReceiptEntry, build_receipt
from translog.formats.receipt_json import receipt_json
from translog.log.promises import Prior, Promises
from translog.log.requests import (
    Answer,
    Bucket,
    DuplicateRequest,
    Landed,
    PreparedRun,
    RequestRun,
    SubmitRequest,
    check_entries,
    scope_key,
)
from translog.log.sequencer import (
    Accepted,
    AcceptedRun,
    Appended,
    AppendedRun,
    Log,
    SignedCheckpoint,
)
from translog.log.tokens import TokenInfo
from translog.metrics import LATENCY_BUCKETS, Metrics

_Future = asyncio.Future[Sequence[Appended]]
_ENCODER = json.JSONEncoder(separators=(",", ":"))


class ProofNodes:
    """Tree nodes read for receipts, kept in memory in front of the storage.

    Proofs ask only for complete subtrees (the ``HashReader`` contract), and a complete
    subtree's hash never changes in an append-only tree, so a node read once stays valid.
    The receipts of one batch share most of their audit paths: the batch's own nodes at the
    right edge of the tree (which storage keeps in partial chunks and reads again for every
    proof) and the same few upper nodes. Bounded: emptied once it holds ``limit`` nodes.
    """

    __slots__ = ("_limit", "_nodes", "_reader")

    def __init__(self, reader: HashReader, limit: int = 1 << 15) -> None:
        self._reader = reader
        self._limit = limit
        self._nodes: dict[tuple[int, int], bytes] = {}

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """The hashes of ``nodes``, reading only those not kept yet (one storage read)."""
        kept = self._nodes
        if len(kept) >= self._limit:
            kept.clear()
        missing = [n for n in nodes if n not in kept]
        if missing:
            kept.update(zip(missing, self._reader.read_hashes(missing), strict=True))
        return [kept[n] for n in nodes]


class Submissions:
    """The submission semantics over one :class:`Log`: limits, idempotency, durability."""

    def __init__(self, log: Log, config: Config, metrics: Metrics) -> None:
        self.log, self.config, self.metrics = log, config, metrics
        self.buckets: dict[str, Bucket] = {}
        self.inflight: dict[bytes, tuple[Accepted, _Future]] = {}
        """Idempotency digest → the first in-flight entry with it (FIFO: it is the one kept)."""
        self.proof_nodes = ProofNodes(log.storage)
        """Receipt proofs read through this."""
        metrics.counter(
            "translog_submissions_total", "successful submission requests, by mode and wait"
        )
        metrics.counter(
            "translog_submissions_rejected_total", "refused submission requests, by reason"
        )
        metrics.counter(
            "translog_duplicates_total", "entries answered from an earlier idempotency key"
        )
        metrics.counter(
            "translog_source_entries_total",
            "entries acknowledged (durable, or promised), by source: api or an ingest source",
        )
        metrics.histogram(
            "translog_receipt_seconds",
            "time from request to receipt for ?wait=durable",
            LATENCY_BUCKETS,
        )
        self.promises = Promises(log, metrics, config.publisher.max_merge_delay_ms)

    # -- the API ------------------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> Answer:
        """Rate, idempotency scope, then a receipt (200) or promises (202)."""
        if request.request_key is not None:
            raise MalformedError("a request key is for durable ingest requests, not receipts")
        metrics = self.metrics
        wait = request.wait
        if wait == "0":
            entries = request.entries
            committed, digests = self._admit(request)
            promises = await self._promise(entries, committed, digests)
            metrics.inc("translog_source_entries_total", len(promises), source=request.source)
            body: Any = {"promises": promises} if request.batch else promises[0]
            answer = Answer(202, _ENCODER.encode(body).encode("utf-8"))
        else:
            committed, digests = self._admit(request)
            appended = await self._durable(request.entries, committed, digests)
            self._counted(request, appended)
            answer = Answer(200, await self._receipt(appended, wait, batch=request.batch))
            if wait == "durable":
                latency = time.monotonic() - request.started
                metrics.histograms["translog_receipt_seconds"].observe(latency)
        mode = "batch" if request.batch else "single"
        metrics.inc("translog_submissions_total", mode=mode, wait=wait)
        return answer

    async def record(self, payloads: Sequence[bytes]) -> None:
        """Entries the log writes about itself (self-audit events, admin actions): committed,
        without a token's limits, and durable when this returns."""
        await self.log.submit(payloads, committed=True)

    async def durable(self, request: SubmitRequest) -> Sequence[Landed]:
        """Admit the request's entries and wait until they are durable in a signed tree.

        What every ingest source calls (its own answer format follows): the same limits,
        rate bucket, idempotency and durability as ``/add-batch``. A refusal raises before
        anything is written; entry ``i`` of the answer is entry ``i`` of the request (a
        duplicate names the earlier entry its key points at). With a ``request_key``, the
        key is stored with the request's first entry, and a request it already names appends
        nothing (:meth:`earlier_request`).
        """
        committed, digests = self._admit(request)
        n = len(request.entries)
        if digests and digests[0] is not None and request.request_key is not None:
            first = await self.earlier_request(digests[0])
            if first is not None:
                return self._counted(request, DuplicateRequest(first, n))
        appended = await self._durable(request.entries, committed, digests)
        if request.request_key is not None:
            self.check_contiguous(appended)
        return self._counted(request, appended)

    def _counted(self, request: SubmitRequest, landed: Sequence[Landed]) -> Sequence[Landed]:
        """Count a durable request's entries (and duplicates) by source; ``landed``."""
        if isinstance(landed, AppendedRun):
            duplicates = 0
        elif isinstance(landed, RequestRun):
            duplicates = len(landed) if landed.duplicate else 0
        else:
            duplicates = sum(a.duplicate for a in landed)
        self.metrics.inc("translog_duplicates_total", duplicates)
        self.metrics.inc("translog_source_entries_total", len(landed), source=request.source)
        return landed

    async def earlier_request(self, digest: bytes) -> int | None:
        """The index of the first entry of the request a scoped request key names (stored,
        or in flight: then once it is durable), or None when no request has it yet.

        Returns without awaiting when the key is new, so a caller that enqueues at once
        (registering the key) cannot race another request with the same key.
        """
        while True:
            index = self.log.storage.lookup_dedupe(digest)
            if index is not None:
                return index
            hit = self.inflight.get(digest)
            if hit is None:
                return None
            try:
                appended = await asyncio.shield(hit[1])
            except TranslogError:
                continue  # that request was refused: nothing holds the key now, or another
            return appended[0].index

    @staticmethod
    def check_contiguous(appended: Sequence[Appended]) -> None:
        """A request under one key is one group, sequenced in order (index ``first + i``)."""
        first = appended[0].index
        if appended[-1].index != first + len(appended) - 1:
            raise StorageCorruptError(f"a keyed request was not sequenced contiguously at {first}")

    def _admit(self, request: SubmitRequest) -> tuple[list[bool], list[bytes | None]]:
        """Limits, then the rate; the committed flags and scoped idempotency digests."""
        entries = request.entries
        committed = check_entries(entries, request.kind, self.config)
        self.limit(request.token, len(entries))
        keys = entries.keys
        name = request.token.name
        digests: list[bytes | None]
        if request.request_key is not None:
            if keys is not None:
                raise MalformedError("a request key and per-entry keys exclude each other")
            digests = [scope_key(name, request.request_key)] + [None] * (len(entries) - 1)
        elif keys is None:
            digests = [None] * len(entries)
        else:
            digests = [None if k is None else scope_key(name, k) for k in keys]
        return committed, digests

    def rejected(self, kind: str) -> None:
        """Count a refused submission request under its error kind."""
        self.metrics.inc("translog_submissions_rejected_total", reason=kind)

    async def close(self) -> None:
        """After the log has closed (it drains the pool), let promise watchers finish."""
        await self.promises.drain()

    # -- limits and idempotency ---------------------------------------------------------

    def limit(self, token: TokenInfo, n: int) -> None:
        """Charge ``n`` entries to the token's rate; RateLimitedError (429) when over it."""
        rate = token.rate_per_s
        if rate <= 0:
            return
        now = time.monotonic()
        bucket = self.buckets.get(token.name)
        if bucket is None:
            bucket = self.buckets[token.name] = Bucket(rate, now)
        wait = bucket.take(rate, n, now)
        if wait > 0:
            raise RateLimitedError(
                f"token {token.name!r} is limited to {rate:g} entries per second",
                retry_after=wait,
            )

    def register(
        self, digests: Sequence[bytes | None], accepted: list[Accepted], fut: _Future
    ) -> None:
        """Remember keyed entries until their future completes (one callback for them all)."""
        inflight = self.inflight
        mine: list[bytes] = []
        for digest, acc in zip(digests, accepted, strict=True):
            if digest is not None and digest not in inflight:
                inflight[digest] = (acc, fut)
                mine.append(digest)
        if mine:
            fut.add_done_callback(partial(self._release, mine))

    def _release(self, digests: list[bytes], fut: _Future) -> None:
        inflight = self.inflight
        for digest in digests:
            if inflight.get(digest, (None, None))[1] is fut:
                del inflight[digest]

    def prior(self, digest: bytes) -> Prior | None:
        """The entry ``digest`` already names: durable first, then in flight (submitted
        here, or a promised entry re-queued after a crash and not yet sequenced)."""
        log = self.log
        index = log.storage.lookup_dedupe(digest)
        if index is not None:
            entry = log.entries(index, index + 1)[0]
            return Prior(entry.leaf, entry.salt, None)
        hit = self.inflight.get(digest) or log.requeued(digest)
        return None if hit is None else Prior(hit[0].leaf, hit[0].salt, hit[1])

    # -- durable entries ----------------------------------------------------------------

    def _accept(self, entries: Batch, committed: Sequence[bool]) -> list[Accepted]:
        """Build the leaves now, one ``Log.accept`` per run of one kind (timestamps ordered)."""
        accepted: list[Accepted] = []
        start = 0
        payloads = entries.payloads
        for i in range(1, len(payloads) + 1):
            if i == len(payloads) or committed[i] != committed[start]:
                accepted += self.log.accept(payloads[start:i], committed=committed[start])
                start = i
        return accepted

    def enqueue(
        self,
        entries: Batch,
        committed: Sequence[bool],
        digests: Sequence[bytes | None],
        persisted: list[asyncio.Future[None]] | None = None,
    ) -> tuple[list[Accepted], _Future]:
        """Accept and submit; PushbackError (503) when the pool is full.

        ``persisted`` (for promises) receives a future that resolves once the accepted leaves
        are recorded durably, so a crash before sequencing cannot break the promise.
        """
        accepted = self._accept(entries, committed)
        keys = list(digests) if any(d is not None for d in digests) else None
        fut = self.log.submit(
            entries.payloads,
            committed=any(committed),
            keys=keys,
            accepted=accepted,
            persisted=persisted,
        )
        self.register(digests, accepted, fut)
        return accepted, fut

    async def _durable(
        self, entries: Batch, committed: Sequence[bool], digests: Sequence[bytes | None]
    ) -> Sequence[Appended]:
        """Submit and wait until durable. A key already in flight makes this a duplicate."""
        was_inflight = len(entries) == 1 and digests[0] is not None and digests[0] in self.inflight
        _, fut = self.enqueue(entries, committed, digests)
        # shield: a cancelled handler must not cancel a future other requests may share.
        appended = await asyncio.shield(fut)
        if was_inflight and not appended[0].duplicate:
            appended = [replace(appended[0], duplicate=True)]
        return appended

    async def _receipt(self, appended: Sequence[Appended], wait: str, *, batch: bool) -> bytes:
        """The receipt: proofs against the batch checkpoint, or the next published one.

        With an object store (``Log.fenced``) both waits answer against the store's
        checkpoint covering the entries: a writer never shows one the store did not accept.
        """
        signed = max((a.checkpoint for a in appended), key=lambda c: c.size)
        if wait == "published" or self.log.fenced:
            signed = await self._next_published(max(a.index for a in appended) + 1)
        entries = [
            ReceiptEntry(a.index, a.leaf, a.leaf_hash, a.timestamp_ms, a.salt, a.duplicate)
            for a in appended
        ]
        receipt = build_receipt(signed.note, signed.size, entries, self.proof_nodes, batch=batch)
        return receipt_json(receipt)

    async def _next_published(self, min_size: int) -> SignedCheckpoint:
        """The next published checkpoint of at least ``min_size`` (with an object store, the
        store's); 503 if none comes in time."""
        interval = self.config.publisher.interval_ms / 1000
        timeout = max(5.0, 10 * interval)
        try:
            return await asyncio.wait_for(self.log.wait_published(min_size), timeout)
        except TimeoutError as e:
            where = "accepted by the object store" if self.log.fenced else "published"
            raise PushbackError(
                f"the entries are durable but no checkpoint was {where} within {timeout:g} s; "
                "retry with the same idempotency keys",
                retry_after=interval,
            ) from e

    # -- promises -----------------------------------------------------------------------

    async def _promise(
        self, entries: Batch, committed: Sequence[bool], digests: Sequence[bytes | None]
    ) -> list[dict[str, Any]]:
        """Sign a promise per entry; submit only entries whose key names no earlier entry."""
        sources: list[Prior | int] = []
        fresh: list[int] = []
        first: dict[bytes, int] = {}
        for i, digest in enumerate(digests):
            prior = None if digest is None else self.prior(digest)
            if prior is not None:
                sources.append(prior)
            elif digest is not None and digest in first:
                sources.append(first[digest])
            else:
                if digest is not None:
                    first[digest] = len(fresh)
                sources.append(len(fresh))
                fresh.append(i)
        persisted: list[asyncio.Future[None]] = []
        accepted: list[Accepted] = []
        fut: _Future | None = None
        if fresh:
            keys = entries.keys
            subset = Batch(
                [entries.payloads[i] for i in fresh],
                None if keys is None else [keys[i] for i in fresh],
                [entries.where(i) for i in fresh],
            )
            accepted, fut = self.enqueue(
                subset, [committed[i] for i in fresh], [digests[i] for i in fresh], persisted
            )
        for done in persisted:
            # shield: a client that hangs up must not cancel the record other entries share.
            await asyncio.shield(done)
        resolved = [
            s if isinstance(s, Prior) else Prior(accepted[s].leaf, accepted[s].salt, fut)
            for s in sources
        ]
        return self.promises.sign(resolved, sources)

    # -- the multi-process fast path ----------------------------------------------------

    def add_prepared(
        self,
        requests: Sequence[Sequence[Any]],
        done: Callable[[PreparedRun | TranslogError], None],
    ) -> None:
        """Submit worker-built leaves as one group; ``done`` gets the run once durable.

        Each request is a row laid out as :class:`PreparedRequest` (the message carries plain
        lists; they are unpacked here, not wrapped).

        Timestamps stay non-decreasing (:meth:`Log.accept_prepared`). One range proof for the
        whole run, not one proof per entry: the worker derives each receipt's proof from it.
        """
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
            done(e)
            return
        fut.add_done_callback(
            partial(self._prepared_durable, requests, stamps, accepted, rebuilt, done)
        )

    async def durable_prepared(
        self, token_name: str, request_key: str, source: str, prepared: Sequence[Any]
    ) -> DuplicateRequest | AppendedRun:
        """An ingest request under one key whose leaves an HTTP worker built (its limits
        checked there, as the fast path checks them; a token with a rate limit never comes
        this way): :meth:`durable` for a request laid out as :class:`PreparedRequest`."""
        _started, _batch, ts, salts, leaves, bodies, hashes = prepared
        digest = scope_key(token_name, request_key)
        n = len(leaves)
        first = await self.earlier_request(digest)
        if first is not None:
            landed: DuplicateRequest | AppendedRun = DuplicateRequest(first, n)
            self.metrics.inc("translog_duplicates_total", n)
        else:
            log = self.log
            accepted, _ = log.accept_prepared(ts, salts, leaves, hashes)
            keys: list[bytes | None] = [digest] + [None] * (n - 1)
            fut = log.submit(bodies, committed=True, keys=keys, accepted=accepted)
            self.register(keys[:1], accepted[:1], fut)
            # shield: a worker that hangs up must not cancel the group's future.
            appended = await asyncio.shield(fut)
            self.check_contiguous(appended)
            landed = AppendedRun(appended[0].index, accepted, appended[0].checkpoint)
        self.metrics.inc("translog_source_entries_total", n, source=source)
        return landed

    def _prepared_durable(
        self,
        requests: Sequence[Sequence[Any]],
        stamps: list[int],
        accepted: AcceptedRun,
        rebuilt: bool,
        done: Callable[[PreparedRun | TranslogError], None],
        fut: _Future,
    ) -> None:
        if fut.cancelled():
            done(PushbackError("the log is shutting down", 5.0))
            return
        error = fut.exception()
        if isinstance(error, TranslogError):
            done(error)
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
            done(e)
            return
        self.metrics.inc("translog_source_entries_total", end - start, source="api")
        now = time.monotonic()
        latency = self.metrics.histograms["translog_receipt_seconds"]
        for started, batch, *_ in requests:
            latency.observe(now - started)
            mode = "batch" if batch else "single"
            self.metrics.inc("translog_submissions_total", mode=mode, wait="durable")
        # The worker has the leaf hashes, unless a timestamp moved and they were made again.
        hashes = b"".join(accepted.hashes) if rebuilt else None
        done(
            PreparedRun(
                start, signed.size, signed.root_hash, signed.note, list(nodes), stamps, hashes
            )
        )
