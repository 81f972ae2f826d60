"""The read API: checkpoint, C2SP tlog-tiles, payload reads and the RFC 6962 JSON API.

Routes (all under ``server.prefix``):

* ``GET /checkpoint``: the latest *published* signed checkpoint, ``text/plain; charset=utf-8``.
* ``GET /tile/<L>/<N>[.p/<W>]`` and ``GET /tile/entries/<N>[.p/<W>]``: hash tiles and entry
  bundles, ``application/octet-stream`` (c2sp.org/tlog-tiles).
* ``GET /entries/<index>`` (JSON) and ``GET /entries/<index>/payload`` (raw bytes): one entry,
  with the payload and salt of a committed leaf for callers allowed to see them.
* ``GET /ct/v1/get-sth``, ``get-sth-consistency``, ``get-proof-by-hash``, ``get-entries`` and
  ``get-entry-and-proof``: RFC 6962 §4. ``get-roots`` is X.509-specific and not served (404).

Decisions the specs leave open:

* **Sizes.** Tiles, bundles and ``/entries`` are served for the *durable* tree (``Log.size``):
  LMDB data is visible only after its commit, and every signed checkpoint (per batch or
  published) is at most that size, so a tile is durable before any checkpoint needing it is
  served. A partial tile of any width whose nodes exist is served, so tiles for every size the
  log ever signed stay available after growth. The CT API answers for sizes up to the
  *published* checkpoint's size (``get-sth``); a larger size is a 400.
* **Malformed tile paths are 400** (with the reason); well-formed tiles the tree does not have
  yet are 404. A static file server would answer 404 for both; clients must treat any non-200
  as "not available".
* **Caching.** ``/checkpoint`` and ``get-sth`` change every publish interval: ``max-age=1``
  (tlog-tiles: "prevent caching beyond a few seconds"). Tiles, bundles and CT answers that are
  fully determined by their parameters are immutable: ``max-age=31536000, immutable``.
  ``get-entries`` responses cut short by the tree size or the page cap are ``no-cache``. Entry
  and payload reads are ``no-store``: payloads can be erased later. With a private tree,
  ``private`` replaces ``public``. Error responses carry no caching headers.
* **Compression.** Entry bundles and JSON bodies of 512 bytes or more are compressed when the
  client accepts it (``Vary: Accept-Encoding``). Hash tiles are SHA-256 output, which does not
  compress, so they are always sent as identity.
* **Auth.** With ``server.public_tree = false`` every read here needs a token with the ``read``
  scope. The payload and salt of a committed leaf need one unless ``server.public_payloads``;
  ``?leaf_only=1`` asks for the leaf view instead. Inline payloads are part of the leaf, so
  they are as readable as the tree.
* **first=0** in ``get-sth-consistency`` is a 400: a proof from the empty tree is not defined
  (RFC 9162 §2.1.4), and any tree extends it. ``first == second`` gives ``{"consistency": []}``.
* **Base64 in queries.** A ``+`` sent unescaped arrives as a space; since a space is never
  valid base64, spaces in ``hash`` are read back as ``+``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web
from aiohttp.web_response import ContentCoding

from translog.core.leaf import KIND_COMMITTED, Leaf, decode_leaf
from translog.core.merkle import leaf_hash
from translog.core.note import decode_base64
from translog.core.tiles import (
    TILE_WIDTH,
    TileRef,
    check_tile_available,
    encode_bundle,
    parse_tile_path,
    read_tile,
)
from translog.errors import MalformedError, NotFoundError, StorageCorruptError
from translog.http.audit import note_payload_read
from translog.http.auth import require
from translog.http.keys import CONFIG, LOG
from translog.log.sequencer import Log, SignedCheckpoint
from translog.storage.base import StoredEntry

MAX_GET_ENTRIES = TILE_WIDTH
"""Most entries in one ``get-entries`` answer (RFC 6962 lets a log return fewer)."""
MAX_UINT = (1 << 63) - 1
"""Largest integer accepted in a path or query (sizes and indexes are signed 64-bit)."""

CHECKPOINT_LIFETIME = "max-age=1"
IMMUTABLE_LIFETIME = "max-age=31536000, immutable"
NO_STORE = "no-store"
_COMPRESS_MIN = 512
_OCTET_STREAM = "application/octet-stream"


def add_routes(app: web.Application, prefix: str) -> None:
    """Register the read routes under ``prefix``."""
    r = app.router
    r.add_get(f"{prefix}/checkpoint", get_checkpoint)
    # Registered before the hash-tile route, which would otherwise match it too.
    r.add_get(f"{prefix}/tile/entries/{{path:.+}}", get_entry_bundle)
    r.add_get(f"{prefix}/tile/{{path:.+}}", get_tile)
    r.add_get(f"{prefix}/entries/{{index}}", get_entry)
    r.add_get(f"{prefix}/entries/{{index}}/payload", get_payload)
    ct = f"{prefix}/ct/v1"
    r.add_get(f"{ct}/get-sth", ct_get_sth)
    r.add_get(f"{ct}/get-sth-consistency", ct_get_sth_consistency)
    r.add_get(f"{ct}/get-proof-by-hash", ct_get_proof_by_hash)
    r.add_get(f"{ct}/get-entries", ct_get_entries)
    r.add_get(f"{ct}/get-entry-and-proof", ct_get_entry_and_proof)


# ----------------------------------------------------------------------- tlog-tiles handlers


async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest published checkpoint note."""
    _require_tree(request)
    published = _published(request.app[LOG])
    return web.Response(
        body=published.note,
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": _cache(request, CHECKPOINT_LIFETIME),
        },
    )


