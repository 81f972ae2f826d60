"""Operations: index, Prometheus metrics, health, the OpenAPI document, and access logging.

Routes (under ``server.prefix``, like every other route, so the OpenAPI ``servers`` URL is the
prefix):

* ``GET /``: a small JSON index: origin, note vkey, RFC 6962 key, links.
* ``GET /metrics``: Prometheus text format 0.0.4. Needs a ``read`` token when the tree is
  private, since it reveals the tree size.
* ``GET /healthz``: 200 ``{"status": "ok", ...}``; 503 ``{"status": "unhealthy",
  "reasons": [...]}`` once the newest published checkpoint is older than three publish
  intervals, or when the sequencer stopped. It is a status report, not an error, so it is
  built here rather than raised. Sizes are left out when the tree is private.
* ``GET /openapi.json``: ``translog/http/openapi.json`` with ``servers`` set to the prefix.

:class:`AccessLogger` writes one JSON object per request. It never logs headers (so no
``Authorization`` or ``Idempotency-Key``), and of the query string only values of known
harmless parameters; any other value is replaced by ``"<redacted>"``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.resources
import json
import os
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

import translog.log.sequencer
from translog.errors import ConfigError
from translog.http.auth import require
from translog.http.keys import CONFIG, HEALTH_CHECKS, LOG, METRICS
from translog.log.sequencer import Log

HEALTH_STALE_INTERVALS = 3
"""/healthz fails once the published checkpoint is older than this many publish intervals."""
_PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LOGGED_QUERY = frozenset(
    {
        "first",
        "second",
        "start",
        "end",
        "tree_size",
        "leaf_index",
        "hash",
        "leaf_only",
        "wait",
        "kind",
    }
)
_STATS_COUNTERS = (
    ("submitted", "translog_submitted_entries_total", "entries accepted into the pending pool"),
    ("pushbacks", "translog_pushbacks_total", "submissions refused because the pool was full"),
    ("published", "translog_checkpoints_published_total", "checkpoints published"),
    ("storage_full", "translog_storage_full_total", "batches refused because storage is full"),
    (
        "lease_refused",
        "translog_lease_refused_total",
        "batches refused (503) because this instance did not hold the writer lease",
    ),
    (
        "withheld",
        "translog_checkpoints_withheld_total",
        "checkpoints not published because the witness quorum was not met",
    ),
)


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the operations routes under ``prefix``; load the OpenAPI document."""
    document = _openapi_body(prefix, events=app[CONFIG].events.enabled)

    async def get_openapi(request: web.Request) -> web.Response:
        """The OpenAPI 3.1 document describing every route."""
        return web.Response(
            body=document,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache"},
        )

    r = app.router
    r.add_get(f"{prefix}/", get_index)
    r.add_get(f"{prefix}/metrics", get_metrics)
    r.add_get(f"{prefix}/healthz", get_healthz)
    r.add_get(f"{prefix}/openapi.json", get_openapi)


def _openapi_body(prefix: str, *, events: bool = False) -> bytes:
    """The packaged OpenAPI document with its server URL set to ``prefix``, as JSON bytes.

    With ``events``, the audit-event routes (``translog/http/openapi-events.json``) are added.
    """
    try:
        raw = importlib.resources.files("translog.http").joinpath("openapi.json").read_bytes()
        document = json.loads(raw)
        if events:
            extra = json.loads(
                importlib.resources.files("translog.http")
                .joinpath("openapi-events.json")
                .read_bytes()
            )
            document["paths"].update(extra["paths"])
            document["components"]["schemas"].update(extra["schemas"])
    except (OSError, ValueError) as e:
        raise ConfigError(f"the packaged openapi.json is missing or invalid: {e}") from e
    document["servers"] = [{"url": prefix or "/"}]
    return json.dumps(document, indent=1).encode("utf-8")


# ------------------------------------------------------------------------------ handlers


