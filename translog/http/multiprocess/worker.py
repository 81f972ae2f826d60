"""An HTTP worker process of the multi-process server (``server.workers`` >= 1).

Started by the log process (:mod:`translog.http.multiprocess.hub`) as ``python -m
translog.http.multiprocess.worker FD N``, where FD is its end of a private ``socketpair``.
It binds the server's port with
``SO_REUSEPORT`` (the kernel spreads connections over the workers), answers every request,
and writes the access log. It opens the storage read-only, for full tiles and bundles.

* ``POST /add`` and ``POST /add-batch`` are answered by the same handlers as in the
  single-process server (:mod:`translog.http.submit`), whose submitter here is the fast path
  (:mod:`translog.http.multiprocess.fastpath`): plain submissions are sequenced as one group
  per event-loop tick and their receipts built here; every other submission is answered by
  the log process's submission API.
* **Everything else** is proxied to the log process's ordinary app, so its answer, status,
  headers and error are exactly those of the single-process server. Successful public,
  immutable tiles and entry bundles (full ones; partial tiles are not immutable) are kept in
  a bounded in-memory cache and served from it.
* **Full tiles and entry bundles** are read by the worker itself from the log's LMDB
  environment, opened read-only (LMDB serves readers in several processes; every read is one
  short transaction, never held across an ``await``). An entry bundle's leaves are checked
  against the tree's stored leaf hashes as the log process does; anything unusual (a partial
  tile, a tile the tree does not have yet, a private tree without a valid read token, a
  storage error or a corrupted entry) goes to the log process, which answers or refuses it.
* **The CT JSON API** (``ct/v1/...``) is answered here by the log process's own handlers
  (:mod:`translog.http.ct`) over :class:`StoreReads`: the read-only environment at the
  published checkpoint the log process announced. Whatever raises (bad parameters, an unknown
  hash, a size newer than the announcement, a missing token, a storage error) is asked of the
  log process instead, so every answer and error is the single-process one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import signal
import socket
import sys
import zlib
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from translog.config import Config, parse_config
from translog.core.merkle import prove_consistency, prove_inclusion
from translog.core.tiles import TILE_WIDTH, encode_bundle, parse_tile_path, read_tile
from translog.errors import (
    NotFoundError,
    PushbackError,
    StorageError,
    TooLargeError,
    TranslogError,
)
from translog.http import app as app_module
from translog.http import ingest, ops, otlp, submit
from translog.http.auth import bearer
from translog.http.ct import CT_HANDLERS, IMMUTABLE_LIFETIME, accepts_gzip
from translog.http.errors import error_middleware
from translog.http.keys import CONFIG, SUBMITTER, TOKENS
from translog.http.multiprocess.fastpath import FastPath, HubClient
from translog.http.multiprocess.hub import (
    die_with_parent,
    pack,
    read_message,
    unpack_published,
    unpacker,
)
from translog.http.multiprocess.upstream import HOP_BY_HOP, NOT_FORWARDED_BACK, Upstream
from translog.log.base import SignedCheckpoint
from translog.log.reads import check_entries, check_leaves, read_entry_and_proof
from translog.log.tokens import TokenStore
from translog.storage.base import StoredEntry
from translog.storage.lmdb import LMDBStorage

log = logging.getLogger("translog.worker")

CACHE_BYTES = 64 << 20
"""Bytes of immutable answers (full tiles, entry bundles) a worker keeps in memory."""
_TILE = "/tile/"
"""Only tiles and entry bundles are cached: clients fetch the same ones again and again."""


class StoreReads:
    """The tree as a worker reads it for the CT handlers (:class:`translog.http.ct.TreeReads`):
    the read-only LMDB environment, at sizes up to the published checkpoint the log process
    announced. That checkpoint is stored, so every node and entry it covers is durable here."""

    __slots__ = ("published", "storage")

    def __init__(self, storage: LMDBStorage, published: SignedCheckpoint) -> None:
        self.storage = storage
        self.published: SignedCheckpoint | None = published

    def inclusion_proof(self, index: int, size: int) -> tuple[bytes, ...]:
        """Audit path for ``index`` in the tree of ``size`` leaves."""
        return prove_inclusion(index, size, self.storage)

    def entry_and_proof(self, index: int, size: int) -> tuple[StoredEntry, tuple[bytes, ...]]:
        """Entry ``index`` (checked) and its audit path in the tree of ``size`` leaves."""
        return read_entry_and_proof(self.storage, index, size)

    def consistency_proof(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """Consistency proof from ``old_size`` to ``new_size``."""
        return prove_consistency(old_size, new_size, self.storage)

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries ``[start, end)``, checked against the stored leaf hashes as the log does."""
        entries = self.storage.get_entries(start, end)
        check_entries(self.storage, entries)
        return entries

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """The leaf-hash index's answer."""
        return self.storage.find_leaf_hash(leaf_hash)