async def get_tile(request: web.Request) -> web.Response:
    """A hash tile ``tile/<L>/<N>[.p/<W>]``."""
    return _serve_tile(request, "tile/" + request.match_info["path"])


async def get_entry_bundle(request: web.Request) -> web.Response:
    """An entry bundle ``tile/entries/<N>[.p/<W>]``."""
    return _serve_tile(request, "tile/entries/" + request.match_info["path"])


def _serve_tile(request: web.Request, path: str) -> web.Response:
    """Parse ``path`` strictly, check the durable tree has the tile, and send it."""
    _require_tree(request)
    ref = parse_tile_path(path)
    log = request.app[LOG]
    check_tile_available(ref, log.size)
    body = _bundle(log, ref) if ref.entries else read_tile(ref, log.storage)
    resp = web.Response(
        body=body,
        headers={
            "Content-Type": _OCTET_STREAM,
            "Cache-Control": _cache(request, IMMUTABLE_LIFETIME),
        },
    )
    if ref.entries:
        _compress(request, resp, len(body))
    return resp


def _bundle(log: Log, ref: TileRef) -> bytes:
    """The entry bundle for ``ref``: the leaves of level-0 tile ``ref.index``."""
    start = ref.index * TILE_WIDTH
    return encode_bundle(log.leaves(start, start + ref.width))


# ------------------------------------------------------------------------- entry handlers


async def get_entry(request: web.Request) -> web.Response:
    """One entry as JSON; payload and salt of a committed leaf only for allowed callers."""
    _require_tree(request)
    entry, leaf = _entry(request)
    view = _leaf_view(entry, leaf)
    if leaf.kind == KIND_COMMITTED and not _leaf_only(request):
        _require_payloads(request)
        view.update(_committed_fields(entry))
        note_payload_read(request, entry.index)
    return _json(request, view, NO_STORE)


async def get_payload(request: web.Request) -> web.Response:
    """The raw payload bytes of one entry (``404`` once a committed payload was erased)."""
    _require_tree(request)
    entry, leaf = _entry(request)
    if leaf.kind == KIND_COMMITTED:
        _require_payloads(request)
        payload = entry.payload
        if payload is None:
            raise NotFoundError(f"the payload of entry {entry.index} was erased")
        note_payload_read(request, entry.index)
    else:
        payload = leaf.payload or b""
    resp = web.Response(
        body=payload, headers={"Content-Type": _OCTET_STREAM, "Cache-Control": NO_STORE}
    )
    _compress(request, resp, len(payload))
    return resp


def _entry(request: web.Request) -> tuple[StoredEntry, Leaf]:
    """The durable entry named by the ``{index}`` path segment, and its decoded leaf."""
    index = _parse_uint(request.match_info["index"], "entry index")
    log = request.app[LOG]
    if index >= log.size:
        raise NotFoundError(f"entry {index} is not in the log (size {log.size})")
    entry = log.entries(index, index + 1)[0]
    try:
        leaf = decode_leaf(entry.leaf)
    except MalformedError as e:
        raise StorageCorruptError(f"stored leaf {index} does not decode: {e}") from e
    return entry, leaf


