"""The app factory shared by ``translog serve`` and the tests.

``make_app`` wires a :class:`~translog.log.Log` over the given storage into an aiohttp
application: typed ``AppKey`` state, the error middleware, and the route groups
(``submit``: writes; ``read``: checkpoint, tiles, CT API, payloads; ``ops``: metrics, health,
OpenAPI). The log's sequencer and publisher start and stop in a ``cleanup_ctx``, so a SIGTERM
stops accepting, sequences everything accepted, publishes a final checkpoint, and exits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from translog.config import Config
from translog.http import keys, ops, read, submit
from translog.http.errors import error_middleware
from translog.log import Log, LogOptions
from translog.metrics import Metrics
from translog.signing import NoteSigner, TreeHeadSigner
from translog.storage.base import Storage
from translog.tokens import TokenStore


def make_app(
    config: Config,
    *,
    storage: Storage,
    signer: NoteSigner,
    tree_head_signer: TreeHeadSigner | None = None,
    tokens: TokenStore | None = None,
) -> web.Application:
    """Build the application for one log. The log starts when the app starts."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.server.max_body_bytes
    )
    seq = config.sequencer
    log = Log(
        storage,
        config.log.origin,
        signer,
        tree_head_signer,
        LogOptions(
            max_batch_entries=seq.max_batch_entries,
            max_batch_age_ms=seq.max_batch_age_ms,
            max_pending=seq.max_pending,
            publish_interval_ms=config.publisher.interval_ms,
        ),
    )
    app[keys.LOG] = log
    app[keys.CONFIG] = config
    app[keys.METRICS] = Metrics()
    app[keys.TOKENS] = tokens or TokenStore()
    prefix = config.server.prefix
    submit.add_routes(app, prefix)
    read.add_routes(app, prefix)
    ops.add_routes(app, prefix)
    app.cleanup_ctx.append(_run_log)
    return app


async def _run_log(app: web.Application) -> AsyncIterator[None]:
    log = app[keys.LOG]
    await log.start()
    yield
    await log.close()
