"""Gossip routes, shared by witnesses and monitors (:mod:`translog.gossip.core`).

* ``GET <prefix>/gossip/v1/checkpoints``: ``{"checkpoints": [<signed note>...]}``, the latest
  checkpoint this party verified per log.
* ``GET <prefix>/gossip/v1/consistency?origin=O&old=N&new=M``: ``{"old_size", "new_size",
  "old_root", "proof"}``, a consistency proof in this party's view of the log's tree, and the
  root it has at ``old``; 404 when it has no such tree (a witness keeps no tree).
* ``GET <prefix>/gossip/v1/status``: peers, alerts and misbehaviour files written.

Peers check everything they receive themselves; these answers are claims, not evidence.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from translog.errors import MalformedError
from translog.gossip.core import API, Gossip
from translog.witness.protocol import parse_size

GOSSIP = web.AppKey("translog.gossip", Gossip)


def add_routes(app: web.Application, gossip: Gossip, prefix: str) -> None:
    """Register the gossip routes under ``prefix`` and keep ``gossip`` in the app."""
    app[GOSSIP] = gossip
    app.router.add_get(f"{prefix}{API}/checkpoints", get_checkpoints)
    app.router.add_get(f"{prefix}{API}/consistency", get_consistency)
    app.router.add_get(f"{prefix}{API}/status", get_status)


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def get_checkpoints(request: web.Request) -> web.Response:
    """Our latest verified checkpoints."""
    return _json(request.app[GOSSIP].checkpoints_answer())


async def get_consistency(request: web.Request) -> web.Response:
    """A consistency proof from our view of a log's tree."""
    q = request.query
    unknown = sorted(set(q) - {"origin", "old", "new"})
    if unknown:
        raise MalformedError(f"unknown query parameter {unknown[0][:32]!r}; use origin, old, new")
    try:
        origin, old, new = q["origin"], q["old"], q["new"]
    except KeyError as e:
        raise MalformedError(f"missing query parameter {e.args[0]}") from e
    answer = await request.app[GOSSIP].proof_answer(
        origin, parse_size(old, "old"), parse_size(new, "new")
    )
    return _json(answer)


async def get_status(request: web.Request) -> web.Response:
    """Peers, alerts and misbehaviour files."""
    return _json(request.app[GOSSIP].status())
