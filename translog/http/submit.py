"""Submission routes: ``POST <prefix>/add`` (one entry) and ``POST <prefix>/add-batch``.

Both need a bearer token with the ``submit`` scope (compared in constant time by the token
store) and answer JSON; every refusal is a 4xx/5xx JSON ``{"error", "reason"}`` from the one
error table in :mod:`translog.http.errors`.

* ``POST /add``: the body is the payload, of any content type; an empty body is a valid,
  zero-length payload. Optional header ``Idempotency-Key`` (1-255 printable ASCII characters).
* ``POST /add-batch``: ``application/x-ndjson`` (one JSON value per line; blank lines are
  skipped) or ``application/json`` (one array). Each value is a base64 string, the payload, or
  an object ``{"payload_b64": "...", "idempotency_key": "..."}`` (the key is optional).

Query parameters (anything else is a 400):

* ``wait=durable`` (default): 200 with a receipt (:mod:`translog.formats.receipt`) once the entries
  are
  durable, whose checkpoint was signed right after their batch's commit.
* ``wait=published``: 200 with a receipt over the next checkpoint published on the interval.
* ``wait=0``: 202 at once with a signed promise per entry (``{"promises": [...]}`` for a
  batch), honoured within ``publisher.max_merge_delay_ms``. A promise the log fails to keep
  is logged and counted in ``translog_promises_broken_total``.
* ``kind=committed|inline`` (default ``server.default_kind``). A payload over 65,525 bytes
  does not fit an inline leaf: with no ``kind`` it is committed, with ``kind=inline`` it is a
  413.

Idempotency keys are scoped by token name: the log stores ``SHA-256(name "\\n" key)[:16]``, so
two tokens never see each other's keys. A repeated key returns the first entry, marked
``"duplicate": true``. For ``wait=0`` a key that is already durable or in flight yields a
promise over *that* entry's leaf, never over a new leaf that the log would then drop.

Limits: ``server.max_body_bytes`` (413), ``server.max_payload_bytes`` per payload (413),
``server.max_batch_entries`` per request (413), ``sequencer.max_pending`` (503 with
Retry-After), and a per-token rate (``rate_per_s``; 429 with Retry-After).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from translog.config import Config
from translog.core.leaf import MAX_INLINE_PAYLOAD
from translog.core.merkle import HashReader
from translog.errors import MalformedError, PushbackError, TooLargeError, TranslogError
from translog.formats.event_schema import validate_payloads
from translog.formats.receipt import (
    Promise,
    ReceiptEntry,
    build_receipt,
    format_promise,
    format_receipt,
    sign_promise,
)
from translog.http.auth import require
from translog.http.errors import (
    RateLimitedError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
    status_for,
)
from translog.http.keys import CONFIG, LOG, METRICS
from translog.log.sequencer import Accepted, Appended, Log, SignedCheckpoint, now_ms
from translog.log.tokens import TokenInfo
from translog.metrics import LATENCY_BUCKETS, Metrics

log = logging.getLogger("translog.submit")

MAX_KEY_LENGTH = 255
"""Longest idempotency key accepted, in characters."""
_WAITS = ("durable", "published", "0")
_KINDS = ("committed", "inline")
_QUERY = frozenset({"wait", "kind"})
_NDJSON = "application/x-ndjson"
_JSON = "application/json"
_DRAIN_TIMEOUT = 10.0
_PLAIN_STRING = re.compile(rb'"[A-Za-z0-9+/=]*"')

_Future = asyncio.Future[Sequence[Appended]]


@dataclass(frozen=True, slots=True)
class _Item:
    """One payload to submit, where it came from (for errors) and its idempotency key."""

    payload: bytes
    where: str
    key: str | None = None


@dataclass(frozen=True, slots=True)
class _Prior:
    """An earlier entry an idempotency key points at: durable (no future) or in flight."""

    leaf: bytes
    salt: bytes | None
    future: _Future | None


class _Bucket:
    """A token bucket: ``rate`` entries per second, bursts up to one second's worth."""

    __slots__ = ("tokens", "updated")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens = max(rate, 1.0)
        self.updated = now

    def take(self, rate: float, n: int, now: float) -> float:
        """Take ``n`` entries; 0 when allowed, else the seconds until they would be.

        A request larger than the burst passes once the bucket is full and leaves it in debt,
        so any batch size can get through at the configured average rate.
        """
        capacity = max(rate, 1.0)
        self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        need = min(float(n), capacity)
        if self.tokens < need:
            return (need - self.tokens) / rate
        self.tokens -= n
        return 0.0