def _leaf_view(entry: StoredEntry, leaf: Leaf) -> dict[str, Any]:
    """The fields of an entry that are as public as the tree."""
    view: dict[str, Any] = {
        "index": entry.index,
        "leaf": _b64(entry.leaf),
        "leaf_hash": _b64(leaf_hash(entry.leaf)),
        "timestamp": leaf.timestamp_ms,
        "kind": "committed" if leaf.kind == KIND_COMMITTED else "inline",
    }
    if leaf.kind != KIND_COMMITTED:
        view["payload"] = _b64(leaf.payload or b"")
    return view


def _committed_fields(entry: StoredEntry) -> dict[str, Any]:
    """Payload and salt of a committed entry, or ``erased: true`` when they are gone."""
    if entry.payload is None or entry.salt is None:
        return {"erased": True}
    return {"payload": _b64(entry.payload), "salt": _b64(entry.salt), "erased": False}


def _leaf_only(request: web.Request) -> bool:
    """The ``leaf_only`` flag: absent or ``0`` is false, ``1`` is true, anything else 400."""
    value = _single_query(request, "leaf_only")
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise MalformedError(f"query parameter 'leaf_only' must be 0 or 1, got {value[:32]!r}")


# --------------------------------------------------------------------- RFC 6962 handlers


async def ct_get_sth(request: web.Request) -> web.Response:
    """``get-sth``: the published checkpoint with its RFC 6962 tree head signature."""
    _require_tree(request)
    sth = _published(request.app[LOG])
    if not sth.tree_head_signature:
        raise NotFoundError("this log has no rfc 6962 tree head key, so get-sth is unavailable")
    body = {
        "tree_size": sth.size,
        "timestamp": sth.timestamp_ms,
        "sha256_root_hash": _b64(sth.root_hash),
        "tree_head_signature": _b64(sth.tree_head_signature),
    }
    return _json(request, body, _cache(request, CHECKPOINT_LIFETIME))


async def ct_get_sth_consistency(request: web.Request) -> web.Response:
    """``get-sth-consistency?first=&second=``: RFC 9162 §2.1.4 proof between two sizes."""
    _require_tree(request)
    log = request.app[LOG]
    first = _query_uint(request, "first")
    second = _query_uint(request, "second")
    _check_published_size(log, second, "second")
    if first > second:
        raise MalformedError(f"first {first} is greater than second {second}")
    if first == 0:
        raise MalformedError("a consistency proof from tree size 0 is not defined")
    proof = log.consistency_proof(first, second)
    body = {"consistency": [_b64(h) for h in proof]}
    return _json(request, body, _cache(request, IMMUTABLE_LIFETIME))


async def ct_get_proof_by_hash(request: web.Request) -> web.Response:
    """``get-proof-by-hash?hash=&tree_size=``: the audit path of a leaf found by its hash."""
    _require_tree(request)
    log = request.app[LOG]
    wanted = _query_hash(request, "hash")
    tree_size = _query_uint(request, "tree_size")
    _check_published_size(log, tree_size, "tree_size", minimum=1)
    index = log.storage.find_leaf_hash(wanted)
    if index is None or index >= tree_size:
        raise NotFoundError(f"no leaf with hash {_b64(wanted)} in the tree of size {tree_size}")
    body = {
        "leaf_index": index,
        "audit_path": [_b64(h) for h in log.inclusion_proof(index, tree_size)],
    }
    return _json(request, body, _cache(request, IMMUTABLE_LIFETIME))


async def ct_get_entries(request: web.Request) -> web.Response:
    """``get-entries?start=&end=`` (inclusive end), at most MAX_GET_ENTRIES per answer."""
    _require_tree(request)
    log = request.app[LOG]
    start = _query_uint(request, "start")
    end = _query_uint(request, "end")
    size = _published(log).size
    if start > end:
        raise MalformedError(f"start {start} is greater than end {end}")
    if start >= size:
        raise MalformedError(f"start {start} is beyond the published tree size {size}")
    last = min(end, size - 1, start + MAX_GET_ENTRIES - 1)
    entries = [{"leaf_input": _b64(e.leaf), "extra_data": ""} for e in log.entries(start, last + 1)]
    lifetime = IMMUTABLE_LIFETIME if last == end else "no-cache"
    return _json(request, {"entries": entries}, _cache(request, lifetime))


async def ct_get_entry_and_proof(request: web.Request) -> web.Response:
    """``get-entry-and-proof?leaf_index=&tree_size=``: one leaf and its audit path."""
    _require_tree(request)
    log = request.app[LOG]
    index = _query_uint(request, "leaf_index")
    tree_size = _query_uint(request, "tree_size")
    _check_published_size(log, tree_size, "tree_size", minimum=1)
    if index >= tree_size:
        raise MalformedError(f"leaf_index {index} is not below tree_size {tree_size}")
    entry = log.entries(index, index + 1)[0]
    body = {
        "leaf_input": _b64(entry.leaf),
        "extra_data": "",
        "audit_path": [_b64(h) for h in log.inclusion_proof(index, tree_size)],
    }
    return _json(request, body, _cache(request, IMMUTABLE_LIFETIME))


