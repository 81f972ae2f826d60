"""Self-audit on the HTTP side: the app's event collector and the reads it records.

When ``[events] enabled`` and ``self_audit`` are on, :func:`translog.http.search.setup` puts a
:class:`~translog.log.self_audit.SelfAudit` under :data:`SELF_AUDIT`; handlers record what
callers did through :func:`self_audit` (searches) and :func:`note_payload_read` (payload reads
on the read path), and the events background task submits what it collected.
"""

from __future__ import annotations

from aiohttp import web

from translog.errors import TranslogError
from translog.http.auth import bearer
from translog.http.keys import CONFIG, TOKENS
from translog.log.self_audit import SelfAudit

SELF_AUDIT = web.AppKey("translog.self_audit", SelfAudit)


def self_audit(request: web.Request) -> SelfAudit | None:
    """The app's self-audit collector, or None when self-audit is off."""
    if not request.app[CONFIG].events.self_audit:
        return None
    return request.app.get(SELF_AUDIT)


def note_payload_read(request: web.Request, index: int) -> None:
    """Record that the caller read a committed payload (when self-audit is on)."""
    audit = self_audit(request)
    if audit is None:
        return
    token = bearer(request)
    name = "anonymous"
    if token:
        try:
            name = request.app[TOKENS].authenticate(token, "read").name
        except TranslogError:
            name = "anonymous"
    audit.read(name, index)