class SubmitState:
    """Per-app submission state: rate buckets, keyed entries in flight, promise watchers."""

    def __init__(self) -> None:
        self.buckets: dict[str, _Bucket] = {}
        self.inflight: dict[bytes, tuple[Accepted, _Future]] = {}
        """Idempotency digest → the first in-flight entry with it (FIFO: it is the one kept)."""
        self.watchers: set[asyncio.Task[None]] = set()
        self.proof_nodes: ProofNodes | None = None
        """Receipt proofs read through this (made on first use, over the log's storage)."""

    def limit(self, token: TokenInfo, n: int) -> None:
        """Charge ``n`` entries to the token's rate; RateLimitedError (429) when over it."""
        rate = token.rate_per_s
        if rate <= 0:
            return
        now = time.monotonic()
        bucket = self.buckets.get(token.name)
        if bucket is None:
            bucket = self.buckets[token.name] = _Bucket(rate, now)
        wait = bucket.take(rate, n, now)
        if wait > 0:
            raise RateLimitedError(
                f"token {token.name!r} is limited to {rate:g} entries per second",
                retry_after=wait,
            )

    def register(
        self, digests: Sequence[bytes | None], accepted: list[Accepted], fut: _Future
    ) -> None:
        """Remember keyed entries until their future completes."""
        for digest, acc in zip(digests, accepted, strict=True):
            if digest is not None and digest not in self.inflight:
                self.inflight[digest] = (acc, fut)
                fut.add_done_callback(partial(self._release, digest))

    def _release(self, digest: bytes, fut: _Future) -> None:
        if self.inflight.get(digest, (None, None))[1] is fut:
            del self.inflight[digest]

    def prior(self, log: Log, digest: bytes) -> _Prior | None:
        """The entry ``digest`` already names: durable first, then in flight (submitted
        here, or a promised entry re-queued after a crash and not yet sequenced)."""
        index = log.storage.lookup_dedupe(digest)
        if index is not None:
            entry = log.entries(index, index + 1)[0]
            return _Prior(entry.leaf, entry.salt, None)
        hit = self.inflight.get(digest) or log.requeued(digest)
        return None if hit is None else _Prior(hit[0].leaf, hit[0].salt, hit[1])


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


