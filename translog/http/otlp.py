"""OTLP/HTTP logs: ``POST <prefix>/v1/logs`` (docs/EVENTS.md, "OTLP logs").

An OpenTelemetry exporter (``OTLPLogExporter``, the Collector's ``otlphttp``) posts an
``ExportLogsServiceRequest`` as protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``), optionally ``Content-Encoding: gzip`` (aiohttp inflates it as it
reads, and a body that inflates past ``server.max_body_bytes`` is a 413). It needs a bearer
token with the ``submit`` scope (``headers={"Authorization": "Bearer tl_..."}``).

Each LogRecord becomes one ``translog.event/v1`` entry (:mod:`translog.formats.otlp`),
submitted through the log's one submission API (:meth:`Submissions.durable`: the limits,
rate bucket, idempotency and durability of ``/add-batch``; metrics source ``otlp``). The 200
``ExportLogsServiceResponse`` is sent only once every entry of the request is durable in a
signed tree; records that could not become events are counted in its ``partial_success``.

Errors keep the one error table (:func:`translog.http.errors.status_for`): the status and
headers (``Retry-After`` on 429 and 503, which exporters honour) are those of every route;
only the body differs: a ``google.rpc.Status`` in the request's encoding, as the OTLP
specification asks.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from translog.errors import MalformedError, TooLargeError, TranslogError, UnsupportedMediaTypeError
from translog.formats import otlp
from translog.http.auth import require
from translog.http.errors import error_parts
from translog.http.keys import CONFIG, SUBMITTER
from translog.http.submit import read_body
from translog.log.requests import SubmitRequest

_ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
"""``Content-Encoding`` values taken (aiohttp inflates gzip and deflate as it reads)."""


def add_routes(app: web.Application, prefix: str) -> None:
    """Register ``POST <prefix>/v1/logs`` (answered through ``app[SUBMITTER]``)."""
    app.router.add_post(f"{prefix}/v1/logs", post_logs)


async def post_logs(request: web.Request) -> web.Response:
    """Take an OTLP logs export; answer once all its entries are durable."""
    started = time.monotonic()
    encoding = request.content_type if request.content_type == otlp.JSON else otlp.PROTOBUF
    try:
        token = require(request, "submit")
        encoding = otlp.encoding_of(request.content_type)
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        if coding not in _ENCODINGS:
            raise UnsupportedMediaTypeError(
                f"Content-Encoding {coding[:32]!r}: /v1/logs takes gzip or none"
            )
        server = request.app[CONFIG].server
        try:
            body = await read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        except RequestPayloadError as e:
            raise MalformedError(f"request body could not be decoded: {e}") from e
        message = otlp.parse_request(body, encoding)
        records = otlp.count_records(message)
        if records > server.max_batch_entries:
            raise TooLargeError(
                f"{records} log records exceed the {server.max_batch_entries}-record limit"
            )
        mapped = otlp.map_request(
            message,
            otlp.body_digest(body),
            received_ms=time.time_ns() // 1_000_000,
            max_payload_bytes=server.max_payload_bytes,
        )
        if mapped.batch.payloads:
            sub = SubmitRequest(
                token,
                mapped.batch,
                batch=True,
                started=started,
                source=otlp.SOURCE,
                request_key=mapped.request_key,
            )
            await request.app[SUBMITTER].durable(sub)
        return _answer(200, otlp.response_body(mapped, encoding), encoding, {})
    except TranslogError as e:
        status, kind, reason, headers = error_parts(e)
        request.app[SUBMITTER].rejected(kind)
        return _answer(status, otlp.status_body(status, reason, encoding), encoding, headers)


def _answer(status: int, body: bytes, encoding: str, headers: dict[str, str]) -> web.Response:
    headers = {**headers, "Content-Type": encoding, "Cache-Control": "no-store"}
    return web.Response(status=status, body=body, headers=headers)