class Worker:
    """Per-process state: config, tokens, the hub connection, the proxy and its cache."""

    def __init__(
        self,
        config: Config,
        tokens: TokenStore,
        hub: HubClient,
        proxy: str,
        lmdb_path: str | None = None,
    ) -> None:
        self.config = config
        self._lmdb = lmdb_path
        self._lmdb_store: LMDBStorage | None = None
        self.tokens = tokens
        self.hub = hub
        self._proxy_path = proxy
        self._upstream = Upstream(proxy)
        self._session: aiohttp.ClientSession | None = None
        self._cache: collections.OrderedDict[tuple[str, bool], web.Response] = (
            collections.OrderedDict()
        )
        self._cached_bytes = 0

    def direct(self, request: web.Request, gzip: bool) -> web.Response | None:
        """A full tile, an entry bundle or a CT answer read here, or None to ask the log
        process."""
        server = self.config.server
        prefix = server.prefix + "/"
        path = request.path
        if self._lmdb is None or request.method != "GET":
            return None
        if path.startswith(prefix + "ct/v1/"):
            return self._ct(request, path[len(prefix) + 6 :])
        if request.query_string or not path.startswith(prefix + "tile/"):
            return None
        try:
            ref = parse_tile_path(path[len(prefix) :])
        except TranslogError:
            return None  # the log process explains what is wrong with the path
        if ref.width != TILE_WIDTH:
            return None  # partial tiles change as the tree grows: the log process knows
        if not server.public_tree and not self._may_read(request):
            return None
        try:
            store = self._store()
            if ref.entries:
                start = ref.index * TILE_WIDTH
                leaves = store.get_leaves(start, start + TILE_WIDTH)
                if leaves is None:
                    return None
                check_leaves(store, start, leaves)
                body = encode_bundle(leaves)
            else:
                body = read_tile(ref, store)
        except NotFoundError:
            return None
        except TranslogError:
            # A storage error (a grown map too) or corruption: the log process
            # answers with its own error; reopen the environment for the next read.
            self._close_store()
            return None
        scope = "public" if server.public_tree else "private"
        headers = {"Content-Type": "application/octet-stream"}
        headers["Cache-Control"] = f"{scope}, {IMMUTABLE_LIFETIME}"
        if ref.entries:
            headers["Vary"] = "Accept-Encoding"
            if gzip:
                headers["Content-Encoding"] = "gzip"
                packer = zlib.compressobj(wbits=31)  # gzip framing
                body = packer.compress(body) + packer.flush()
        return web.Response(body=body, headers=headers)

    def _ct(self, request: web.Request, name: str) -> web.Response | None:
        """The CT handler's answer from the read-only store at the announced published size;
        None (the log process answers, with its own error) for anything that raises."""
        handler = CT_HANDLERS.get(name)
        published = self.hub.published
        if handler is None or published is None:
            return None
        try:
            return handler(request, StoreReads(self._store(), published))
        except StorageError:
            self._close_store()  # a grown map, corruption: reopen for the next read
            return None
        except TranslogError:
            # Bad parameters, an unknown hash, a size published after the last announcement,
            # a missing token: the log process gives the answer (or the error) it always has.
            return None

    def _may_read(self, request: web.Request) -> bool:
        try:
            self.tokens.authenticate(bearer(request), "read")
        except TranslogError:
            return False
        return True

    def _store(self) -> LMDBStorage:
        if self._lmdb_store is None:
            assert self._lmdb is not None
            self._lmdb_store = LMDBStorage(self._lmdb, readonly=True)
        return self._lmdb_store

    def _close_store(self) -> None:
        store, self._lmdb_store = self._lmdb_store, None
        if store is not None:
            store.close()

    async def proxy(self, request: web.Request) -> web.Response:
        """Answer ``request`` with the log process's own app."""
        gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        key = (request.raw_path, gzip)
        if request.method == "GET":
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return _copy(hit)
            direct = self.direct(request, gzip)
            if direct is not None:
                # Only tiles are kept (a private answer is per caller): proofs are too many.
                if self.config.server.public_tree and _TILE in request.path:
                    assert isinstance(direct.body, bytes)
                    self._keep(key, direct, len(direct.body))
                return direct
        limit = self.config.server.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            # Refused here: proxied, the body would be streamed upstream while the answer waits
            # (with "Expect: 100-continue" the client never sends it, and the request hangs).
            raise TooLargeError(
                f"request body of {request.content_length} bytes exceeds the {limit}-byte limit"
            )
        if request.method in ("GET", "HEAD") and not request.body_exists:
            return await self._proxy_read(request, key)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self._proxy_path, limit=256),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP
        )
        data: Any = None
        if request.body_exists:
            data = request.content
            if request.content_length is not None:
                headers["Content-Length"] = str(request.content_length)
        url = URL("http://translog.internal" + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, url, headers=headers, data=data, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                status = upstream.status
                back = CIMultiDict(
                    (k, v)
                    for k, v in upstream.headers.items()
                    if k.lower() not in NOT_FORWARDED_BACK
                )
        except aiohttp.ClientError as e:
            raise PushbackError(
                f"the log process did not answer: {e.__class__.__name__}", retry_after=1.0
            ) from e
        return self._answer(request, key, status, back, payload)

    async def _proxy_read(self, request: web.Request, key: tuple[str, bool]) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        try:
            status, back, payload = await self._upstream.request(
                request.method, request.raw_path, headers
            )
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise PushbackError(
                f"the log process did not answer: {e.__class__.__name__}", retry_after=1.0
            ) from e
        return self._answer(request, key, status, CIMultiDict(back), payload)

    def _answer(
        self,
        request: web.Request,
        key: tuple[str, bool],
        status: int,
        back: CIMultiDict[str],
        payload: bytes,
    ) -> web.Response:
        response = web.Response(status=status, body=payload, headers=back)
        control = back.get("Cache-Control", "")
        if (
            request.method == "GET"
            and status == 200
            and control.startswith("public")
            and "immutable" in control
            and _TILE in request.path
        ):
            self._keep(key, response, len(payload))
        return response

    def _keep(self, key: tuple[str, bool], response: web.Response, size: int) -> None:
        if size > CACHE_BYTES // 64:
            return
        self._cache[key] = response
        self._cached_bytes += size
        while self._cached_bytes > CACHE_BYTES:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= old.content_length or 0

    async def close(self) -> None:
        """Close the proxy's connections and the storage."""
        self._close_store()
        self._upstream.close()
        if self._session is not None:
            await self._session.close()


def _copy(cached: web.Response) -> web.Response:
    """A fresh response with a cached answer's status, headers and body."""
    assert isinstance(cached.body, bytes)
    return web.Response(status=cached.status, body=cached.body, headers=cached.headers.copy())


WORKER = web.AppKey("translog.worker", Worker)


def make_worker_app(config: Config, worker: Worker) -> web.Application:
    """The worker's app: the submission routes (as in the single-process server, with the
    fast path as their submitter), and a proxy for every other request."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[WORKER] = worker
    app[CONFIG] = config
    app[TOKENS] = worker.tokens
    app[SUBMITTER] = FastPath(config, worker.hub)
    submit.add_routes(app, config.server.prefix)
    ingest.add_routes(app, config.server.prefix)  # parsed and mapped here, durable there
    otlp.add_routes(app, config.server.prefix)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def proxy(request: web.Request) -> web.Response:
    """Any request the worker does not answer itself."""
    return await request.app[WORKER].proxy(request)


# -------------------------------------------------------------------------------- process


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


async def serve(fd: int) -> int:
    """Run one worker over the connection ``fd`` until SIGTERM (exit code)."""
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    stream = unpacker()
    hello = await read_message(reader, stream)
    if hello is None:
        return 1
    config = parse_config(hello["config"], source="log process")
    app_module.configure_logging()
    hub = HubClient(reader, stream, writer, unpack_published(hello.get("published")))
    worker = Worker(
        config, TokenStore(Path(hello["tokens"])), hub, hello["proxy"], hello.get("lmdb")
    )
    runner = web.AppRunner(
        make_worker_app(config, worker),
        access_log_class=ops.BufferedAccessLogger,
        access_log=logging.getLogger("translog.access"),
        shutdown_timeout=app_module.SHUTDOWN_TIMEOUT,
        keepalive_timeout=config.server.idle_timeout_ms / 1000,  # slow heads, idle clients
    )
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def on_term() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    await runner.setup()
    host, port = hello["host"], hello["port"]
    try:
        listener = _listen(host, port)
    except OSError as e:
        writer.write(pack(["error", f"couldn't listen on {host}:{port}: {e.strerror or e}"]))
        await writer.drain()
        return 1
    context = None
    if hello["tls"]:
        try:
            context = app_module.tls_context(Path(hello["tls"][0]), Path(hello["tls"][1]))
        except TranslogError as e:
            writer.write(pack(["error", str(e)]))
            await writer.drain()
            return 1
    await web.SockSite(runner, listener, ssl_context=context).start()
    answers = asyncio.create_task(hub.run())
    writer.write(pack(["ready"]))
    await stop
    await runner.cleanup()  # stops accepting; requests in progress still reach the log process
    await worker.close()
    ops.ACCESS_LINES.flush()
    answers.cancel()
    writer.close()
    return 0


def main() -> None:
    """Entry point: ``python -m translog.http.multiprocess.worker FD NUMBER EVENT_LOOP``."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the log process decides when to stop
    event_loop = sys.argv[3] if len(sys.argv) > 3 else "asyncio"
    sys.exit(app_module.run_event_loop(serve(int(sys.argv[1])), event_loop))


if __name__ == "__main__":
    main()
