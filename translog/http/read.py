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

from functools import partial
from typing import Any

from aiohttp import web

from translog.core.leaf import KIND_COMMITTED, Leaf, decode_leaf
from translog.core.merkle import leaf_hash
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
from translog.http.ct import (
    CHECKPOINT_LIFETIME,
    CT_HANDLERS,
    IMMUTABLE_LIFETIME,
    NO_STORE,
    CtHandler,
    b64,
    cache_control,
    compress,
    json_response,
    parse_uint,
    published,
    require_tree,
    single_query,
)
from translog.http.keys import CONFIG, LOG
from translog.log.sequencer import Log
from translog.storage.base import StoredEntry

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
    for name, handler in CT_HANDLERS.items():
        r.add_get(f"{prefix}/ct/v1/{name}", partial(_from_log, handler))


async def _from_log(handler: CtHandler, request: web.Request) -> web.Response:
    """A CT handler (translog.http.ct) answering from the log itself."""
    return handler(request, request.app[LOG])


# ----------------------------------------------------------------------- tlog-tiles handlers


async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest published checkpoint note."""
    require_tree(request)
    checkpoint = published(request.app[LOG])
    return web.Response(
        body=checkpoint.note,
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": cache_control(request, CHECKPOINT_LIFETIME),
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
    require_tree(request)
    ref = parse_tile_path(path)
    log = request.app[LOG]
    check_tile_available(ref, log.size)
    body = _bundle(log, ref) if ref.entries else read_tile(ref, log.storage)
    resp = web.Response(
        body=body,
        headers={
            "Content-Type": _OCTET_STREAM,
            "Cache-Control": cache_control(request, IMMUTABLE_LIFETIME),
        },
    )
    if ref.entries:
        compress(request, resp, len(body))
    return resp


def _bundle(log: Log, ref: TileRef) -> bytes:
    """The entry bundle for ``ref``: the leaves of level-0 tile ``ref.index``."""
    start = ref.index * TILE_WIDTH
    return encode_bundle(log.leaves(start, start + ref.width))


# ------------------------------------------------------------------------- entry handlers


async def get_entry(request: web.Request) -> web.Response:
    """One entry as JSON; payload and salt of a committed leaf only for allowed callers."""
    require_tree(request)
    entry, leaf = _entry(request)
    view = _leaf_view(entry, leaf)
    if leaf.kind == KIND_COMMITTED and not _leaf_only(request):
        _require_payloads(request)
        view.update(_committed_fields(entry))
        note_payload_read(request, entry.index)
    return json_response(request, view, NO_STORE)


async def get_payload(request: web.Request) -> web.Response:
    """The raw payload bytes of one entry (``404`` once a committed payload was erased)."""
    require_tree(request)
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
    compress(request, resp, len(payload))
    return resp


def _entry(request: web.Request) -> tuple[StoredEntry, Leaf]:
    """The durable entry named by the ``{index}`` path segment, and its decoded leaf."""
    index = parse_uint(request.match_info["index"], "entry index")
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
        "leaf": b64(entry.leaf),
        "leaf_hash": b64(leaf_hash(entry.leaf)),
        "timestamp": leaf.timestamp_ms,
        "kind": "committed" if leaf.kind == KIND_COMMITTED else "inline",
    }
    if leaf.kind != KIND_COMMITTED:
        view["payload"] = b64(leaf.payload or b"")
    return view


def _committed_fields(entry: StoredEntry) -> dict[str, Any]:
    """Payload and salt of a committed entry, or ``erased: true`` when they are gone."""
    if entry.payload is None or entry.salt is None:
        return {"erased": True}
    return {"payload": b64(entry.payload), "salt": b64(entry.salt), "erased": False}


def _leaf_only(request: web.Request) -> bool:
    """The ``leaf_only`` flag: absent or ``0`` is false, ``1`` is true, anything else 400."""
    value = single_query(request, "leaf_only")
    if value is None or value == "0":
        return False
    if value == "1":
        return True
    raise MalformedError(f"query parameter 'leaf_only' must be 0 or 1, got {value[:32]!r}")


# ------------------------------------------------------------------------------- helpers


def _require_payloads(request: web.Request) -> None:
    """Demand a ``read`` token unless committed payloads are public."""
    if not request.app[CONFIG].server.public_payloads:
        require(request, "read")
