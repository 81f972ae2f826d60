"""The worker's HTTP/1.1 client for reads proxied to the log process
(translog.http.multiprocess.worker)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from translog.http.multiprocess.worker import Upstream


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream", "X-A": "1"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for part in (b"first ", b"", b"second " * 1000, b"third"):
        if part:
            await resp.write(part)
    await resp.write_eof()
    return resp


async def _plain(request: web.Request) -> web.Response:
    return web.Response(body=b"plain:" + request.headers.get("X-Echo", "").encode(), status=201)


async def _gzipped(request: web.Request) -> web.Response:
    resp = web.Response(body=b"z" * 5000, headers={"Cache-Control": "public, immutable"})
    resp.enable_compression(web.ContentCoding.gzip)
    return resp


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[Upstream, web.AppRunner]]:
    app = web.Application()
    app.router.add_get("/chunked", _chunked)
    app.router.add_get("/plain", _plain)
    app.router.add_get("/gzip", _gzipped)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = str(tmp_path / "s.sock")
    await web.UnixSite(runner, path).start()
    client = Upstream(path)
    try:
        yield client, runner
    finally:
        client.close()
        await runner.cleanup()


async def test_bodies_by_length_chunked_and_compressed(
    upstream: tuple[Upstream, web.AppRunner],
) -> None:
    client, _ = upstream
    status, headers, body = await client.request("GET", "/plain", [("X-Echo", "hi")])
    assert status == 201 and body == b"plain:hi"
    assert not any(k.lower() in ("content-length", "date", "server") for k, _ in headers)
    status, headers, body = await client.request("GET", "/chunked", [])
    assert status == 200 and body == b"first " + b"second " * 1000 + b"third"
    assert ("X-A", "1") in headers
    assert not any(k.lower() == "transfer-encoding" for k, _ in headers)
    status, headers, body = await client.request("GET", "/gzip", [("Accept-Encoding", "gzip")])
    assert ("Content-Encoding", "gzip") in headers and gzip.decompress(body) == b"z" * 5000
    status, _, body = await client.request("HEAD", "/plain", [])
    assert status == 201 and body == b""
    status, _, body = await client.request("GET", "/nowhere", [])
    assert status == 404


async def test_connections_are_kept_and_a_dead_one_is_replaced(
    upstream: tuple[Upstream, web.AppRunner],
) -> None:
    client, runner = upstream
    for _ in range(3):
        assert (await client.request("GET", "/plain", []))[0] == 201
    assert len(client._idle) == 1  # one connection, reused
    _, writer = client._idle[0]
    writer.transport.abort()  # the kept connection dies (the server restarted, say)
    assert (await client.request("GET", "/plain", []))[2] == b"plain:"
    await runner.cleanup()
    with pytest.raises(OSError):
        await client.request("GET", "/plain", [])
