"""The app factory shared by ``translog serve`` and the tests.

``make_app`` wires a :class:`~translog.log.sequencer.Log` over the given storage into an aiohttp
application: typed ``AppKey`` state, the error middleware, and the route groups
(``submit``: writes; ``read``: checkpoint, tiles, CT API, payloads; ``ops``: metrics, health,
OpenAPI). The log's sequencer and publisher start and stop in a ``cleanup_ctx``, so a SIGTERM
stops accepting, sequences everything accepted, publishes a final checkpoint, and exits.

:func:`run_server` is what ``translog serve`` runs: it binds, reports the bound port (and
writes the ready file) only once requests are accepted, and shuts down gracefully on SIGTERM
or SIGINT.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from translog.config import Config
from translog.core.ct import TreeHeadSigner
from translog.core.policy import WitnessPolicy
from translog.core.signing import NoteSigner
from translog.errors import ConfigError
from translog.http import ingest, keys, ops, otlp, read, search, submit
from translog.http.errors import error_middleware
from translog.ingest.relp import RelpListener
from translog.ingest.syslog import SyslogListener, server_context
from translog.log.sequencer import Log, LogOptions
from translog.log.submission import Submissions
from translog.log.tokens import TokenStore
from translog.metrics import Metrics
from translog.storage.base import Storage
from translog.witness.client import Cosigner, publication_step

COSIGNER = web.AppKey("translog.cosigner", Cosigner)
SYSLOG = web.AppKey("translog.syslog", SyslogListener)
"""The syslog-over-TLS listener, when ``[syslog] listen`` is set (its ``port`` once started)."""
RELP = web.AppKey("translog.relp", RelpListener)
"""The RELP-over-TLS listener, when ``[syslog] relp_listen`` is set."""


def make_app(
    config: Config,
    *,
    storage: Storage,
    signer: NoteSigner,
    tree_head_signer: TreeHeadSigner | None = None,
    tokens: TokenStore | None = None,
    witness_policy: WitnessPolicy | None = None,
    data_dir: Path | None = None,
) -> web.Application:
    """Build the application for one log. The log starts when the app starts.

    With ``witness_policy`` (its witnesses need URLs), every published checkpoint is first
    sent to the witnesses (:mod:`translog.witness.client`), and published with their
    cosignatures; under ``witnesses.require_quorum`` only once the quorum is met.
    """
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
            verify_entries_on_start=config.storage.verify_entries_on_start,
        ),
    )
    app[keys.LOG] = log
    if witness_policy is not None:
        cosigner = Cosigner(
            witness_policy, log.consistency_proof, timeout=config.witnesses.timeout_ms / 1000
        )
        log.cosign = publication_step(cosigner, require_quorum=config.witnesses.require_quorum)
        app[COSIGNER] = cosigner
    app[keys.CONFIG] = config
    app[keys.METRICS] = Metrics()
    app[keys.TOKENS] = tokens or TokenStore()
    app[keys.SUBMISSIONS] = app[keys.SUBMITTER] = Submissions(log, config, app[keys.METRICS])
    prefix = config.server.prefix
    submit.add_routes(app, prefix)
    read.add_routes(app, prefix)
    ops.add_routes(app, prefix)
    ingest.add_routes(app, prefix)
    otlp.add_routes(app, prefix)
    app.cleanup_ctx.append(_run_log)
    if config.syslog.listen or config.syslog.relp_listen:
        _add_syslog(app, config, data_dir or Path.cwd())
    if config.events.enabled:
        if data_dir is not None:
            app[search.DATA_DIR] = data_dir
        search.setup(app, prefix)
    return app


async def _run_log(app: web.Application) -> AsyncIterator[None]:
    log = app[keys.LOG]
    await log.start()
    yield
    await log.close()
    await app[keys.SUBMISSIONS].close()  # after the log has drained: promises are settled
    if COSIGNER in app:
        await app[COSIGNER].close()


def _add_syslog(app: web.Application, config: Config, data_dir: Path) -> None:
    """The syslog and RELP listeners: started once the log runs, closed before the log
    closes (so every message they read is sequenced in the final checkpoint)."""
    s = config.syslog
    context = server_context(
        data_dir / s.tls_cert, data_dir / s.tls_key, data_dir / s.client_ca if s.client_ca else None
    )
    listeners: list[tuple[SyslogListener, str]] = []
    if s.listen:
        app[SYSLOG] = SyslogListener(app[keys.SUBMISSIONS], s, context)
        listeners.append((app[SYSLOG], s.listen))
    if s.relp_listen:
        app[RELP] = RelpListener(app[keys.SUBMISSIONS], s, context)
        listeners.append((app[RELP], s.relp_listen))

    async def run(app: web.Application) -> AsyncIterator[None]:
        started: list[SyslogListener] = []
        try:
            for listener, address in listeners:
                await listener.start(*parse_listen(address))
                started.append(listener)
            yield
        finally:
            await asyncio.gather(*(listener.close() for listener in started))

    app.cleanup_ctx.append(run)


# -- serving ---------------------------------------------------------------------------------

_log = logging.getLogger("translog.serve")
T = TypeVar("T")

SHUTDOWN_TIMEOUT = 30.0
"""Seconds a graceful shutdown waits for requests in progress before closing them."""


def parse_listen(text: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"listen address {text!r}: expected HOST:PORT with a port of 0-65535")
    return host, int(port_text)


def run_event_loop(main: Coroutine[Any, Any, T], event_loop: str) -> T:
    """Run ``main`` to completion on ``event_loop`` (``server.event_loop``).

    "uvloop" runs it on uvloop's libuv loop when uvloop is installed (it is a dependency on
    Linux), else on asyncio's loop with a warning; "asyncio" always on asyncio's.
    """
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            _log.warning('server.event_loop = "uvloop", but uvloop is not installed: asyncio')
        else:
            result: T = uvloop.run(main)
            return result
    return asyncio.run(main)


def configure_logging() -> None:
    """Server logs on stderr; access logs as one bare JSON object per line."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    access = logging.getLogger("translog.access")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    atexit.register(ops.ACCESS_LINES.flush)
    logging.getLogger("aiohttp.server").addFilter(drop_client_protocol_errors)


