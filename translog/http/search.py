"""Audit-event routes (when ``[events] enabled``): search and one event, each with its proof.

* ``GET <prefix>/events/search?tenant=T[&actor=][&action=][&target=][&outcome=][&category=]
  [&id=][&from=][&to=][&limit=50][&order=desc|asc][&cursor=N]`` → ``translog-search/v1``
* ``GET <prefix>/events/<index>`` → the same shape with one result (erased ones included)

Both need a ``read`` token scoped to the tenant (:meth:`TokenInfo.allows_tenant`). Every result
carries the leaf, its inclusion proof and the payload and salt (or the erasure record), all
against the one signed checkpoint in the answer, so a client (or the explorer page) verifies
each result with the log's vkey alone. ``from``/``to`` bound the log's own leaf timestamps
(RFC 3339 or ms, both inclusive). Each request is itself recorded (self-audit).

This module also wires the events machinery into the app (:func:`setup`): the sequencer's
indexer, catching the indexes up at startup, and the background task that submits self-audit
events, spooled offline admin actions and retention sweeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from translog.core.leaf import KIND_COMMITTED
from translog.core.merkle import leaf_hash
from translog.errors import ForbiddenError, MalformedError, NotFoundError, TranslogError
from translog.formats.event_schema import QUERY_FIELDS, Query, parse_time, try_parse_event
from translog.http import admin_events, explorer
from translog.http.audit import SELF_AUDIT, self_audit
from translog.http.auth import require
from translog.http.keys import CONFIG, LOG, SUBMISSIONS
from translog.log import event_index as evindex
from translog.log.self_audit import SelfAudit, take_spool
from translog.log.sequencer import Log, SignedCheckpoint
from translog.log.tokens import TokenInfo
from translog.storage.base import StoredEntry

log = logging.getLogger("translog.events")

DATA_DIR = web.AppKey("translog.data_dir", Path)
"""Set by ``serve`` when the log has a data directory (for the offline admin spool)."""
_SEARCH_PARAMS = frozenset({*QUERY_FIELDS, "tenant", "from", "to", "limit", "order", "cursor"})
FLUSH_INTERVAL = 1.0
"""Seconds between self-audit submissions."""


def setup(app: web.Application, prefix: str) -> None:
    """Wire audit events into ``app`` (called by ``make_app`` when events are enabled)."""
    config = app[CONFIG].events
    the_log = app[LOG]
    if config.index:
        caught = evindex.catch_up(the_log.storage)
        if caught:
            log.warning("indexed %d entries sequenced while indexing was off", caught)
        the_log.indexer = evindex.EventIndexer()
    app[SELF_AUDIT] = SelfAudit(config.self_tenant)
    app.router.add_get(prefix + "/events/search", get_search)
    app.router.add_get(prefix + "/events/{index}", get_event)
    admin_events.add_routes(app, prefix)
    explorer.add_routes(app, prefix)
    app.cleanup_ctx.append(_background)


def token_for_tenant(request: web.Request, tenant: str) -> TokenInfo:
    """The caller's ``read`` token, which must be scoped to ``tenant`` (403 otherwise)."""
    token = require(request, "read")
    if not token.allows_tenant(tenant):
        raise ForbiddenError(f"token {token.name!r} is not scoped to tenant {tenant!r}")
    return token


# -- handlers ----------------------------------------------------------------------------


