"""The witness HTTP server: c2sp.org/tlog-witness ``add-checkpoint`` plus the gossip routes.

Routes (under ``witness.prefix``):

* ``POST /add-checkpoint``: the body of PROTOCOLS §6; 200 with ``text/plain`` cosignature
  lines, 409 with ``text/x.tlog.size``, and 400/403/404/422 with a JSON reason (see
  :mod:`translog.witness.core` for which check gives which status).
* ``GET /healthz``: ``{"status": "ok", "name", "logs"}``.
* ``/gossip/v1/…`` (:mod:`translog.http.gossip`) when gossip is configured; the witness's view
  is its state: the latest checkpoint it cosigned per log, with its own cosignature.

Every ``add-checkpoint`` runs on one worker thread: the state update (check, write, fsync) is
one LMDB transaction, and the reply is sent only after it committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

from translog.core.signing import NoteVerifier
from translog.errors import MalformedError
from translog.gossip.core import Gossip
from translog.http import gossip as gossip_routes
from translog.http.errors import error_middleware
from translog.witness.core import Witness
from translog.witness.protocol import MAX_REQUEST_SIZE

WITNESS = web.AppKey("translog.witness", Witness)
_EXECUTOR = web.AppKey("translog.witness.executor", concurrent.futures.ThreadPoolExecutor)
log = logging.getLogger("translog.witness")


class WitnessView:
    """The witness's gossip view: its state (it keeps no tree, so it proves nothing)."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness

    def verifiers(self) -> Mapping[str, NoteVerifier]:
        """The logs this witness follows."""
        return self.witness.logs

    def latest(self) -> Mapping[str, bytes]:
        """The latest cosigned checkpoint per log, with the witness's cosignature."""
        return {o: r.note for o, r in self.witness.state.records().items()}

    async def prove(
        self, origin: str, old_size: int, new_size: int
    ) -> tuple[tuple[bytes, ...], bytes] | None:
        """A witness keeps only size and root: no proofs."""
        del origin, old_size, new_size
        return None


def make_witness_app(
    witness: Witness, *, prefix: str = "", gossip: Gossip | None = None
) -> web.Application:
    """The witness application; gossip (if any) runs while the app runs."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_REQUEST_SIZE)
    app[WITNESS] = witness
    app.router.add_post(f"{prefix}/add-checkpoint", post_add_checkpoint)
    app.router.add_get(f"{prefix}/healthz", get_healthz)
    if gossip is not None:
        gossip_routes.add_routes(app, gossip, prefix)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tl-witness")
    app[_EXECUTOR] = executor
    task = None
    gossip = app.get(gossip_routes.GOSSIP)
    if gossip is not None and gossip.peers:
        task = asyncio.create_task(gossip.run(), name="translog-gossip")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    executor.shutdown(wait=True)
    app[WITNESS].state.close()


async def post_add_checkpoint(request: web.Request) -> web.Response:
    """tlog-witness add-checkpoint."""
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge as e:
        raise MalformedError(f"request body exceeds {MAX_REQUEST_SIZE} bytes") from e
    loop = asyncio.get_running_loop()
    witness = request.app[WITNESS]
    # shield: a client that hangs up must not leave a committed state without its answer
    # being computed; the update itself is atomic either way.
    result = await asyncio.shield(
        loop.run_in_executor(request.app[_EXECUTOR], witness.add_checkpoint, body)
    )
    return web.Response(body=result, content_type="text/plain", charset="utf-8")


async def get_healthz(request: web.Request) -> web.Response:
    """Liveness and the logs witnessed."""
    witness = request.app[WITNESS]
    body = {
        "status": "ok",
        "name": witness.name,
        "vkey": witness.signer.vkey,
        "logs": sorted(witness.logs),
    }
    return web.Response(text=json.dumps(body), content_type="application/json")
