"""The RFC 6962 JSON API (``<prefix>/ct/v1/...``), and the request and response helpers every
read route shares.

One implementation for both shapes of the server: each handler in :data:`CT_HANDLERS` takes
the request and a :class:`TreeReads` (what it reads the tree from) and returns the response.
The log process passes its :class:`~translog.log.sequencer.Log`; an HTTP worker
(:mod:`translog.http.multiprocess.worker`) passes its read-only view of the same LMDB
environment and the published checkpoint the log process sent it, so its answers are the log
process's, byte for byte. Handlers are synchronous: every read is one short transaction.

The decisions the RFC leaves open (sizes, caching, ``first=0``, base64 in queries) are listed in
:mod:`translog.http.read`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_response import ContentCoding

from translog.core.note import decode_base64
from translog.core.tiles import TILE_WIDTH
from translog.errors import MalformedError, NotFoundError
from translog.http.auth import require
from translog.http.keys import CONFIG
from translog.log.base import SignedCheckpoint
from translog.storage.base import StoredEntry

MAX_GET_ENTRIES = TILE_WIDTH
"""Most entries in one ``get-entries`` answer (RFC 6962 lets a log return fewer)."""
MAX_UINT = (1 << 63) - 1
"""Largest integer accepted in a path or query (sizes and indexes are signed 64-bit)."""

CHECKPOINT_LIFETIME = "max-age=1"
IMMUTABLE_LIFETIME = "max-age=31536000, immutable"
NO_STORE = "no-store"
COMPRESS_MIN = 512
"""Bodies shorter than this are sent as identity even to clients that accept gzip."""


class TreeReads(Protocol):
    """What the CT handlers read: the published checkpoint, proofs, entries and leaf hashes."""

    @property
    def published(self) -> SignedCheckpoint | None:
        """The latest published checkpoint (None before the first publish)."""
        ...

    def inclusion_proof(self, index: int, size: int) -> Sequence[bytes]:
        """The audit path of leaf ``index`` in the tree of ``size`` leaves."""
        ...

    def entry_and_proof(self, index: int, size: int) -> tuple[StoredEntry, Sequence[bytes]]:
        """Entry ``index`` (checked) and its audit path in the tree of ``size`` leaves."""
        ...

    def consistency_proof(self, old_size: int, new_size: int) -> Sequence[bytes]:
        """The consistency proof from ``old_size`` to ``new_size``."""
        ...

    def entries(self, start: int, end: int) -> list[StoredEntry]:
        """Entries ``[start, end)``, each checked against the tree's stored leaf hash."""
        ...

    def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """The index of the leaf with this hash (leaf-hash index), or None."""
        ...


CtHandler = Callable[[web.Request, TreeReads], web.Response]


# --------------------------------------------------------------------- RFC 6962 handlers


def get_sth(request: web.Request, reads: TreeReads) -> web.Response:
    """``get-sth``: the published checkpoint with its RFC 6962 tree head signature."""
    require_tree(request)
    sth = published(reads)
    if not sth.tree_head_signature:
        raise NotFoundError("this log has no rfc 6962 tree head key, so get-sth is unavailable")
    body = b'{"tree_size":%d,"timestamp":%d,"sha256_root_hash":"%s","tree_head_signature":"%s"}' % (
        sth.size,
        sth.timestamp_ms,
        _b64b(sth.root_hash),
        _b64b(sth.tree_head_signature),
    )
    return json_bytes(request, body, cache_control(request, CHECKPOINT_LIFETIME))


def get_sth_consistency(request: web.Request, reads: TreeReads) -> web.Response:
    """``get-sth-consistency?first=&second=``: RFC 9162 §2.1.4 proof between two sizes."""
    require_tree(request)
    first = query_uint(request, "first")
    second = query_uint(request, "second")
    check_published_size(reads, second, "second")
    if first > second:
        raise MalformedError(f"first {first} is greater than second {second}")
    if first == 0:
        raise MalformedError("a consistency proof from tree size 0 is not defined")
    proof = reads.consistency_proof(first, second)
    body = b'{"consistency":[%s]}' % _b64_list(proof)
    return json_bytes(request, body, cache_control(request, IMMUTABLE_LIFETIME))


def get_proof_by_hash(request: web.Request, reads: TreeReads) -> web.Response:
    """``get-proof-by-hash?hash=&tree_size=``: the audit path of a leaf found by its hash."""
    require_tree(request)
    wanted = query_hash(request, "hash")
    tree_size = query_uint(request, "tree_size")
    check_published_size(reads, tree_size, "tree_size", minimum=1)
    index = reads.find_leaf_hash(wanted)
    if index is None or index >= tree_size:
        raise NotFoundError(f"no leaf with hash {b64(wanted)} in the tree of size {tree_size}")
    path = reads.inclusion_proof(index, tree_size)
    body = b'{"leaf_index":%d,"audit_path":[%s]}' % (index, _b64_list(path))
    return json_bytes(request, body, cache_control(request, IMMUTABLE_LIFETIME))


def get_entries(request: web.Request, reads: TreeReads) -> web.Response:
    """``get-entries?start=&end=`` (inclusive end), at most MAX_GET_ENTRIES per answer."""
    require_tree(request)
    start = query_uint(request, "start")
    end = query_uint(request, "end")
    size = published(reads).size
    if start > end:
        raise MalformedError(f"start {start} is greater than end {end}")
    if start >= size:
        raise MalformedError(f"start {start} is beyond the published tree size {size}")
    last = min(end, size - 1, start + MAX_GET_ENTRIES - 1)
    entries = reads.entries(start, last + 1)
    items = b",".join([b'{"leaf_input":"%s","extra_data":""}' % _b64b(e.leaf) for e in entries])
    lifetime = IMMUTABLE_LIFETIME if last == end else "no-cache"
    return json_bytes(request, b'{"entries":[%s]}' % items, cache_control(request, lifetime))


