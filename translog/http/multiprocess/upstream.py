"""A small HTTP/1.1 client for a worker's bodiless requests to the log process.

A worker proxies reads (GET, HEAD) to the log process's ordinary app over a Unix socket; the
read path is most of what it proxies, so it does not pay for aiohttp's client there.
"""

from __future__ import annotations

import asyncio

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)
"""Headers that belong to one connection, never forwarded."""
NOT_FORWARDED_BACK = HOP_BY_HOP | {"date", "server"}
"""Headers of the log process's answer a worker does not pass on (it sets its own)."""


class Upstream:
    """HTTP/1.1 to the log process's Unix socket for bodiless requests (GET, HEAD).

    The read path is most of what a worker proxies, and aiohttp's client costs about as much
    per request as the answer itself; this keeps a pool of keep-alive connections and parses
    only what the log process's aiohttp server sends (a Content-Length or chunked body).
    """

    def __init__(self, path: str, limit: int = 64) -> None:
        self._path = path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._limit = limit

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """(status, headers, body); one retry on a fresh connection if a kept one failed."""
        for attempt in (0, 1):
            fresh = not self._idle or attempt == 1
            conn = await asyncio.open_unix_connection(self._path) if fresh else self._idle.pop()
            try:
                answer, reusable = await self._exchange(conn, method, target, headers)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn[1].close()
                if fresh:
                    raise
                continue
            if reusable and len(self._idle) < self._limit:
                self._idle.append(conn)
            else:
                conn[1].close()
            return answer
        raise ConnectionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _exchange(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        target: str,
        headers: list[tuple[str, str]],
    ) -> tuple[tuple[int, list[tuple[str, str]], bytes], bool]:
        reader, writer = conn
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers]
        if not any(k.lower() == "host" for k, _ in headers):
            lines.append("Host: translog.internal")  # HTTP/1.1 requires one
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *fields = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        out: list[tuple[str, str]] = []
        length: int | None = None
        chunked = False
        reusable = True
        for field in fields:
            name, _, value = field.partition(":")
            name, value = name.strip(), value.strip()
            low = name.lower()
            if low == "content-length":
                length = int(value)
            elif low == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif low == "connection":
                reusable = value.lower() != "close"
            if low not in NOT_FORWARDED_BACK:
                out.append((name, value))
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif chunked:
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")  # no trailers from aiohttp
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif length is not None:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()
            reusable = False
        return (status, out, body), reusable

    def close(self) -> None:
        """Close the kept connections."""
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()
