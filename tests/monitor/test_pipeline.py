"""HTTP/1.1 pipelining for bulk tile reads, and its fallback to the regular transport."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.integration.logservers import ThreadedServer
from tests.monitor.fakelog import MaliciousServer
from tests.monitor.helpers import make_log
from translog.client.transport import Transport
from translog.core.tiles import TileRef
from translog.errors import NotFoundError, PipelineError
from translog.monitor.pipeline import Pipeline
from translog.monitor.rebuild import in_order


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = MaliciousServer(make_log(256 * 40)).start()
    yield s
    s.stop()


def _refs() -> list[TileRef]:
    return [r for b in range(40) for r in (TileRef(0, b, 256, True), TileRef(0, b, 256))]


async def test_pipelined_answers_match_and_keep_order(server: MaliciousServer) -> None:
    expected = server.log.resources()
    p = Pipeline(server.url, None, connections=3)
    t = Transport(server.url, timeout=5, retries=0, session=None)
    try:
        got = [(ref, data) async for ref, data in in_order(t, _refs(), None, 16, p)]
    finally:
        await p.close()
        await t.close()
    assert [ref for ref, _ in got] == _refs()
    assert all(data == expected[ref.path] for ref, data in got)
    assert server.requests == 80  # nothing fetched twice


async def test_error_status_fails_one_request_only(server: MaliciousServer) -> None:
    p = Pipeline(server.url, None, connections=1)
    try:
        with pytest.raises(PipelineError, match="http 404"):
            await p.get("/tile/0/999", 8192)
        assert len(await p.get("/tile/0/000", 8192)) == 8192  # same connection, still usable
    finally:
        await p.close()


async def test_fallback_when_the_server_closes_connections() -> None:
    """Every answer says Connection: close; the transport fetches what the pipeline lost."""
    data = {f"/tile/0/{i:03d}": bytes([i]) * 8192 for i in range(20)}
    hits = [0]

    async def handler(request: web.Request) -> web.Response:
        hits[0] += 1
        return web.Response(body=data[request.path], headers={"Connection": "close"})

    app = web.Application()
    app.router.add_get("/tile/0/{n}", handler)
    srv = ThreadedServer(app).start()
    p = Pipeline(srv.url, None, connections=2)
    t = Transport(srv.url, timeout=5, retries=1, session=None)
    refs = [TileRef(0, i, 256) for i in range(20)]
    try:
        got = [(r.path, d) async for r, d in in_order(t, refs, None, 8, p)]
    finally:
        await p.close()
        await t.close()
        srv.stop()
    assert got == [(r.path, data["/" + r.path]) for r in refs]


async def test_not_found_surfaces_through_the_transport(server: MaliciousServer) -> None:
    p = Pipeline(server.url, None)
    t = Transport(server.url, timeout=5, retries=0, session=None)
    try:
        with pytest.raises(NotFoundError):
            async for _ in in_order(t, [TileRef(0, 999, 256)], None, 4, p):
                pass
    finally:
        await p.close()
        await t.close()
