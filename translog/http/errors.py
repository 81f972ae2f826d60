"""The only place where translog errors become HTTP statuses.

Every error response is JSON: ``{"error": "<kind>", "reason": "<what failed>"}``. Storage
errors never echo their message to clients (it may name paths); they are logged instead.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from translog.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
    PushbackError,
    RateLimitedError,
    RequestTimeoutError,
    StorageError,
    StorageFullError,
    TooLargeError,
    TranslogError,
    UnsupportedMediaTypeError,
    VerificationError,
)

log = logging.getLogger("translog.http")


# Most specific first.
STATUS: list[tuple[type[TranslogError], int, str]] = [
    (TooLargeError, 413, "too_large"),
    (UnsupportedMediaTypeError, 415, "unsupported_media_type"),
    (RequestTimeoutError, 408, "request_timeout"),
    (RateLimitedError, 429, "rate_limited"),
    (MalformedError, 400, "malformed"),
    (AuthError, 401, "unauthorized"),
    (ForbiddenError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (VerificationError, 422, "verification_failed"),
    (PushbackError, 503, "pushback"),
    (StorageFullError, 507, "storage_full"),
    (StorageError, 500, "storage_error"),
    (ConfigError, 500, "config_error"),
]


def status_for(error: TranslogError) -> tuple[int, str]:
    """(HTTP status, error kind) for a translog error."""
    for cls, status, kind in STATUS:
        if isinstance(error, cls):
            return status, kind
    return 500, "internal_error"


KINDS: dict[str, type[TranslogError]] = {kind: cls for cls, _, kind in STATUS}
"""Error kind → the class it names: how a worker rebuilds an error the log process raised."""


def error_fields(error: TranslogError) -> list[object]:
    """``[kind, reason, retry_after]``: an error as the log process sends it to a worker."""
    retry = error.retry_after if isinstance(error, PushbackError) else 0.0
    return [status_for(error)[1], str(error), retry]


def error_from(kind: str, reason: str, retry_after: float) -> TranslogError:
    """The error :func:`error_fields` described, as the class of its kind (so it gets the
    same status and headers); an unknown kind is an internal error."""
    cls = KINDS.get(kind, StorageError)
    if issubclass(cls, PushbackError):
        return cls(reason, retry_after=retry_after)
    return cls(reason)


def error_parts(error: TranslogError) -> tuple[int, str, str, dict[str, str]]:
    """``(status, kind, reason, headers)`` of the answer to ``error``: what every error body
    says, whatever its encoding (JSON here; ``google.rpc.Status`` on the OTLP routes)."""
    status, kind = status_for(error)
    if status >= 500 and not isinstance(error, PushbackError | StorageFullError):
        log.error("internal error: %s", error)
        reason = "internal error; see the server log"
    else:
        reason = str(error)
    headers: dict[str, str] = {}
    if isinstance(error, PushbackError):
        headers["Retry-After"] = str(max(1, round(error.retry_after * (1 + random.random()))))
    if isinstance(error, AuthError):
        headers["WWW-Authenticate"] = 'Bearer realm="translog"'
    return status, kind, reason, headers


def error_response(error: TranslogError) -> web.Response:
    """The JSON response for ``error``, with the headers its status needs."""
    status, kind, reason, headers = error_parts(error)
    if isinstance(error, ConflictError) and error.known_size is not None:
        return web.Response(
            status=status, text=f"{error.known_size}\n", content_type="text/x.tlog.size"
        )
    body = json.dumps({"error": kind, "reason": reason})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map TranslogError to its status; turn aiohttp's own HTTP errors into JSON too."""
    try:
        coding = request.headers.get("Transfer-Encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            # aiohttp would decode the chunks and silently ignore any other coding, storing
            # bytes other than those the client meant.
            raise MalformedError(f"Transfer-Encoding {coding[:40]!r}: only chunked is supported")
        return await handler(request)
    except TranslogError as e:
        return error_response(e)
    except RequestPayloadError as e:
        # A body that cannot be decoded (bad Content-Encoding data, broken chunking) is the
        # client's mistake, wherever a handler happened to read it.
        return error_response(MalformedError(f"request body could not be read: {e}"))
    except web.HTTPException as e:
        if e.status < 400:
            raise
        body = json.dumps(
            {"error": e.reason.lower().replace(" ", "_"), "reason": e.text or e.reason}
        )
        headers = {k: v for k, v in e.headers.items() if k.lower() != "content-type"}
        return web.Response(
            status=e.status, text=body, content_type="application/json", headers=headers
        )
