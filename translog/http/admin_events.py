"""Admin routes for audit events: erasure, legal holds, retention. Every call is logged.

All need a token with the ``admin`` scope whose tenants cover what it touches.

* ``POST <prefix>/admin/erase`` ``{"index": N | "indexes": [N, ...] | "tenant": T,
  "subject": S, "reason": "..."}``: erase the payloads and salts of those entries (or of every
  entry of tenant ``T`` naming subject ``S``). The erasure is first appended to the log as a
  ``translog.erasure.entry`` / ``translog.erasure.subject`` event (who, when, why, which
  entries and their leaf hashes; a subject only as a hash), then the payloads are erased. 409
  when an entry is under a legal hold. Answers ``{"erased", "entries", "skipped",
  "erasure_entry"}``.
* ``GET <prefix>/admin/holds``; ``POST <prefix>/admin/holds`` ``{"name", "tenant", "subject"?,
  "reason"}``; ``DELETE <prefix>/admin/holds/<name>``.
* ``POST <prefix>/admin/retention/run``: erase every payload past its retention now (the
  server also does this every ``events.retention_interval_s``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any

from aiohttp import web

from translog.core.jsonfields import strict_json
from translog.core.merkle import leaf_hash
from translog.errors import ForbiddenError, MalformedError, NotFoundError
from translog.http.auth import require
from translog.http.keys import CONFIG, LOG
from translog.log import retention as rt
from translog.log.self_audit import admin_event, now_ms, ranges
from translog.log.tokens import TokenInfo

log = logging.getLogger("translog.events")

MAX_BODY = 64 * 1024
MAX_INDEXES = 10_000
_LOCK = web.AppKey("translog.admin_events_lock", asyncio.Lock)


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the admin routes."""
    app[_LOCK] = asyncio.Lock()
    r = app.router
    r.add_post(prefix + "/admin/erase", post_erase)
    r.add_get(prefix + "/admin/holds", get_holds)
    r.add_post(prefix + "/admin/holds", post_hold)
    r.add_delete(prefix + "/admin/holds/{name}", delete_hold)
    r.add_post(prefix + "/admin/retention/run", post_retention)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise MalformedError(f"request body exceeds {MAX_BODY} bytes")
    try:
        obj = strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedError(f"request body: not JSON: {str(e)[:80]}") from None
    if not isinstance(obj, dict):
        raise MalformedError("request body: expected a JSON object")
    return obj


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 1024:
        raise MalformedError(f"{name}: expected a string of 1-1024 characters")
    return value


def _check_tenants(token: TokenInfo, tenants: set[str]) -> None:
    for tenant in sorted(tenants):
        if not token.allows_tenant(tenant):
            raise ForbiddenError(f"token {token.name!r} is not scoped to tenant {tenant!r}")


async def record_admin(
    app: web.Application,
    action: str,
    token: str,
    details: dict[str, Any],
    *,
    reason: str | None = None,
    targets: list[tuple[str, str]] | None = None,
) -> int:
    """Append an admin event and wait until it is durable; return its index."""
    payload = admin_event(
        action,
        ("token", token),
        tenant=app[CONFIG].events.self_tenant,
        details=details,
        reason=reason,
        targets=targets or [],
    )
    appended = await app[LOG].append(payload, committed=True)
    return appended.index


async def post_erase(request: web.Request) -> web.Response:
    """Erase payloads of entries, or of every entry naming a subject."""
    token = require(request, "admin")
    body = await _body(request)
    unknown = sorted(set(body) - {"index", "indexes", "tenant", "subject", "reason"})
    if unknown:
        raise MalformedError(f"{unknown[0][:32]}: unknown field")
    reason = _text(body, "reason")
    assert reason is not None
    app = request.app
    the_log = app[LOG]
    size = the_log.size
    config = app[CONFIG].events
    subject = _text(body, "subject", required=False)
    details: dict[str, Any] = {"reason": reason}
    if subject is not None:
        tenant = _text(body, "tenant")
        assert tenant is not None
        _check_tenants(token, {tenant})
        indexes = await asyncio.to_thread(
            rt.subject_entries,
            the_log.storage,
            tenant,
            subject,
            size=size,
            self_tenant=config.self_tenant,
        )
        action, kind = "translog.erasure.subject", "subject"
        details |= {"tenant": tenant, "subject_sha256": rt.subject_hash(tenant, subject)}
    else:
        indexes = _indexes(body)
        action, kind = "translog.erasure.entry", "request"
    async with app[_LOCK]:
        holds = await asyncio.to_thread(rt.holds, the_log.storage)
        plan = await asyncio.to_thread(
            rt.plan_erasure, the_log.storage, indexes, size=size, in_force=holds
        )
        _check_tenants(token, plan.tenants())
        rt.refuse_held(plan)
        entries = the_log.entries
        details["entries"] = ranges(plan.indexes)
        details["leaf_hashes"] = [
            base64.b64encode(leaf_hash(entries(i, i + 1)[0].leaf)).decode()
            for i in plan.indexes[:100]
        ]
        details["count"] = len(plan.indexes)
        at = now_ms()
        erasure_entry = await record_admin(app, action, token.name, details, reason=reason)
        erased = await the_log.on_writer(
            lambda: rt.apply_erasure(
                the_log.storage,
                plan,
                by=token.name,
                reason=reason,
                at=at,
                erasure_entry=erasure_entry,
                kind=kind,
            )
        )
    log.info("erased %d payloads (entry %d, by %s)", erased, erasure_entry, token.name)
    return web.json_response(
        {
            "erased": erased,
            "entries": ranges(plan.indexes),
            "skipped": {str(i): why for i, why in plan.skipped.items()},
            "erasure_entry": erasure_entry,
        }
    )


