"""HTTP to one log: retries with backoff, ``Retry-After``, size limits and error mapping.

This is the only module of the client that touches aiohttp, and the only place its errors are
mapped: transport failures (aiohttp errors, timeouts, oversized answers) become
:class:`~translog.errors.NetworkError`. Unexpected statuses map to the translog error classes:
400/413/415/422 the ``MalformedError`` family, 401 ``AuthError``, 403 ``ForbiddenError``, 404
``NotFoundError``, 409 ``ConflictError``, 429/503/507 ``PushbackError``.

Requests are retried on transport errors, 5xx and 429 with exponential backoff and full jitter,
honouring ``Retry-After``. Only idempotent requests are sent: reads, and submissions that carry
idempotency keys, so a retry never adds an entry twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from translog import __version__
from translog.client.answers import json_object
from translog.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    MalformedError,
    NetworkError,
    NotFoundError,
    PushbackError,
    TooLargeAnswerError,
    TooLargeError,
    TranslogError,
)

MAX_RESPONSE_BYTES = 64 << 20
"""Largest answer read from the log (receipts, JSON); tiles and bundles have tighter limits."""
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_STATUS_ERRORS: dict[int, type[TranslogError]] = {
    400: MalformedError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: TooLargeError,
    415: MalformedError,
    422: MalformedError,
}
_PUSHBACK_STATUSES = frozenset({429, 503, 507})
_USER_AGENT = f"translog-client/{__version__}"


@dataclass(frozen=True, slots=True)
class Response:
    """An answer read in full: status, headers and body."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class Transport:
    """Requests to the log at ``url`` (its base URL, prefix included).

    ``timeout`` bounds each request and ``retries`` the retries after a failed one. A
    ``session`` passed in is used and not closed; otherwise one is created on first use.
    """

    backoff_base = 0.1
    """First retry delay bound in seconds; doubles per attempt (full jitter)."""
    backoff_max = 10.0
    """Largest delay between retries, ``Retry-After`` included."""

    def __init__(
        self, url: str, *, timeout: float, retries: int, session: aiohttp.ClientSession | None
    ) -> None:
        """Check the settings; no request is made yet."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"log url must start with http:// or https://, got {url[:64]!r}")
        if timeout <= 0 or retries < 0:
            raise ConfigError(
                f"timeout must be positive and retries >= 0, got {timeout}, {retries}"
            )
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._retries = retries
        self._session = session
        self._own_session = session is None

    async def close(self) -> None:
        """Close the HTTP session if this transport created it."""
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200,),
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: str | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> Response:
        """Send with retries on transport errors, 5xx and 429; map other statuses to errors.

        Only idempotent requests come here: reads, and submissions with idempotency keys.
        """
        all_headers = dict(headers or {})
        if auth is not None:
            all_headers["Authorization"] = f"Bearer {auth}"
        attempt = 0
        while True:
            try:
                resp = await self._send(
                    method, path, params=params, data=data, headers=all_headers, limit=limit
                )
            except TooLargeAnswerError:
                raise
            except NetworkError:
                if attempt >= self._retries:
                    raise
                delay = self.backoff(attempt, None)
            else:
                if resp.status in ok:
                    return resp
                if resp.status not in _RETRY_STATUSES or attempt >= self._retries:
                    raise _status_error(method, path, resp)
                delay = self.backoff(attempt, _retry_after(resp))
            attempt += 1
            await asyncio.sleep(delay)

    async def get_json(
        self,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        auth: str | None = None,
    ) -> dict[str, Any]:
        """``GET path`` and the JSON object it answers (``what`` names it in errors)."""
        resp = await self.request("GET", path, params=params, auth=auth)
        return json_object(resp.body, what)

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a server's Retry-After wins when it is given."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": _USER_AGENT})
        return self._session

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str],
        limit: int,
    ) -> Response:
        """One HTTP exchange; every transport failure becomes a NetworkError."""
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with self._http().request(
                method,
                self.url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as resp:
                body = await _read_limited(resp, limit, f"{method} {path}")
                return Response(resp.status, resp.headers, body)
        except (aiohttp.ClientError, TimeoutError) as e:
            detail = str(e) or type(e).__name__
            raise NetworkError(f"{method} {path}: {detail}") from e


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole (decompressed) body, or NetworkError once it exceeds ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise TooLargeAnswerError(f"{what}: answer of {resp.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > limit:
            raise TooLargeAnswerError(f"{what}: answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(resp: Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _status_error(method: str, path: str, resp: Response) -> TranslogError:
    """The translog error for an unexpected HTTP status, with the log's reason."""
    reason = resp.body[:300].decode("utf-8", "replace").strip()
    with contextlib.suppress(ValueError):
        body = json.loads(resp.body)
        if isinstance(body, dict) and isinstance(body.get("reason"), str):
            reason = body["reason"]
    message = f"{method} {path}: http {resp.status}: {reason or 'no reason given'}"
    if resp.status in _PUSHBACK_STATUSES:
        return PushbackError(message, retry_after=_retry_after(resp) or 1.0)
    cls = _STATUS_ERRORS.get(resp.status, NetworkError)
    return cls(message)
