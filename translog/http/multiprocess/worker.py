"""An HTTP worker process of the multi-process server (``server.workers`` >= 1).

Started by the log process (:mod:`translog.http.multiprocess.hub`) as ``python -m
translog.http.multiprocess.worker FD
N``, where FD is its end of a private ``socketpair``. It binds the server's port with
``SO_REUSEPORT`` (the kernel spreads connections over the workers), answers every request,
and writes the access log. It opens the storage read-only, for full tiles and bundles.

* ``POST /add`` and ``POST /add-batch`` with the default ``wait=durable``, no idempotency
  key, and a token without a rate limit take the **fast path**: the worker authenticates,
  reads and parses the body, checks the limits, draws the salts and computes the commitments,
  and hands the entries to the log process, coalescing every such request of one event-loop
  tick into one message. The answer (one range proof for the whole message, once the entries
  are durable in a signed tree) becomes each request's receipt here
  (:mod:`translog.formats.fastreceipt`),
  checked against the checkpoint's root before it is sent.
* **Everything else**, and every request the fast path would refuse, is proxied to the log
  process's ordinary app, so its answer, status, headers and error are exactly those of the
  single-process server. Successful public, immutable tiles and entry bundles (full ones;
  partial tiles are not immutable) are kept in a bounded in-memory cache and served from it.
* **Full tiles and entry bundles** are read by the worker itself from the log's LMDB
  environment, opened read-only (LMDB serves readers in several processes; every read is one
  short transaction, never held across an ``await``). An entry bundle's leaves are checked
  against the tree's stored leaf hashes as the log process does; anything unusual (a partial
  tile, a tile the tree does not have yet, a private tree without a valid read token, a
  storage error or a corrupted entry) goes to the log process, which answers or refuses it.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import hashlib
import logging
import os
import signal
import socket
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from translog import errors
from translog.config import Config, ServerSection, parse_config
from translog.core.leaf import KIND_COMMITTED, MAX_INLINE_PAYLOAD, SALT_SIZE, inline_leaf
from translog.core.merkle import HASH_SIZE
from translog.core.tiles import TILE_WIDTH, encode_bundle, parse_tile_path, read_tile
from translog.errors import MalformedError, NotFoundError, TooLargeError, TranslogError
from translog.formats.event_schema import validate_payloads
from translog.formats.fastreceipt import (
    RunHashes,
    batch_receipt_json,
    quote_checkpoint,
    single_receipt_json,
)
from translog.http import app as app_module
from translog.http import ops
from translog.http.auth import bearer
from translog.http.errors import error_middleware, status_for
from translog.http.multiprocess.hub import die_with_parent, pack, read_message, unpacker
from translog.http.read import IMMUTABLE_LIFETIME, accepts_gzip
from translog.http.submit import _read_body, parse_batch
from translog.log.sequencer import check_leaves, now_ms
from translog.log.tokens import TokenInfo, TokenStore
from translog.storage.lmdb import LMDBStorage

log = logging.getLogger("translog.worker")

CACHE_BYTES = 64 << 20
"""Bytes of immutable answers (full tiles, entry bundles) a worker keeps in memory."""
_HOP_BY_HOP = frozenset(
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
_NOT_FORWARDED_BACK = _HOP_BY_HOP | {"date", "server"}
_KINDS = frozenset({"committed", "inline"})
_TILE = "/tile/"
"""Only tiles and entry bundles are cached: clients fetch the same ones again and again."""
_NDJSON = "application/x-ndjson"
_PLAIN_TYPES = frozenset({_NDJSON, "application/json"})


class Run:
    """One answer of the log process: consecutive entries, their checkpoint and range proof."""

    __slots__ = ("_hashes", "_quoted", "leaf_hashes", "note", "proof", "root", "size", "start")

    def __init__(
        self, start: int, size: int, root: bytes, note: bytes, proof: list[bytes], hashes: bytes
    ) -> None:
        self.start, self.size, self.root, self.note = start, size, root, note
        self.proof, self.leaf_hashes = proof, hashes
        self._hashes: RunHashes | None = None
        self._quoted: bytes | None = None

    def hashes(self) -> RunHashes:
        """Every subtree hash of the run, checked against the checkpoint root (made once)."""
        if self._hashes is None:
            end = self.start + len(self.leaf_hashes) // HASH_SIZE
            self._hashes = RunHashes(
                self.start, end, self.size, self.leaf_hashes, self.proof, self.root
            )
        return self._hashes

    def range_proof(self, offset: int, count: int) -> list[bytes]:
        """The range proof of ``count`` entries from ``offset`` in the run."""
        if offset == 0 and count * HASH_SIZE == len(self.leaf_hashes):
            return self.proof  # the whole run: the log process's own proof
        return self.hashes().range_proof(self.start + offset, self.start + offset + count)

    def quoted_checkpoint(self) -> bytes:
        """The checkpoint note as a JSON string (made once)."""
        if self._quoted is None:
            self._quoted = quote_checkpoint(self.note)
        return self._quoted


_Placed = tuple[Run, int, int]
"""A request's share of a run: the run, the offset of its first entry, its final timestamp."""


