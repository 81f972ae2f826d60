"""Bearer-token checks for handlers. Tokens are compared in constant time by TokenStore."""

from __future__ import annotations

from aiohttp import web

from translog.errors import TranslogError
from translog.http.keys import CONFIG, TOKENS
from translog.log.tokens import TokenInfo


def bearer(request: web.Request) -> str | None:
    """The bearer token of a request, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require(request: web.Request, scope: str) -> TokenInfo:
    """The caller's token record; raises AuthError (401) or ForbiddenError (403)."""
    return request.app[TOKENS].authenticate(bearer(request), scope)


def note_payload_read(request: web.Request, index: int) -> None:
    """Self-audit: record that the caller read a committed payload (when events are on)."""
    from translog.http.search import SELF_AUDIT

    audit = request.app.get(SELF_AUDIT)
    if audit is None or not request.app[CONFIG].events.self_audit:
        return
    token = bearer(request)
    name = "anonymous"
    if token:
        try:
            name = request.app[TOKENS].authenticate(token, "read").name
        except TranslogError:
            name = "anonymous"
    audit.read(name, index)