def get_entry_and_proof(request: web.Request, reads: TreeReads) -> web.Response:
    """``get-entry-and-proof?leaf_index=&tree_size=``: one leaf and its audit path."""
    require_tree(request)
    index = query_uint(request, "leaf_index")
    tree_size = query_uint(request, "tree_size")
    check_published_size(reads, tree_size, "tree_size", minimum=1)
    if index >= tree_size:
        raise MalformedError(f"leaf_index {index} is not below tree_size {tree_size}")
    entry, path = reads.entry_and_proof(index, tree_size)
    body = b'{"leaf_input":"%s","extra_data":"","audit_path":[%s]}' % (
        _b64b(entry.leaf),
        _b64_list(path),
    )
    return json_bytes(request, body, cache_control(request, IMMUTABLE_LIFETIME))


CT_HANDLERS: dict[str, CtHandler] = {
    "get-sth": get_sth,
    "get-sth-consistency": get_sth_consistency,
    "get-proof-by-hash": get_proof_by_hash,
    "get-entries": get_entries,
    "get-entry-and-proof": get_entry_and_proof,
}
"""The handler of each ``ct/v1/<name>`` route. ``get-roots`` is X.509-specific: not served."""


def check_published_size(reads: TreeReads, size: int, name: str, *, minimum: int = 0) -> None:
    """Raise MalformedError unless ``minimum <= size <=`` the published tree size."""
    limit = published(reads).size
    if size > limit:
        raise MalformedError(f"{name} {size} is beyond the published tree size {limit}")
    if size < minimum:
        raise MalformedError(f"{name} must be at least {minimum}, got {size}")


def published(reads: TreeReads) -> SignedCheckpoint:
    """The latest published checkpoint (NotFoundError before the first publish)."""
    checkpoint = reads.published
    if checkpoint is None:
        raise NotFoundError("no checkpoint has been published yet")
    return checkpoint


# ------------------------------------------------------------------------------- helpers


def require_tree(request: web.Request) -> None:
    """Demand a ``read`` token unless the tree is public."""
    if not request.app[CONFIG].server.public_tree:
        require(request, "read")


def cache_control(request: web.Request, lifetime: str) -> str:
    """``Cache-Control`` for tree data: shared caches only when the tree is public."""
    scope = "public" if request.app[CONFIG].server.public_tree else "private"
    return f"{scope}, {lifetime}"


def compress(request: web.Request, resp: web.Response, length: int) -> None:
    """Gzip ``resp`` when the client accepts gzip and the body is worth compressing."""
    resp.headers["Vary"] = "Accept-Encoding"
    if length >= COMPRESS_MIN and accepts_gzip(request.headers.get("Accept-Encoding", "")):
        resp.enable_compression(ContentCoding.gzip)


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value allows gzip (RFC 9110 §12.5.3; ``q=0`` refuses)."""
    if not header:
        return False
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


def json_response(request: web.Request, data: dict[str, Any], cache: str) -> web.Response:
    """A compact JSON response with the given ``Cache-Control``."""
    return json_bytes(request, json.dumps(data, separators=(",", ":")).encode("utf-8"), cache)


def json_bytes(request: web.Request, body: bytes, cache: str) -> web.Response:
    """A response of compact JSON ``body`` (already encoded) with the given ``Cache-Control``.

    The CT handlers format their answers directly: every value is an integer or base64 text,
    which JSON never escapes, so the bytes are those of ``json.dumps`` with compact separators.
    """
    resp = web.Response(
        body=body, headers={"Content-Type": "application/json", "Cache-Control": cache}
    )
    compress(request, resp, len(body))
    return resp


def b64(data: bytes) -> str:
    """Standard padded base64 text."""
    return base64.b64encode(data).decode("ascii")


_b64b = base64.b64encode


def _b64_list(hashes: Sequence[bytes]) -> bytes:
    """JSON array items: each hash as a quoted base64 string."""
    return b",".join([b'"%s"' % _b64b(h) for h in hashes])


def parse_uint(text: str, what: str) -> int:
    """Parse ASCII decimal digits (no sign, no spaces) into 0..MAX_UINT."""
    if not text or len(text) > 19 or not text.isascii() or not text.isdigit():
        raise MalformedError(f"{what} must be a non-negative decimal integer, got {text[:32]!r}")
    value = int(text)
    if value > MAX_UINT:
        raise MalformedError(f"{what} {value} is larger than {MAX_UINT}")
    return value


def single_query(request: web.Request, name: str) -> str | None:
    """The one value of query parameter ``name``, or None; 400 if it is repeated."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise MalformedError(f"query parameter {name!r} is given {len(values)} times")
    return values[0] if values else None


def query_uint(request: web.Request, name: str) -> int:
    """A required non-negative integer query parameter."""
    value = single_query(request, name)
    if value is None:
        raise MalformedError(f"missing query parameter {name!r}")
    return parse_uint(value, f"query parameter {name!r}")


def query_hash(request: web.Request, name: str) -> bytes:
    """A required base64 SHA-256 hash query parameter (exactly 32 bytes)."""
    value = single_query(request, name)
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