def _indexes(body: dict[str, Any]) -> list[int]:
    if "index" in body and "indexes" in body:
        raise MalformedError("give index or indexes, not both")
    values = [body["index"]] if "index" in body else body.get("indexes")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_INDEXES:
        raise MalformedError(
            f"index: missing (give index, indexes (1-{MAX_INDEXES}), or tenant and subject)"
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise MalformedError("index: expected non-negative integers")
    return list(values)


async def get_holds(request: web.Request) -> web.Response:
    """The legal holds in force."""
    token = require(request, "admin")
    found = await asyncio.to_thread(rt.holds, request.app[LOG].storage)
    visible = [h.to_json() for h in found if token.allows_tenant(h.tenant)]
    return web.json_response({"holds": visible})


async def post_hold(request: web.Request) -> web.Response:
    """Put a legal hold in force."""
    token = require(request, "admin")
    body = await _body(request)
    unknown = sorted(set(body) - {"name", "tenant", "subject", "reason"})
    if unknown:
        raise MalformedError(f"{unknown[0][:32]}: unknown field")
    name = rt.check_hold_name(body.get("name"))
    tenant = _text(body, "tenant")
    assert tenant is not None
    _check_tenants(token, {tenant})
    hold = rt.Hold(
        name,
        tenant,
        _text(body, "subject", required=False),
        _text(body, "reason") or "",
        token.name,
        now_ms(),
    )
    app = request.app
    the_log = app[LOG]
    async with app[_LOCK]:
        existing = await asyncio.to_thread(rt.holds, the_log.storage)
        if any(h.name == name for h in existing):
            raise MalformedError(f"name: a hold named {name!r} is in force; release it first")
        details: dict[str, Any] = {"name": name, "tenant": tenant}
        if hold.subject is not None:
            details["subject_sha256"] = rt.subject_hash(tenant, hold.subject)
        entry = await record_admin(
            app, "translog.hold.set", token.name, details, reason=hold.reason
        )
        value = json.dumps(hold.to_json(), sort_keys=True).encode()
        await the_log.on_writer(lambda: the_log.storage.index_write([(rt.hold_key(name), value)]))
    return web.json_response({"hold": hold.to_json(), "entry": entry})


async def delete_hold(request: web.Request) -> web.Response:
    """Release a legal hold."""
    token = require(request, "admin")
    name = rt.check_hold_name(request.match_info["name"])
    app = request.app
    the_log = app[LOG]
    async with app[_LOCK]:
        existing = {h.name: h for h in await asyncio.to_thread(rt.holds, the_log.storage)}
        hold = existing.get(name)
        if hold is None:
            raise NotFoundError(f"no legal hold named {name!r}")
        _check_tenants(token, {hold.tenant})
        entry = await record_admin(
            app, "translog.hold.release", token.name, {"name": name, "tenant": hold.tenant}
        )
        await the_log.on_writer(lambda: the_log.storage.index_write((), [rt.hold_key(name)]))
    return web.json_response({"released": name, "entry": entry})


async def post_retention(request: web.Request) -> web.Response:
    """Erase every payload past its retention now."""
    token = require(request, "admin")
    _check_tenants(token, {"*"})
    result = await run_retention(request.app, token.name)
    return web.json_response(result)


async def run_retention(app: web.Application, by: str) -> dict[str, Any]:
    """One retention sweep; logs a ``translog.retention.sweep`` event when it erases."""
    config = app[CONFIG].events
    periods = rt.retention_periods(config.retention, config.retention_by_category)
    the_log = app[LOG]
    if not periods:
        return {"erased": 0, "by_category": {}, "entry": None}
    async with app[_LOCK]:
        holds = await asyncio.to_thread(rt.holds, the_log.storage)
        plan, counts = await asyncio.to_thread(
            rt.retention_plan,
            the_log.storage,
            periods,
            now_ms=now_ms(),
            size=the_log.size,
            in_force=holds,
        )
        if not plan.indexes:
            return {"erased": 0, "by_category": {}, "entry": None, "held": len(plan.held)}
        details = {
            "by_category": counts,
            "entries": ranges(plan.indexes)[:1000],
            "count": len(plan.indexes),
            "held": len(plan.held),
            "periods_days": {k: v // 86_400_000 for k, v in periods.items()},
        }
        reason = "retention period elapsed"
        entry = await record_admin(app, "translog.retention.sweep", by, details, reason=reason)
        at = now_ms()
        erased = await the_log.on_writer(
            lambda: rt.apply_erasure(
                the_log.storage,
                plan,
                by=by,
                reason=reason,
                at=at,
                erasure_entry=entry,
                kind="retention",
            )
        )
    log.info("retention: erased %d payloads (entry %d)", erased, entry)
    return {"erased": erased, "by_category": counts, "entry": entry, "held": len(plan.held)}