def _error(name: str, reason: str, retry_after: float) -> TranslogError:
    """Rebuild an error the log process reported, as the same class."""
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, TranslogError)):
        cls = errors.StorageError
    if issubclass(cls, errors.PushbackError):
        return cls(reason, retry_after=retry_after)
    return cls(reason)


class _Message:
    """The requests of one message to the log process, waiting for its answer."""

    __slots__ = ("futures", "hashes", "sizes")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[_Placed]] = []
        self.sizes: list[int] = []
        self.hashes: list[bytes] = []


class HubClient:
    """The worker's side of the fast path: coalesces submissions, routes the answers."""

    def __init__(
        self, reader: asyncio.StreamReader, stream: msgpack.Unpacker, writer: asyncio.StreamWriter
    ) -> None:
        self._reader, self._stream, self._writer = reader, stream, writer
        self._next = 0
        self._pending: dict[int, _Message] = {}
        self._queue: list[list[Any]] = []
        self._message = _Message()
        self._scheduled = False

    def add(self, started: float, batch: bool, prepared: Prepared) -> asyncio.Future[_Placed]:
        """Queue one request's entries for the next message; resolves once they are durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Placed] = loop.create_future()
        p = prepared
        self._queue.append([started, batch, p.timestamp_ms, p.salts, p.leaves, p.bodies, p.hashes])
        msg = self._message
        msg.futures.append(fut)
        msg.sizes.append(len(p.leaves))
        msg.hashes.append(p.hashes)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        self._next += 1
        self._pending[self._next] = self._message
        self._writer.write(pack(["add", self._next, self._queue]))
        self._queue, self._message = [], _Message()

    def inc(self, name: str, amount: int, **labels: str) -> None:
        """Increment a counter in the log process's metrics."""
        self._writer.write(pack(["inc", name, amount, labels]))

    async def run(self) -> None:
        """Route answers until the log process goes away; then exit at once."""
        while True:
            msg = await read_message(self._reader, self._stream)
            if msg is None:
                break
            self._answer(msg)
        log.critical("the log process went away; worker exiting")
        logging.shutdown()
        os._exit(1)

    def _answer(self, msg: list[Any]) -> None:
        waiting = self._pending.pop(msg[0])
        if msg[1] == "ok":
            _, _, start, size, root, note, proof, stamps, hashes = msg
            if hashes is None:
                hashes = b"".join(waiting.hashes)
            run = Run(start, size, root, note, proof, hashes)
            offset = 0
            for fut, n, ts in zip(waiting.futures, waiting.sizes, stamps, strict=True):
                if not fut.done():
                    fut.set_result((run, offset, ts))
                offset += n
            return
        for fut in waiting.futures:
            if not fut.done():
                fut.set_exception(_error(msg[2], msg[3], msg[4]))


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
            if low not in _NOT_FORWARDED_BACK:
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
        """A full tile or entry bundle read here, or None to ask the log process."""
        server = self.config.server
        prefix = server.prefix + "/"
        path = request.path
        if (
            self._lmdb is None
            or request.method != "GET"
            or request.query_string
            or not path.startswith(prefix + "tile/")
        ):
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

    def token(self, request: web.Request) -> TokenInfo | None:
        """The caller's token if it may take the fast path; None sends the request upstream."""
        try:
            token = self.tokens.authenticate(bearer(request), "submit")
        except TranslogError:
            return None
        return token if token.rate_per_s <= 0 else None

    async def read_body(self, request: web.Request) -> bytes:
        """The body (limits as upstream); a refusal is counted in the log process's metrics."""
        try:
            server = self.config.server
            return await _read_body(request, server.max_body_bytes, server.body_timeout_ms / 1000)
        except TranslogError as e:
            self.hub.inc("translog_submissions_rejected_total", 1, reason=status_for(e)[1])
            raise

    async def proxy(self, request: web.Request, body: bytes | None = None) -> web.Response:
        """Answer ``request`` with the log process's own app (``body``: already read)."""
        gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
        key = (request.raw_path, gzip)
        if request.method == "GET":
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return _copy(hit)
            direct = self.direct(request, gzip)
            if direct is not None:
                if self.config.server.public_tree:  # a private answer is per caller
                    assert isinstance(direct.body, bytes)
                    self._keep(key, direct, len(direct.body))
                return direct
        limit = self.config.server.max_body_bytes
        if body is None and request.content_length is not None and request.content_length > limit:
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
            (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
        )
        data: Any = None
        if body is not None:
            data = body
        elif request.body_exists:
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
                    if k.lower() not in _NOT_FORWARDED_BACK
                )
        except aiohttp.ClientError as e:
            raise errors.PushbackError(
                f"the log process did not answer: {e.__class__.__name__}", retry_after=1.0
            ) from e
        return self._answer(request, key, status, back, payload)

    async def _proxy_read(self, request: web.Request, key: tuple[str, bool]) -> web.Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            status, back, payload = await self._upstream.request(
                request.method, request.raw_path, headers
            )
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise errors.PushbackError(
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
    """The worker's app: the two fast-path routes, and a proxy for every other request."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=config.server.max_body_bytes
    )
    app[WORKER] = worker
    prefix = config.server.prefix
    app.router.add_post(f"{prefix}/add", post_add)
    app.router.add_post(f"{prefix}/add-batch", post_add_batch)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def proxy(request: web.Request) -> web.Response:
    """Any request the worker does not answer itself."""
    return await request.app[WORKER].proxy(request)


def _plain_query(request: web.Request) -> tuple[bool, str | None]:
    """(whether the query allows the fast path, ``kind`` or None)."""
    query = request.query
    kind: str | None = None
    for name in query:
        values = query.getall(name)
        if len(values) != 1:
            return False, None
        if name == "wait":
            if values[0] != "durable":
                return False, None
        elif name == "kind" and values[0] in _KINDS:
            kind = values[0]
        else:
            return False, None
    return True, kind


class Prepared:
    """One request's leaves, built in the worker; the log process has the final word on time."""

    __slots__ = ("bodies", "hashes", "leaves", "salts", "timestamp_ms")

    def __init__(self, payloads: list[bytes], committed: list[bool]) -> None:
        ts = now_ms()
        self.timestamp_ms = ts
        header = inline_leaf(ts, b"")
        committed_header = header[:-1] + bytes([KIND_COMMITTED])
        self.salts: list[bytes | None] = []
        self.leaves: list[bytes] = []
        self.bodies: list[bytes | None] = []
        randomness = os.urandom(SALT_SIZE * sum(committed))
        at = 0
        sha = hashlib.sha256
        hashes = []
        for payload, keep in zip(payloads, committed, strict=True):
            if keep:
                salt = randomness[at : at + SALT_SIZE]
                at += SALT_SIZE
                leaf = committed_header + sha(salt + payload).digest()
                self.salts.append(salt)
                self.bodies.append(payload)
            else:
                leaf = header + payload
                self.salts.append(None)
                self.bodies.append(None)
            self.leaves.append(leaf)
            hashes.append(sha(b"\x00" + leaf).digest())
        self.hashes = b"".join(hashes)

    def leaves_at(self, ts: int) -> list[bytes]:
        """The leaves with the timestamp the log process gave them (usually their own)."""
        if ts == self.timestamp_ms:
            return self.leaves
        stamp = inline_leaf(ts, b"")[1:9]
        return [leaf[:1] + stamp + leaf[9:] for leaf in self.leaves]


async def post_add(request: web.Request) -> web.Response:
    """``POST /add``: the fast path, or upstream for anything it does not cover."""
    started = time.monotonic()
    w = request.app[WORKER]
    plain, kind = _plain_query(request)
    server = w.config.server
    length = request.content_length
    if (
        not plain
        or "Idempotency-Key" in request.headers
        or (length is not None and length > server.max_body_bytes)
        or w.token(request) is None
    ):
        return await w.proxy(request)
    body = await w.read_body(request)
    committed = _kinds([body], kind, server)
    if committed is None:
        return await w.proxy(request, body)
    if w.config.events.enabled:
        try:
            validate_payloads([("payload", body)])
        except TranslogError:
            return await w.proxy(request, body)
    prepared = Prepared([body], committed)
    run, offset, ts = await w.hub.add(started, False, prepared)
    index = run.start + offset
    at = offset * HASH_SIZE
    receipt = single_receipt_json(
        run.quoted_checkpoint(),
        index,
        prepared.leaves_at(ts)[0],
        run.leaf_hashes[at : at + HASH_SIZE],
        ts,
        prepared.salts[0],
        run.hashes().inclusion_proof_json(index),
    )
    return _receipt(receipt)


async def post_add_batch(request: web.Request) -> web.Response:
    """``POST /add-batch``: the fast path, or upstream for anything it does not cover."""
    started = time.monotonic()
    w = request.app[WORKER]
    plain, kind = _plain_query(request)
    server = w.config.server
    length = request.content_length
    if (
        not plain
        or "Idempotency-Key" in request.headers
        or request.content_type not in _PLAIN_TYPES
        or (length is not None and length > server.max_body_bytes)
        or w.token(request) is None
    ):
        return await w.proxy(request)
    body = await w.read_body(request)
    payloads = None
    if request.content_type == _NDJSON and not w.config.events.enabled:
        payloads = plain_ndjson(body, server.max_batch_entries)
    try:
        if payloads is None:
            items = parse_batch(body, request.content_type, server.max_batch_entries)
            if any(it.key is not None for it in items):
                raise MalformedError("idempotency keys need the log process")
            if w.config.events.enabled:
                validate_payloads((it.where, it.payload) for it in items)
            payloads = [it.payload for it in items]
    except TranslogError:
        return await w.proxy(request, body)
    committed = _kinds(payloads, kind, server)
    if committed is None:
        return await w.proxy(request, body)
    prepared = Prepared(payloads, committed)
    run, offset, ts = await w.hub.add(started, True, prepared)
    receipt = batch_receipt_json(
        run.quoted_checkpoint(),
        run.start + offset,
        prepared.leaves_at(ts),
        run.leaf_hashes,
        ts,
        prepared.salts,
        run.range_proof(offset, len(payloads)),
        offset * HASH_SIZE,
    )
    return _receipt(receipt)


def plain_ndjson(body: bytes, max_entries: int) -> list[bytes] | None:
    """The payloads of an NDJSON batch whose every line is a plain quoted base64 string.

    None for anything else (blank-padded lines, objects, escapes, bad base64, too many or no
    entries): the full parser then gives its exact answer or error. Strict base64 decoding
    accepts exactly what ``b64decode(validate=True)`` after the plain-string check accepts.
    """
    out = []
    decode = binascii.a2b_base64
    for line in body.split(b"\n"):
        if not line:
            continue
        if len(line) < 2 or line[0] != 0x22 or line[-1] != 0x22:
            return None
        try:
            out.append(decode(line[1:-1], strict_mode=True))
        except (binascii.Error, ValueError):
            return None
    return out if 0 < len(out) <= max_entries else None


def _kinds(payloads: list[bytes], kind: str | None, server: ServerSection) -> list[bool] | None:
    """Per payload: committed? None when a limit is exceeded (the log process says which)."""
    if any(len(p) > server.max_payload_bytes for p in payloads):
        return None
    if kind == "committed" or (kind is None and server.default_kind == "committed"):
        return [True] * len(payloads)
    flags = [len(p) > MAX_INLINE_PAYLOAD for p in payloads]
    return None if kind == "inline" and any(flags) else flags


def _receipt(body: bytes) -> web.Response:
    return web.Response(
        status=200,
        body=body,
        headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
    )


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
    hub = HubClient(reader, stream, writer)
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
    """Entry point: ``python -m translog.http.multiprocess.worker FD NUMBER``."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the log process decides when to stop
    sys.exit(asyncio.run(serve(int(sys.argv[1]))))


if __name__ == "__main__":
    main()