async def get_index(request: web.Request) -> web.Response:
    """A small JSON index: who this log is, its public keys, and where to look."""
    log = request.app[LOG]
    prefix = request.app[CONFIG].server.prefix
    body: dict[str, Any] = {"origin": log.origin, "vkey": log.signer.vkey}
    if log.tree_head_signer is not None:
        body["ct_log_id"] = _b64(log.tree_head_signer.log_id)
        body["ct_public_key"] = _b64(log.tree_head_signer.public_der())
    body["links"] = {
        name: prefix + path
        for name, path in (
            ("checkpoint", "/checkpoint"),
            ("tiles", "/tile/{L}/{N}[.p/{W}]"),
            ("entry_bundles", "/tile/entries/{N}[.p/{W}]"),
            ("entries", "/entries/{index}"),
            ("ct", "/ct/v1/"),
            ("openapi", "/openapi.json"),
            ("metrics", "/metrics"),
            ("healthz", "/healthz"),
        )
    }
    return _json(body, 200, "no-cache")


async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text: the log's gauges, counters and histograms, then the app registry."""
    if not request.app[CONFIG].server.public_tree:
        require(request, "read")
    lines = render_log_metrics(request.app[LOG], translog.log.sequencer.now_ms())
    text = "\n".join(lines) + "\n" + request.app[METRICS].render()
    return web.Response(
        body=text.encode("utf-8"),
        headers={"Content-Type": _PROMETHEUS_TYPE, "Cache-Control": "no-store"},
    )


async def get_healthz(request: web.Request) -> web.Response:
    """200 while the log is healthy; 503 with the reasons once it is not."""
    log = request.app[LOG]
    config = request.app[CONFIG]
    now = translog.log.sequencer.now_ms()
    reasons = health_problems(log, config.publisher.interval_ms, now)
    for check in request.app.get(HEALTH_CHECKS, ()):
        reasons += check()
    body: dict[str, Any] = {"status": "unhealthy" if reasons else "ok"}
    published = log.published
    body["checkpoint_age_ms"] = None if published is None else now - published.timestamp_ms
    if config.server.public_tree:
        body["size"] = log.size
        body["published_size"] = None if published is None else published.size
    if reasons:
        body["reasons"] = reasons
    return _json(body, 503 if reasons else 200, "no-store")


def health_problems(log: Log, interval_ms: int, now_ms: int) -> list[str]:
    """Why the log is unhealthy (an empty list when it is healthy)."""
    reasons: list[str] = []
    if log.fatal is not None:
        reasons.append("the sequencer stopped after a storage failure")
    # The log's own publication (with an object store, the store's lag is its own check).
    published = log.local_published
    limit = HEALTH_STALE_INTERVALS * interval_ms
    if published is None:
        reasons.append("no checkpoint has been published yet")
    elif now_ms - published.timestamp_ms > limit:
        age = now_ms - published.timestamp_ms
        reasons.append(f"the newest checkpoint is {age} ms old, limit is {limit} ms")
    return reasons


# ------------------------------------------------------------------------------- metrics


def render_log_metrics(log: Log, now_ms: int) -> list[str]:
    """Prometheus lines for the log itself, with exact integer values."""
    published = log.published
    age = 0.0 if published is None else max(0, now_ms - published.timestamp_ms) / 1000
    lines: list[str] = []
    lines += _sample("translog_tree_size", "gauge", "leaves in the durable tree", log.size)
    lines += _sample(
        "translog_published_tree_size",
        "gauge",
        "size of the newest published checkpoint",
        0 if published is None else published.size,
    )
    lines += _sample(
        "translog_pending_entries", "gauge", "entries accepted but not yet durable", log.pending
    )
    lines += _sample(
        "translog_checkpoint_age_seconds",
        "gauge",
        "age of the newest published checkpoint",
        round(age, 3),
    )
    lines += _sample(
        "translog_sequencer_fatal",
        "gauge",
        "1 once the sequencer stopped after a storage failure",
        int(log.fatal is not None),
    )
    for key, name, help_text in _STATS_COUNTERS:
        lines += _sample(name, "counter", help_text, log.stats[key])
    lines += log.batch_sizes.render()
    lines += log.integration_seconds.render()
    return lines