def _check_published_size(log: Log, size: int, name: str, *, minimum: int = 0) -> None:
    """Raise MalformedError unless ``minimum <= size <=`` the published tree size."""
    published = _published(log).size
    if size > published:
        raise MalformedError(f"{name} {size} is beyond the published tree size {published}")
    if size < minimum:
        raise MalformedError(f"{name} must be at least {minimum}, got {size}")


# ------------------------------------------------------------------------------- helpers


def _published(log: Log) -> SignedCheckpoint:
    """The latest published checkpoint (NotFoundError before the first publish)."""
    published = log.published
    if published is None:
        raise NotFoundError("no checkpoint has been published yet")
    return published


def _require_tree(request: web.Request) -> None:
    """Demand a ``read`` token unless the tree is public."""
    if not request.app[CONFIG].server.public_tree:
        require(request, "read")


def _require_payloads(request: web.Request) -> None:
    """Demand a ``read`` token unless committed payloads are public."""
    if not request.app[CONFIG].server.public_payloads:
        require(request, "read")


def _cache(request: web.Request, lifetime: str) -> str:
    """``Cache-Control`` for tree data: shared caches only when the tree is public."""
    scope = "public" if request.app[CONFIG].server.public_tree else "private"
    return f"{scope}, {lifetime}"


def _compress(request: web.Request, resp: web.Response, length: int) -> None:
    """Gzip ``resp`` when the client accepts gzip and the body is worth compressing."""
    resp.headers["Vary"] = "Accept-Encoding"
    if length >= _COMPRESS_MIN and accepts_gzip(request.headers.get("Accept-Encoding", "")):
        resp.enable_compression(ContentCoding.gzip)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 §12.5.3; ``q=0`` refuses)."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        name, _, params = item.partition(";")
        weights.setdefault(name.strip().lower(), _qvalue(params))
    for name in ("gzip", "x-gzip", "*"):
        if name in weights:
            return weights[name] > 0
    return False


def _qvalue(params: str) -> float:
    """The ``q`` weight among ``;``-separated parameters (1 when absent, 0 when garbled)."""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def _json(request: web.Request, data: dict[str, Any], cache: str) -> web.Response:
    """A compact JSON response with the given ``Cache-Control``."""
    body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    resp = web.Response(
        body=body, headers={"Content-Type": "application/json", "Cache-Control": cache}
    )
    _compress(request, resp, len(body))
    return resp


def _b64(data: bytes) -> str:
    """Standard padded base64 text."""
    return base64.b64encode(data).decode("ascii")


def _parse_uint(text: str, what: str) -> int:
    """Parse ASCII decimal digits (no sign, no spaces) into 0..MAX_UINT."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        raise MalformedError(f"{what} must be a non-negative decimal integer, got {text[:32]!r}")
    value = int(text)
    if value > MAX_UINT:
        raise MalformedError(f"{what} {value} is larger than {MAX_UINT}")
    return value


def _single_query(request: web.Request, name: str) -> str | None:
    """The one value of query parameter ``name``, or None; 400 if it is repeated."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise MalformedError(f"query parameter {name!r} is given {len(values)} times")
    return values[0] if values else None


def _query_uint(request: web.Request, name: str) -> int:
    """A required non-negative integer query parameter."""
    value = _single_query(request, name)
    if value is None:
        raise MalformedError(f"missing query parameter {name!r}")
    return _parse_uint(value, f"query parameter {name!r}")


def _query_hash(request: web.Request, name: str) -> bytes:
    """A required base64 SHA-256 hash query parameter (exactly 32 bytes)."""
    value = _single_query(request, name)
    if value is None:
        raise MalformedError(f"missing query parameter {name!r}")
    if len(value) != 44:
        raise MalformedError(f"query parameter {name!r} must be 44 base64 characters")
    try:
        raw = decode_base64(value.replace(" ", "+"))
    except MalformedError as e:
        raise MalformedError(f"query parameter {name!r}: {e}") from e
    if len(raw) != 32:
        raise MalformedError(f"query parameter {name!r} must decode to 32 bytes, got {len(raw)}")
    return raw
