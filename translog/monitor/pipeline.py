"""HTTP/1.1 pipelining for the bulk reads of a recomputation (tiles and entry bundles).

A full audit makes two GETs per 256 entries. Through aiohttp each costs the client about
200 µs of CPU, as much as hashing the 256 entries. :class:`Pipeline` keeps a few keep-alive
connections and writes requests ahead of the responses on each (RFC 9112 §9.3.2: a server
answers pipelined requests in order), parsing each response with two stream reads. It only
does what the tlog-tiles read path needs: ``GET``, identity encoding, ``Content-Length`` or
chunked bodies, 200 answers. Anything else (an error status, a closed connection, a malformed
answer) fails that request with ``PipelineError`` and the caller retries it through the
regular :class:`~translog.client.transport.Transport`, which has the retries, backoff and
error mapping.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from urllib.parse import urlsplit

from translog import __version__
from translog.errors import PipelineError

_MAX_HEAD = 16 << 10


class _Connection:
    """One keep-alive connection with requests in flight, answered in order."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._p = pipeline
        self._pending: collections.deque[tuple[asyncio.Future[bytes], int]] = collections.deque()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._opening: asyncio.Task[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
        self.broken = False
        self._wakeup = asyncio.Event()

    async def get(self, path: str, limit: int) -> bytes:
        if self.broken:
            raise PipelineError("connection closed")
        if self._writer is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._p.open())
            try:
                reader, writer = await asyncio.shield(self._opening)
            except (OSError, TimeoutError) as e:
                self.broken = True
                raise PipelineError(f"connect: {e}") from e
            if self._writer is None:
                self._writer = writer
                self._reader_task = asyncio.ensure_future(self._read_loop(reader))
        assert self._writer is not None
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending.append((fut, limit))
        self._wakeup.set()
        self._writer.write(self._p.request_bytes(path))
        return await fut

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                await self._wakeup.wait()
                while self._pending:
                    fut, limit = self._pending[0]
                    status, body, close = await _read_response(reader, limit)
                    self._pending.popleft()
                    if not fut.done():
                        if status == 200:
                            fut.set_result(body)
                        else:
                            # The caller retries through the transport, which maps statuses.
                            fut.set_exception(PipelineError(f"http {status}"))
                    if close:
                        raise PipelineError("the server closed the connection")
                self._wakeup.clear()
        except (PipelineError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError) as e:  # fmt: skip
            self._fail(e if isinstance(e, PipelineError) else PipelineError(str(e) or "closed"))
        except asyncio.CancelledError:
            self._fail(PipelineError("cancelled"))
            raise

    def _fail(self, e: PipelineError) -> None:
        self.broken = True
        while self._pending:
            fut, _ = self._pending.popleft()
            if not fut.done():
                fut.set_exception(e)
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, PipelineError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes, bool]:
    """One response: status, body, and whether the server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise PipelineError("response head too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise PipelineError(f"malformed status line {lines[0][:60]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    if headers.get("content-encoding", "identity").lower() != "identity":
        raise PipelineError("unexpected content encoding")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader, limit)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length > limit:
            raise PipelineError(f"answer of {length} bytes exceeds {limit}")
        body = await reader.readexactly(length)
    else:
        raise PipelineError("response without a length")
    return status, body, close


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(out)
        if len(out) + size > limit:
            raise PipelineError(f"answer exceeds {limit} bytes")
        out += await reader.readexactly(size)
        await reader.readexactly(2)


class Pipeline:
    """A few pipelined keep-alive connections to one log (see the module docstring)."""

    def __init__(
        self, url: str, auth: str | None, *, connections: int = 4, timeout: float = 30.0
    ) -> None:
        """Fetch from ``url`` (the log's base URL) with the bearer token ``auth``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PipelineError(f"cannot pipeline to {url[:80]!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        host = parts.netloc.rsplit("@", 1)[-1]
        head = [
            f"Host: {host}",
            f"User-Agent: translog-monitor/{__version__}",
            "Accept-Encoding: identity",
        ]
        if auth is not None:
            head.append(f"Authorization: Bearer {auth}")
        self._head = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self._timeout = timeout
        self._conns = [_Connection(self) for _ in range(connections)]
        self._next = 0

    def request_bytes(self, path: str) -> bytes:
        """The bytes of ``GET path``."""
        return f"GET {self._prefix}{path} HTTP/1.1\r\n".encode("latin-1") + self._head

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A new connection."""
        context = ssl.create_default_context() if self._https else None
        return await asyncio.wait_for(
            asyncio.open_connection(
                self._host,
                self._port,
                ssl=context,
                server_hostname=self._host if self._https else None,
                limit=1 << 20,
            ),
            self._timeout,
        )

    async def get(self, path: str, limit: int) -> bytes:
        """``GET path`` on the next connection (round robin); ``PipelineError`` on failure."""
        for _ in range(len(self._conns)):
            i = self._next
            self._next = (i + 1) % len(self._conns)
            conn = self._conns[i]
            if conn.broken:
                self._conns[i] = conn = _Connection(self)
            try:
                return await asyncio.wait_for(conn.get(path, limit), self._timeout)
            except TimeoutError as e:
                raise PipelineError(f"GET {path}: timed out") from e
        raise PipelineError("no connection")  # pragma: no cover

    async def close(self) -> None:
        """Close every connection."""
        for conn in self._conns:
            await conn.close()
