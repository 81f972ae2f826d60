"""The HTTP side of ``translog mirror``: the read path of a mirror's verified copy.

:func:`mirror_app` serves ``/checkpoint``, ``/tile/…`` and ``/tile/entries/…`` from the
:class:`~translog.publish.mirror.Mirror`'s verified storage, with the read path's headers, plus
``/healthz`` and ``/metrics``. Nothing unverified is ever served: the checkpoint is the newest
one the mirror verified, and a tile beyond its size is a 404. Errors are raised as translog
errors and answered by the one table in translog.http.errors.
"""

from __future__ import annotations

from aiohttp import web

from translog.core.tiles import (
    TILE_WIDTH,
    check_tile_available,
    encode_bundle,
    parse_tile_path,
    read_tile,
)
from translog.errors import NotFoundError
from translog.http.errors import error_middleware
from translog.publish import layout
from translog.publish.mirror import Mirror

MIRROR = web.AppKey("translog.mirror", Mirror)


def mirror_app(mirror: Mirror) -> web.Application:
    """The read path of ``mirror``'s verified copy, plus /healthz and /metrics."""
    app = web.Application(middlewares=[error_middleware])
    app[MIRROR] = mirror
    app.router.add_get("/checkpoint", get_checkpoint)
    app.router.add_get("/tile/{path:.+}", get_tile)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/metrics", get_metrics)
    return app


async def get_checkpoint(request: web.Request) -> web.Response:
    """The newest verified checkpoint; 404 before the first verified round."""
    published = request.app[MIRROR].published
    if published is None:
        raise NotFoundError("nothing verified yet")
    return web.Response(
        body=published.note,
        headers={"Content-Type": layout.CHECKPOINT_TYPE, "Cache-Control": layout.CHECKPOINT_CACHE},
    )


async def get_tile(request: web.Request) -> web.Response:
    """A hash tile or entry bundle of the verified tree (400 malformed, 404 beyond its size)."""
    mirror = request.app[MIRROR]
    ref = parse_tile_path("tile/" + request.match_info["path"])
    published = mirror.published
    check_tile_available(ref, 0 if published is None else published.size)
    if ref.entries:
        start = ref.index * TILE_WIDTH
        body = encode_bundle([e.leaf for e in mirror.storage.get_entries(start, start + ref.width)])
    else:
        body = read_tile(ref, mirror.storage)
    return web.Response(
        body=body, headers={"Content-Type": layout.TILE_TYPE, "Cache-Control": layout.TILE_CACHE}
    )


async def get_healthz(request: web.Request) -> web.Response:
    """``ok`` (200), or ``unhealthy`` (503) with the reasons: halted, or the last round failed."""
    mirror = request.app[MIRROR]
    reasons = []
    if mirror.halted is not None:
        reasons.append(f"mirror halted: {mirror.halted}")
    if mirror.last_error is not None:
        reasons.append(f"last round failed: {mirror.last_error}")
    body: dict[str, object] = {"status": "unhealthy" if reasons else "ok", "size": mirror.size}
    if reasons:
        body["reasons"] = reasons
    return web.json_response(
        body, status=503 if reasons else 200, headers={"Cache-Control": "no-store"}
    )


async def get_metrics(request: web.Request) -> web.Response:
    """The mirror's size, rounds and halted flag in the Prometheus text format."""
    mirror = request.app[MIRROR]
    lines = [
        "# HELP translog_mirror_size verified tree size",
        "# TYPE translog_mirror_size gauge",
        f"translog_mirror_size {mirror.size}",
        "# HELP translog_mirror_rounds completed rounds",
        "# TYPE translog_mirror_rounds counter",
        f"translog_mirror_rounds {mirror.rounds}",
        "# HELP translog_mirror_halted 1 once a fork, rollback or bad tile stopped it",
        "# TYPE translog_mirror_halted gauge",
        f"translog_mirror_halted {int(mirror.halted is not None)}",
    ]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