async def get_search(request: web.Request) -> web.Response:
    """One page of matching events, each with its inclusion proof."""
    q = request.query
    unknown = sorted(set(q) - _SEARCH_PARAMS)
    if unknown:
        raise MalformedError(
            f"unknown query parameter {unknown[0][:32]!r}; use {', '.join(sorted(_SEARCH_PARAMS))}"
        )
    values = {name: _one(request, name) for name in _SEARCH_PARAMS}
    tenant = values.pop("tenant")
    if tenant is None:
        raise MalformedError("tenant: missing (every search is within one tenant)")
    query = Query(
        tenant,
        {k: v for k, v in values.items() if k in QUERY_FIELDS and v is not None},
        None if values["from"] is None else parse_time(values["from"], "from"),
        None if values["to"] is None else parse_time(values["to"], "to"),
    )
    limit = _int(values["limit"], "limit", 50)
    cursor = None if values["cursor"] is None else _int(values["cursor"], "cursor", 0)
    order = values["order"] or "desc"
    token = token_for_tenant(request, tenant)
    the_log = request.app[LOG]
    checkpoint = head(the_log)
    page = await asyncio.to_thread(
        evindex.search,
        the_log.storage,
        query,
        size=checkpoint.size,
        limit=limit,
        cursor=cursor,
        order=order,
    )
    results = [result_json(the_log, hit, checkpoint.size) for hit in page.hits]
    audit = self_audit(request)
    if audit is not None:
        audit.record(
            "translog.events.search",
            token.name,
            {"query": query.to_json(), "results": len(results)},
            targets=_subjects(query.filters),
            category="data_access",
        )
    body = {
        "format": "translog-search/v1",
        "query": query.to_json(),
        "checkpoint": checkpoint.note.decode(),
        "tree_size": checkpoint.size,
        "results": results,
        "next_cursor": page.next_cursor,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def get_event(request: web.Request) -> web.Response:
    """One entry as a search result: its event (or erasure record) and inclusion proof."""
    text = request.match_info["index"]
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise MalformedError(f"entry index must be a non-negative integer, got {text[:32]!r}")
    index = int(text)
    the_log = request.app[LOG]
    checkpoint = head(the_log)
    if index >= checkpoint.size:
        raise NotFoundError(f"entry {index} is not in the log (size {checkpoint.size})")
    entry = the_log.entries(index, index + 1)[0]
    payload = evindex.entry_payload(entry.leaf, entry.payload)
    erasure = None
    event = None
    if payload is None:
        erasure = evindex.erasure_record(the_log.storage, index) or {}
        tenant = erasure.get("tenant")
    else:
        event = try_parse_event(payload)
        tenant = None if event is None else event["tenant"]
    if not isinstance(tenant, str):
        raise NotFoundError(f"entry {index} is not an audit event")
    token = token_for_tenant(request, tenant)
    hit = evindex.Hit(entry, event, erasure)
    audit = self_audit(request)
    if audit is not None:
        audit.record(
            "translog.events.search",
            token.name,
            {"query": {"tenant": tenant, "index": index}, "results": 1},
            category="data_access",
        )
    body = {
        "format": "translog-search/v1",
        "query": {"tenant": tenant, "index": index},
        "checkpoint": checkpoint.note.decode(),
        "tree_size": checkpoint.size,
        "results": [result_json(the_log, hit, checkpoint.size)],
        "next_cursor": None,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


# -- helpers -----------------------------------------------------------------------------


def head(the_log: Log) -> SignedCheckpoint:
    """The checkpoint search answers are proved against (``Log.head``); NotFoundError while
    an object store has accepted none yet."""
    checkpoint = the_log.head
    if checkpoint is None:
        raise NotFoundError("no checkpoint has been published yet")
    return checkpoint


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def result_json(the_log: Log, hit: evindex.Hit, size: int) -> dict[str, Any]:
    """A result: leaf, proof, and the payload and salt, or the erasure record."""
    entry: StoredEntry = hit.entry
    committed = len(entry.leaf) > 9 and entry.leaf[9] == KIND_COMMITTED
    out: dict[str, Any] = {
        "index": entry.index,
        "leaf": _b64(entry.leaf),
        "leaf_hash": _b64(leaf_hash(entry.leaf)),
        "timestamp": evindex.timestamp_of(entry.leaf),
        "inclusion_proof": [_b64(h) for h in the_log.inclusion_proof(entry.index, size)],
    }
    if hit.erasure is not None or (committed and entry.payload is None):
        out["status"] = "erased"
        out["erasure"] = dict(hit.erasure or {})
        return out
    out["status"] = "present" if committed else "inline"
    out["event"] = hit.event
    if committed and entry.payload is not None and entry.salt is not None:
        out["payload"] = _b64(entry.payload)
        out["salt"] = _b64(entry.salt)
    return out


def _subjects(filters: Mapping[str, str]) -> list[tuple[str, str]]:
    """A search for a person names them as a target, so erasing them erases the search too."""
    return [("subject", filters[k]) for k in ("actor", "target") if k in filters]


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise MalformedError(f"{name}: given {len(values)} times")
    return values[0] if values else None


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise MalformedError(f"{name}: expected a non-negative integer, got {text[:32]!r}")
    return int(text)


# -- background: self-audit, offline admin spool ----------------------------------------


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_flush_loop(app), name="translog-events")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await flush(app)


async def _flush_loop(app: web.Application) -> None:
    interval = app[CONFIG].events.retention_interval_s
    next_sweep = time.monotonic() + min(interval, 60)
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await flush(app)
        except TranslogError as e:
            log.error("couldn't record self-audit events: %s", e)
        if interval and time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + interval
            try:
                await admin_events.run_retention(app, "retention")
            except TranslogError as e:
                log.error("retention sweep failed: %s", e)


async def flush(app: web.Application) -> int:
    """Submit queued self-audit events and spooled admin actions; wait until durable."""
    payloads = app[SELF_AUDIT].drain()
    claimed: Path | None = None
    data_dir = app.get(DATA_DIR)
    if data_dir is not None:
        claimed, spooled = take_spool(data_dir)
        payloads += spooled
    if not payloads:
        return 0
    await app[SUBMISSIONS].record(payloads)
    if claimed is not None:
        claimed.unlink(missing_ok=True)
    return len(payloads)
