"""Ingest routes for records born outside translog's SDK (docs/EVENTS.md, one table each):

* ``POST <prefix>/ingest/k8s-audit``: the ``audit.k8s.io/v1`` ``EventList`` the Kubernetes API
  server's webhook backend posts (:mod:`translog.formats.k8s_audit`). Idempotent per
  ``auditID`` and stage: a webhook retry answers the entries of the first attempt.
* ``POST <prefix>/ingest/json-lines``: one JSON object per line, as Fluent Bit, Vector and
  syslog-ng post them (:mod:`translog.formats.json_lines`).

Both need a bearer token with the ``submit`` scope; ``?tenant=`` (default ``default``) and
``?service=`` name the tenant and service of the events. They go through the log's one
submission API (:meth:`translog.log.submission.Submissions.durable`): the same limits, rate
bucket (429), pushback (503), idempotency and durability as ``/add-batch``, counted in
``translog_source_entries_total{source="k8s-audit"|"json-lines"}``. A 200 is sent only once
every entry is durable in a signed tree; a refused request (4xx naming the item or line)
has written nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from aiohttp import web

from translog.errors import MalformedError, TranslogError, UnsupportedMediaTypeError
from translog.formats.batch import Batch
from translog.formats.ingest_common import tenant_and_service
from translog.formats.json_lines import check_content_type, parse_json_lines
from translog.formats.k8s_audit import parse_event_list
from translog.http.auth import require
from translog.http.errors import status_for
from translog.http.keys import CONFIG, SUBMITTER
from translog.http.submit import read_body, response
from translog.log.requests import Answer, Landed, SubmitRequest

K8S_SOURCE = "k8s-audit"
JSON_LINES_SOURCE = "json-lines"


def add_routes(app: web.Application, prefix: str) -> None:
    """Register ``/ingest/k8s-audit`` and ``/ingest/json-lines`` under ``prefix``."""
    app.router.add_post(f"{prefix}/ingest/k8s-audit", post_k8s_audit)
    app.router.add_post(f"{prefix}/ingest/json-lines", post_json_lines)


Parser = Callable[[bytes, str, str, int], Batch]
"""``(body, tenant, service, max_entries) -> Batch``: a format's parser."""


async def post_k8s_audit(request: web.Request) -> web.Response:
    """An ``audit.k8s.io/v1`` EventList: one entry per Event, 200 once all are durable."""
    return await _ingest(request, K8S_SOURCE, "kube-apiserver", _k8s_type, _k8s_parse)


async def post_json_lines(request: web.Request) -> web.Response:
    """JSON lines: one entry per line, 200 once all are durable."""
    return await _ingest(request, JSON_LINES_SOURCE, "json-lines", check_content_type, _jl_parse)


def _k8s_type(content_type: str) -> None:
    if content_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:64]!r}: the audit webhook posts application/json"
        )


def _k8s_parse(body: bytes, tenant: str, service: str, limit: int) -> Batch:
    return parse_event_list(body, tenant=tenant, service=service, max_entries=limit)


def _jl_parse(body: bytes, tenant: str, service: str, limit: int) -> Batch:
    return parse_json_lines(body, tenant=tenant, service=service, max_entries=limit)


async def _ingest(
    request: web.Request,
    source: str,
    default_service: str,
    check_type: Callable[[str], None],
    parse: Parser,
) -> web.Response:
    """Authenticate, read, parse and submit; a refusal is counted and raised (4xx/5xx)."""
    started = time.monotonic()
    submissions = request.app[SUBMITTER]
    try:
        token = require(request, "submit")
        tenant, service = _query(request, default_service)
        check_type(request.content_type)
        server = request.app[CONFIG].server
        body = await read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        entries = parse(body, tenant, service, server.max_batch_entries)
        if len(entries) == 0:
            return response(Answer(200, answer_body([])))
        sub = SubmitRequest(token, entries, batch=True, started=started, source=source)
        return response(Answer(200, answer_body(await submissions.durable(sub))))
    except TranslogError as e:
        submissions.rejected(status_for(e)[1])
        raise


def _query(request: web.Request, default_service: str) -> tuple[str, str]:
    for name in ("tenant", "service"):
        if len(request.query.getall(name, [])) > 1:
            raise MalformedError(f"{name}: given more than once")
    return tenant_and_service(request.query, default_service)


def answer_body(appended: Sequence[Landed]) -> bytes:
    """``{"accepted": n, "duplicates": d, "indexes": [...]}``: entry i's index, in order."""
    indexes = ",".join(str(a.index) for a in appended)
    dups = sum(a.duplicate for a in appended)
    return f'{{"accepted":{len(appended)},"duplicates":{dups},"indexes":[{indexes}]}}'.encode()
