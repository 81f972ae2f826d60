"""Submission routes: ``POST <prefix>/add`` (one entry) and ``POST <prefix>/add-batch``.

The one pair of submission handlers, in both servers. They authenticate, read and parse the
request (:mod:`translog.formats.batch`) and hand it to the app's :class:`Submitter`: the log's
submission API (:class:`translog.log.submission.Submissions`) in the single-process server,
the fast path in a worker of the multi-process one (which sends everything else on to the log
process's ``Submissions``). Every refusal is a 4xx/5xx JSON ``{"error", "reason"}`` from the
one error table in :mod:`translog.http.errors`, counted in
``translog_submissions_rejected_total``.

Both need a bearer token with the ``submit`` scope (compared in constant time by the token
store) and answer JSON.

* ``POST /add``: the body is the payload, of any content type; an empty body is a valid,
  zero-length payload. Optional header ``Idempotency-Key`` (1-255 printable ASCII characters).
* ``POST /add-batch``: ``application/x-ndjson`` (one JSON value per line; blank lines are
  skipped) or ``application/json`` (one array). Each value is a base64 string, the payload, or
  an object ``{"payload_b64": "...", "idempotency_key": "..."}`` (the key is optional).

Query parameters (anything else is a 400):

* ``wait=durable`` (default): 200 with a receipt (:mod:`translog.formats.receipt`) once the
  entries are durable, whose checkpoint was signed right after their batch's commit.
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
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from translog.errors import MalformedError, RequestTimeoutError, TooLargeError, TranslogError
from translog.formats.batch import check_key, parse_batch, single
from translog.http.auth import require
from translog.http.errors import status_for
from translog.http.keys import CONFIG, SUBMITTER
from translog.log.requests import KINDS, WAITS, Answer, SubmitRequest

_QUERY = frozenset({"wait", "kind"})


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the submission routes (``app[SUBMITTER]`` answers them)."""
    app.router.add_post(f"{prefix}/add", post_add)
    app.router.add_post(f"{prefix}/add-batch", post_add_batch)


async def post_add(request: web.Request) -> web.Response:
    """Submit one payload: the request body."""
    started = time.monotonic()
    try:
        token = require(request, "submit")
        wait, kind = _query(request)
        key = _header_key(request)
        server = request.app[CONFIG].server
        payload = await read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        sub = SubmitRequest(token, single(payload, key), wait, kind, False, started)
        return response(await request.app[SUBMITTER].submit(sub))
    except TranslogError as e:
        request.app[SUBMITTER].rejected(status_for(e)[1])
        raise


async def post_add_batch(request: web.Request) -> web.Response:
    """Submit a batch of payloads (NDJSON or a JSON array of base64 payloads)."""
    started = time.monotonic()
    try:
        token = require(request, "submit")
        wait, kind = _query(request)
        if "Idempotency-Key" in request.headers:
            raise MalformedError(
                "Idempotency-Key header: not used by add-batch; give each entry an idempotency_key"
            )
        server = request.app[CONFIG].server
        body = await read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        entries = parse_batch(body, request.content_type, server.max_batch_entries)
        sub = SubmitRequest(token, entries, wait, kind, True, started)
        return response(await request.app[SUBMITTER].submit(sub))
    except TranslogError as e:
        request.app[SUBMITTER].rejected(status_for(e)[1])
        raise


def response(answer: Answer) -> web.Response:
    """A compact JSON response that no cache keeps (receipts carry salts)."""
    return web.Response(
        status=answer.status,
        body=answer.body,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise MalformedError(f"{name}: given {len(values)} times")
    return values[0] if values else None


def _query(request: web.Request) -> tuple[str, str | None]:
    """``(wait, kind)`` from the query string; unknown parameters and values are a 400."""
    if not request.query:
        return "durable", None
    unknown = sorted(set(request.query) - _QUERY)
    if unknown:
        raise MalformedError(f"unknown query parameter {unknown[0][:32]!r}; use wait or kind")
    wait = _one(request, "wait")
    if wait is None:
        wait = "durable"
    if wait not in WAITS:
        raise MalformedError(f"wait: expected durable, published or 0, got {wait[:32]!r}")
    kind = _one(request, "kind")
    if kind is not None and kind not in KINDS:
        raise MalformedError(f"kind: expected committed or inline, got {kind[:32]!r}")
    return wait, kind


def _header_key(request: web.Request) -> str | None:
    values = request.headers.getall("Idempotency-Key", [])
    if len(values) > 1:
        raise MalformedError(f"Idempotency-Key header: given {len(values)} times")
    return check_key(values[0], "Idempotency-Key header") if values else None


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
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