def _sample(name: str, kind: str, help_text: str, value: float) -> list[str]:
    """HELP, TYPE and one unlabelled sample (``repr`` keeps big integers exact)."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value!r}"]


# ---------------------------------------------------------------------------- access log


class AccessLogger(AbstractAccessLogger):
    """Structured access log: one JSON object per request, with no secrets.

    Use it with ``web.run_app(app, access_log_class=AccessLogger)`` or ``AppRunner``.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Emit one JSON line for a finished request."""
        self.logger.info(access_line(request, response, time))


class BufferedAccessLogger(AccessLogger):
    """The access log ``translog serve`` uses: the same lines, written to stderr in batches.

    Going through ``logging`` (a record, a formatter, a locked handler, one unbuffered
    ``write`` per request) cost about as much as answering a small request. Lines are instead
    kept in :data:`ACCESS_LINES` and written with one ``write`` every
    :data:`ACCESS_FLUSH_SECONDS` (or 64 KiB), and when the server stops. A crash loses at most
    that long of access log, never a log entry.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Queue one JSON line for a finished request."""
        ACCESS_LINES.add(access_line(request, response, time))


_quote = json.encoder.encode_basestring_ascii


def access_line(request: web.BaseRequest, response: web.StreamResponse, time: float) -> str:
    """One access log line: the compact JSON object ``json.dumps`` would give, built directly."""
    remote = request.remote
    query = _safe_query(request) if request.query_string else {}
    return (
        f'{{"remote":{"null" if remote is None else _quote(remote)},'
        f'"method":{_quote(request.method)},"path":{_quote(request.path[:512])},'
        f'"query":{json.dumps(query, separators=(",", ":")) if query else "{}"},'
        f'"status":{response.status},"bytes":{response.body_length},'
        f'"duration_ms":{round(time * 1000, 3)!r},'
        f'"authenticated":{"true" if "Authorization" in request.headers else "false"}}}'
    )


ACCESS_FLUSH_SECONDS = 0.05
"""Longest time an access log line waits before it is written."""


class LineBuffer:
    """Text lines for a file descriptor, written in batches from the event loop."""

    def __init__(self, fd: int = 2, delay: float = ACCESS_FLUSH_SECONDS, limit: int = 1 << 16):
        self.fd = fd
        self._delay = delay
        self._limit = limit
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        """Queue a line (without its newline); written within the delay."""
        self._lines.append(line)
        self._size += len(line) + 1
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Write every queued line now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data = memoryview(("\n".join(self._lines) + "\n").encode("utf-8", "replace"))
        self._lines.clear()
        self._size = 0
        while data:
            try:
                written = os.write(self.fd, data)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return  # stderr is gone; nothing else can report it
            data = data[written:]


ACCESS_LINES = LineBuffer()
"""The access log lines of this process, for :class:`BufferedAccessLogger`."""


def _safe_query(request: web.BaseRequest) -> dict[str, str]:
    """Query parameters, with values of unknown names redacted (they could be secrets)."""
    return {
        key: value[:128] if key in _LOGGED_QUERY else "<redacted>"
        for key, value in request.query.items()
    }


# ------------------------------------------------------------------------------- helpers


def _json(body: dict[str, Any], status: int, cache: str) -> web.Response:
    """A JSON response with the given status and ``Cache-Control``."""
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
        headers={"Content-Type": "application/json", "Cache-Control": cache},
    )


def _b64(data: bytes) -> str:
    """Standard padded base64 text."""
    return base64.b64encode(data).decode("ascii")