STATE = web.AppKey("translog.submit", SubmitState)


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the submission routes and their metrics."""
    app[STATE] = SubmitState()
    _declare_metrics(app[METRICS])
    app.router.add_post(f"{prefix}/add", post_add)
    app.router.add_post(f"{prefix}/add-batch", post_add_batch)
    app.cleanup_ctx.append(_drain_watchers)


def _declare_metrics(m: Metrics) -> None:
    m.counter("translog_submissions_total", "successful submission requests, by mode and wait")
    m.counter("translog_submissions_rejected_total", "refused submission requests, by reason")
    m.counter("translog_duplicates_total", "entries answered from an earlier idempotency key")
    m.counter("translog_promises_total", "signed promises (?wait=0) returned")
    m.counter("translog_promises_broken_total", "promises not merged by their deadline")
    m.histogram(
        "translog_receipt_seconds",
        "time from request to receipt for ?wait=durable",
        LATENCY_BUCKETS,
    )


async def _drain_watchers(app: web.Application) -> AsyncIterator[None]:
    """After the log has closed (it drains the pool), let promise watchers record outcomes."""
    yield
    watchers = app[STATE].watchers
    if watchers:
        _, pending = await asyncio.wait(set(watchers), timeout=_DRAIN_TIMEOUT)
        for task in pending:
            task.cancel()


# ------------------------------------------------------------------------------- handlers


async def post_add(request: web.Request) -> web.Response:
    """Submit one payload: the request body."""
    started = time.monotonic()
    with _count_rejections(request.app[METRICS]):
        token = require(request, "submit")
        wait, kind = _query(request)
        key = _header_key(request)
        server = request.app[CONFIG].server
        payload = await _read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        item = _Item(payload, "payload", key)
        _check_payload(item, server.max_payload_bytes)
        return await _submit(request, token, [item], wait, kind, batch=False, started=started)


async def post_add_batch(request: web.Request) -> web.Response:
    """Submit a batch of payloads (NDJSON or a JSON array of base64 payloads)."""
    started = time.monotonic()
    with _count_rejections(request.app[METRICS]):
        token = require(request, "submit")
        wait, kind = _query(request)
        if "Idempotency-Key" in request.headers:
            raise MalformedError(
                "Idempotency-Key header: not used by add-batch; give each entry an idempotency_key"
            )
        server = request.app[CONFIG].server
        body = await _read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        items = parse_batch(body, request.content_type, server.max_batch_entries)
        for item in items:
            _check_payload(item, server.max_payload_bytes)
        return await _submit(request, token, items, wait, kind, batch=True, started=started)


async def _submit(
    request: web.Request,
    token: TokenInfo,
    items: list[_Item],
    wait: str,
    kind: str | None,
    *,
    batch: bool,
    started: float,
) -> web.Response:
    """The part both routes share: rate, idempotency scope, then receipt or promise."""
    app = request.app
    if app[CONFIG].events.enabled:
        validate_payloads((it.where, it.payload) for it in items)
    committed = _committed_flags(items, kind, app[CONFIG].server.default_kind)
    app[STATE].limit(token, len(items))
    digests = [None if it.key is None else scope_key(token.name, it.key) for it in items]
    metrics = app[METRICS]
    if wait == "0":
        promises = await _promise(app, items, committed, digests)
        body: dict[str, Any] = {"promises": promises} if batch else promises[0]
        status = 202
    else:
        appended = await _durable(app, items, committed, digests)
        metrics.inc("translog_duplicates_total", sum(a.duplicate for a in appended))
        body = await _receipt(app, appended, wait, batch=batch)
        status = 200
        if wait == "durable":
            metrics.histograms["translog_receipt_seconds"].observe(time.monotonic() - started)
    metrics.inc("translog_submissions_total", mode="batch" if batch else "single", wait=wait)
    return _json(body, status)


# ---------------------------------------------------------------------- request parsing


@contextlib.contextmanager
def _count_rejections(metrics: Metrics) -> Iterator[None]:
    """Count every refused request by its error kind, then let the error middleware answer."""
    try:
        yield
    except TranslogError as e:
        metrics.inc("translog_submissions_rejected_total", reason=status_for(e)[1])
        raise


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise MalformedError(f"{name}: given {len(values)} times")
    return values[0] if values else None


def _query(request: web.Request) -> tuple[str, str | None]:
    """``(wait, kind)`` from the query string; unknown parameters and values are a 400."""
    unknown = sorted(set(request.query) - _QUERY)
    if unknown:
        raise MalformedError(f"unknown query parameter {unknown[0][:32]!r}; use wait or kind")
    wait = _one(request, "wait")
    if wait is None:
        wait = "durable"
    if wait not in _WAITS:
        raise MalformedError(f"wait: expected durable, published or 0, got {wait[:32]!r}")
    kind = _one(request, "kind")
    if kind is not None and kind not in _KINDS:
        raise MalformedError(f"kind: expected committed or inline, got {kind[:32]!r}")
    return wait, kind


def _check_key(key: str, where: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise MalformedError(f"{where}: must be 1-{MAX_KEY_LENGTH} printable ASCII characters")
    return key


def _header_key(request: web.Request) -> str | None:
    values = request.headers.getall("Idempotency-Key", [])
    if len(values) > 1:
        raise MalformedError(f"Idempotency-Key header: given {len(values)} times")
    return _check_key(values[0], "Idempotency-Key header") if values else None


def scope_key(token_name: str, key: str) -> bytes:
    """The stored idempotency digest: keys are scoped by the token's name."""
    return hashlib.sha256(f"{token_name}\n{key}".encode()).digest()[:16]


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole request body, or TooLargeError (413) / MalformedError (400) for a bad one,
    or RequestTimeoutError (408) when it has not arrived within ``timeout`` seconds."""
    length = request.content_length
    if length is not None and length > limit:
        raise TooLargeError(f"request body of {length} bytes exceeds the {limit}-byte limit")
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError as e:
        raise RequestTimeoutError(f"request body did not arrive within {timeout:g} s") from e
    except web.HTTPRequestEntityTooLarge as e:
        raise TooLargeError(f"request body exceeds the {limit}-byte limit") from e
    except (HttpProcessingError, ConnectionError) as e:
        raise MalformedError(
            f"request body is truncated or badly framed: {e.__class__.__name__}"
        ) from e


def _check_payload(item: _Item, limit: int) -> None:
    if len(item.payload) > limit:
        raise TooLargeError(
            f"{item.where}: payload of {len(item.payload)} bytes exceeds the {limit}-byte limit"
        )


def _committed_flags(items: Sequence[_Item], kind: str | None, default: str) -> list[bool]:
    """Per item: store it committed? Oversized payloads are committed unless kind=inline."""
    if kind == "committed" or (kind is None and default == "committed"):
        return [True] * len(items)
    if kind == "inline":
        for item in items:
            if len(item.payload) > MAX_INLINE_PAYLOAD:
                raise TooLargeError(
                    f"{item.where}: inline payload of {len(item.payload)} bytes exceeds the "
                    f"{MAX_INLINE_PAYLOAD}-byte leaf limit; use kind=committed"
                )
    return [len(item.payload) > MAX_INLINE_PAYLOAD for item in items]


def parse_batch(body: bytes, content_type: str, max_entries: int) -> list[_Item]:
    """Parse a batch body into items; errors name the line (NDJSON) or element (JSON)."""
    if content_type == _NDJSON:
        values = _ndjson_values(body, max_entries)
    elif content_type == _JSON:
        values = _json_values(body, max_entries)
    else:
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:64]!r}: add-batch takes {_NDJSON} or {_JSON}"
        )
    if not values:
        raise MalformedError("batch holds no entries")
    return [_batch_item(where, value) for where, value in values]


def _ndjson_values(body: bytes, max_entries: int) -> list[tuple[str, object]]:
    values: list[tuple[str, object]] = []
    for n, raw in enumerate(body.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        if len(values) == max_entries:
            raise TooLargeError(f"batch holds more than {max_entries} entries (line {n})")
        if _PLAIN_STRING.fullmatch(line):
            # The common case, a quoted base64 string, needs no JSON decoder.
            values.append((f"line {n}", line[1:-1].decode("ascii")))
            continue
        try:
            values.append((f"line {n}", json.loads(line.decode("utf-8"))))
        except UnicodeDecodeError as e:
            raise MalformedError(f"line {n}: not valid UTF-8 at byte {e.start}") from e
        except json.JSONDecodeError as e:
            raise MalformedError(f"line {n}: invalid JSON: {e.msg} at column {e.colno}") from e
        except RecursionError as e:
            raise MalformedError(f"line {n}: JSON nested too deeply") from e
    return values


def _json_values(body: bytes, max_entries: int) -> list[tuple[str, object]]:
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MalformedError(f"body: not valid UTF-8 at byte {e.start}") from e
    except json.JSONDecodeError as e:
        raise MalformedError(
            f"body: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from e
    except RecursionError as e:
        raise MalformedError("body: JSON nested too deeply") from e
    if not isinstance(value, list):
        raise MalformedError("body: expected a JSON array of entries")
    if len(value) > max_entries:
        raise TooLargeError(f"batch of {len(value)} entries exceeds the limit of {max_entries}")
    return [(f"element {i}", v) for i, v in enumerate(value)]


def _batch_item(where: str, value: object) -> _Item:
    if isinstance(value, str):
        b64, key = value, None
    elif isinstance(value, dict):
        b64, key = _entry_object(where, value)
    else:
        raise MalformedError(f"{where}: expected a base64 string or an object with payload_b64")
    try:
        payload = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedError(f"{where}: payload_b64 is not valid base64") from e
    return _Item(payload, where, key)


def _entry_object(where: str, value: dict[Any, Any]) -> tuple[str, str | None]:
    """``(payload_b64, idempotency_key)`` from a batch entry object."""
    unknown = sorted(str(k) for k in value if k not in ("payload_b64", "idempotency_key"))
    if unknown:
        raise MalformedError(f"{where}: unknown field {unknown[0][:32]!r}")
    b64 = value.get("payload_b64")
    if not isinstance(b64, str):
        raise MalformedError(f"{where}: payload_b64 must be a base64 string")
    key = value.get("idempotency_key")
    if key is None:
        return b64, None
    if not isinstance(key, str):
        raise MalformedError(f"{where}: idempotency_key must be a string")
    return b64, _check_key(key, f"{where}: idempotency_key")


# ------------------------------------------------------------------------ log operations


def _accept(log: Log, items: Sequence[_Item], committed: Sequence[bool]) -> list[Accepted]:
    """Build the leaves now, one ``Log.accept`` per run of one kind, keeping timestamps ordered."""
    accepted: list[Accepted] = []
    start = 0
    for i in range(1, len(items) + 1):
        if i == len(items) or committed[i] != committed[start]:
            payloads = [it.payload for it in items[start:i]]
            accepted += log.accept(payloads, committed=committed[start])
            start = i
    return accepted


def _enqueue(
    app: web.Application,
    items: Sequence[_Item],
    committed: Sequence[bool],
    digests: Sequence[bytes | None],
    persisted: list[asyncio.Future[None]] | None = None,
) -> tuple[list[Accepted], _Future]:
    """Accept and submit; PushbackError (503) when the pool is full.

    ``persisted`` (for promises) receives a future that resolves once the accepted leaves
    are recorded durably, so a crash before sequencing cannot break the promise.
    """
    log = app[LOG]
    accepted = _accept(log, items, committed)
    keys = list(digests) if any(d is not None for d in digests) else None
    fut = log.submit(
        [it.payload for it in items],
        committed=any(committed),
        keys=keys,
        accepted=accepted,
        persisted=persisted,
    )
    app[STATE].register(digests, accepted, fut)
    return accepted, fut


async def _durable(
    app: web.Application,
    items: Sequence[_Item],
    committed: Sequence[bool],
    digests: Sequence[bytes | None],
) -> Sequence[Appended]:
    """Submit and wait until durable. A key already in flight makes this entry a duplicate."""
    state = app[STATE]
    was_inflight = len(items) == 1 and digests[0] is not None and digests[0] in state.inflight
    _, fut = _enqueue(app, items, committed, digests)
    # shield: a cancelled handler must not cancel a future other requests may share.
    appended = await asyncio.shield(fut)
    if was_inflight and not appended[0].duplicate:
        appended = [replace(appended[0], duplicate=True)]
    return appended


async def _receipt(
    app: web.Application, appended: Sequence[Appended], wait: str, *, batch: bool
) -> dict[str, Any]:
    """The receipt JSON: proofs against the batch checkpoint, or the next published one."""
    log = app[LOG]
    signed = max((a.checkpoint for a in appended), key=lambda c: c.size)
    if wait == "published":
        signed = await _next_published(log, max(a.index for a in appended) + 1, app[CONFIG])
    entries = [
        ReceiptEntry(a.index, a.leaf, a.leaf_hash, a.timestamp_ms, a.salt, a.duplicate)
        for a in appended
    ]
    state = app[STATE]
    if state.proof_nodes is None:
        state.proof_nodes = ProofNodes(log.storage)
    receipt = build_receipt(signed.note, signed.size, entries, state.proof_nodes, batch=batch)
    return format_receipt(receipt)


async def _next_published(log: Log, min_size: int, config: Config) -> SignedCheckpoint:
    """The next published checkpoint of at least ``min_size``; 503 if none comes in time."""
    timeout = max(5.0, 10 * config.publisher.interval_ms / 1000)
    try:
        return await asyncio.wait_for(log.wait_published(min_size), timeout)
    except TimeoutError as e:
        raise PushbackError(
            f"the entries are durable but no checkpoint was published within {timeout:g} s; "
            "retry with the same idempotency keys, or use wait=durable",
            retry_after=config.publisher.interval_ms / 1000,
        ) from e


# ------------------------------------------------------------------------------ promises


async def _promise(
    app: web.Application,
    items: Sequence[_Item],
    committed: Sequence[bool],
    digests: Sequence[bytes | None],
) -> list[dict[str, Any]]:
    """Sign a promise per item; submit only items whose key names no earlier entry."""
    state, log = app[STATE], app[LOG]
    sources: list[_Prior | int] = []
    fresh: list[int] = []
    first: dict[bytes, int] = {}
    for i, digest in enumerate(digests):
        prior = None if digest is None else state.prior(log, digest)
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
    resolved = _resolve_fresh(app, items, committed, digests, fresh, sources, persisted)
    for done in persisted:
        # shield: a client that hangs up must not cancel the record other entries share.
        await asyncio.shield(done)
    return _sign_promises(app, resolved, sources)


def _resolve_fresh(
    app: web.Application,
    items: Sequence[_Item],
    committed: Sequence[bool],
    digests: Sequence[bytes | None],
    fresh: list[int],
    sources: list[_Prior | int],
    persisted: list[asyncio.Future[None]],
) -> list[_Prior]:
    """Submit the fresh items; every source then becomes a leaf with the future to watch."""
    accepted: list[Accepted] = []
    fut: _Future | None = None
    if fresh:
        accepted, fut = _enqueue(
            app,
            [items[i] for i in fresh],
            [committed[i] for i in fresh],
            [digests[i] for i in fresh],
            persisted,
        )
    return [
        s if isinstance(s, _Prior) else _Prior(accepted[s].leaf, accepted[s].salt, fut)
        for s in sources
    ]


def _sign_promises(
    app: web.Application, resolved: list[_Prior], sources: list[_Prior | int]
) -> list[dict[str, Any]]:
    log, metrics = app[LOG], app[METRICS]
    delay = app[CONFIG].publisher.max_merge_delay_ms
    watch: dict[_Future, list[Promise]] = {}
    seen: set[int] = set()
    out: list[dict[str, Any]] = []
    for prior, source in zip(resolved, sources, strict=True):
        duplicate = isinstance(source, _Prior) or source in seen
        promise = sign_promise(log.signer, prior.leaf, prior.salt, delay, duplicate=duplicate)
        if isinstance(source, int):
            seen.add(source)
        if prior.future is not None:
            watch.setdefault(prior.future, []).append(promise)
        out.append(format_promise(promise))
    metrics.inc("translog_promises_total", len(out))
    metrics.inc("translog_duplicates_total", sum(o["duplicate"] for o in out))
    for fut, promises in watch.items():
        _watch(app, fut, promises)
    return out


def _watch(app: web.Application, fut: _Future, promises: list[Promise]) -> None:
    """Keep a reference to a task that checks each promise is kept."""
    watchers = app[STATE].watchers
    task = asyncio.create_task(_check_promises(app[METRICS], fut, promises))
    watchers.add(task)
    task.add_done_callback(watchers.discard)


async def _check_promises(metrics: Metrics, fut: _Future, promises: list[Promise]) -> None:
    """Count promises whose leaf did not become durable by its deadline."""
    try:
        appended = await asyncio.shield(fut)
    except TranslogError as e:
        metrics.inc("translog_promises_broken_total", len(promises))
        log.critical("%d promises broken: their entries failed: %s", len(promises), e)
        return
    landed = {a.leaf_hash for a in appended}
    done = now_ms()
    for p in promises:
        if p.leaf_hash not in landed or done > p.deadline_ms:
            metrics.inc("translog_promises_broken_total")
            log.critical(
                "promise broken: leaf hash %s (deadline %d) %s",
                base64.b64encode(p.leaf_hash).decode(),
                p.deadline_ms,
                "was not merged" if p.leaf_hash not in landed else f"was merged at {done}",
            )


_ENCODER = json.JSONEncoder(separators=(",", ":"))
"""What ``json.dumps(..., separators=(",", ":"))`` uses, made once instead of per call."""


def _json(body: dict[str, Any], status: int) -> web.Response:
    """A compact JSON response that no cache keeps (receipts carry salts)."""
    return web.Response(
        status=status,
        body=_ENCODER.encode(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )
