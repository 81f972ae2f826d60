"""Bearer-token checks for handlers. Tokens are compared in constant time by TokenStore."""

from __future__ import annotations

from aiohttp import web

from translog.http.keys import TOKENS
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