def drop_client_protocol_errors(record: logging.LogRecord) -> bool:
    """Keep aiohttp's tracebacks for malformed requests out of the server log.

    A client can send any number of malformed requests (bad framing, invalid headers,
    undecodable bodies): each one would log an ERROR with a traceback quoting the offending
    request line, which may hold a bearer token. The access log already records each of them
    (status 400), without headers.
    """
    exc = record.exc_info[1] if record.exc_info else None
    while exc is not None:
        if isinstance(exc, HttpProcessingError | RequestPayloadError):
            return False
        exc = exc.__cause__ or exc.__context__
    return True


def write_ready_file(path: Path, port: int) -> None:
    """Atomically write ``<port>\\n``: a reader sees no file or the whole port, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, path)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from PEM files; the key file must be 0600."""
    return server_context(cert, key, None, setting="server")


async def run_server(
    app: web.Application,
    host: str,
    port: int,
    *,
    ready_file: Path | None = None,
    on_ready: Callable[[int], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` until SIGTERM or SIGINT, then shut down gracefully.

    The log starts before the socket listens; ``on_ready`` and the ready file get the bound
    port once requests are accepted. On a signal the listener closes first, requests in
    progress finish (up to :data:`SHUTDOWN_TIMEOUT`), then the log closes: it sequences
    everything already accepted and publishes a final checkpoint.
    """
    runner = web.AppRunner(
        app,
        access_log_class=ops.BufferedAccessLogger,
        access_log=logging.getLogger("translog.access"),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        # aiohttp closes a connection that has no complete request within this time, from
        # its start too: the bound on slow request heads and idle keep-alive connections.
        # Other roles (a witness) have no log config: they get the default.
        keepalive_timeout=app.get(keys.CONFIG, Config()).server.idle_timeout_ms / 1000,
    )
    # Handlers go in before anything can learn the port: a signal that arrives right after
    # the ready file appears must still mean a graceful shutdown.
    received = install_signal_handlers()
    await runner.setup()
    try:
        bound = await _listen(runner, host, port, ssl_context)
        if on_ready is not None:
            on_ready(bound)
        if ready_file is not None:
            write_ready_file(ready_file, bound)
        _log.info("%s: draining accepted entries, then a final checkpoint", (await received).name)
    finally:
        remove_signal_handlers()
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
        await runner.cleanup()
        ops.ACCESS_LINES.flush()
    if keys.LOG in app:
        published = app[keys.LOG].published
        shown = "none" if published is None else published.size
        _log.info("stopped; final checkpoint size %s", shown)


async def _listen(
    runner: web.AppRunner, host: str, port: int, ssl_context: ssl.SSLContext | None
) -> int:
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as e:
        raise ConfigError(f"couldn't listen on {host}:{port}: {e.strerror or e}") from e
    return int(runner.addresses[0][1])


def install_signal_handlers() -> asyncio.Future[signal.Signals]:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return received


def remove_signal_handlers() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
