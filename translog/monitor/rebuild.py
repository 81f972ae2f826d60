"""Recomputing a log's tree from its entry bundles over HTTP, every served tile compared.

:func:`recompute` extends a :class:`~translog.monitor.recompute.TreeBuilder` from the stored
edge to a new size: every new entry bundle is fetched and hashed, and every hash tile the log
serves for the new size is compared with the recomputation. What differs comes back as
:class:`Mismatch` rows in the :class:`Recomputed` outcome. Fetches are pipelined
(:func:`in_order`): a window of bundle and tile requests is in flight while the previous bundle
is hashed.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from translog.client.fetcher import MAX_BUNDLE_BYTES
from translog.client.transport import Transport
from translog.core.merkle import HASH_SIZE
from translog.core.tiles import TILE_HEIGHT, TILE_WIDTH, TileRef, decode_bundle, partial_width
from translog.errors import MalformedError, PipelineError
from translog.monitor.pipeline import Pipeline
from translog.monitor.recompute import TreeBuilder, bundle_leaf_hashes

FETCH_WINDOW = 32
"""Bundle and tile requests kept in flight during a recomputation."""
MAX_MISMATCHES = 16


@dataclass
class Mismatch:
    """A served tile or bundle that differs from the recomputation."""

    ref: TileRef
    served: bytes
    recomputed: bytes | None
    """The recomputed tile (hash tiles), None for a bundle."""
    position: int
    """First differing hash (tiles) or entry (bundles) within the tile."""
    reason: str


@dataclass
class Recomputed:
    """The outcome of extending the tree to a new size."""

    root: bytes
    builder: TreeBuilder
    tiles: list[Mismatch] = field(default_factory=list)
    bundles: list[Mismatch] = field(default_factory=list)
    entries: int = 0


async def in_order(
    transport: Transport,
    refs: Sequence[TileRef],
    auth: str | None,
    window: int,
    pipeline: Pipeline | None = None,
) -> AsyncIterator[tuple[TileRef, bytes]]:
    """Fetch ``refs`` with up to ``window`` requests in flight; yield them in order.

    With a ``pipeline`` the requests go through it first; any it cannot answer (an error
    status, a dropped connection) is retried through ``transport``.
    """

    async def get(ref: TileRef) -> bytes:
        limit = MAX_BUNDLE_BYTES if ref.entries else ref.width * HASH_SIZE
        if pipeline is not None:
            try:
                return await pipeline.get("/" + ref.path, limit)
            except PipelineError:
                pass
        resp = await transport.request(
            "GET", "/" + ref.path, auth=auth, limit=limit, headers=_IDENTITY
        )
        return resp.body

    pending: collections.deque[tuple[TileRef, asyncio.Task[bytes]]] = collections.deque()
    it = iter(refs)
    try:
        for ref in it:
            pending.append((ref, asyncio.ensure_future(get(ref))))
            if len(pending) >= window:
                break
        while pending:
            ref, task = pending.popleft()
            data = await task
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, asyncio.ensure_future(get(nxt))))
            yield ref, data
    finally:
        for _, task in pending:
            task.cancel()


_IDENTITY = {"Accept-Encoding": "identity"}
"""Hashes and leaf commitments barely compress; gzip would cost the log more CPU than it saves
on loopback or a LAN (measured in benchmarks/bench_audit.py)."""


def _first_diff(a: bytes, b: bytes, unit: int) -> int:
    n = min(len(a), len(b))
    for i in range(0, n, unit):
        if a[i : i + unit] != b[i : i + unit]:
            return i // unit
    return n // unit


async def recompute(
    transport: Transport,
    auth: str | None,
    builder: TreeBuilder,
    old_size: int,
    new_size: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    window: int = FETCH_WINDOW,
    on_bundle: Callable[[int, list[bytes]], None] | None = None,
    pipelined: bool = True,
) -> Recomputed:
    """Extend ``builder`` (at ``old_size``) to ``new_size`` from the log's entry bundles.

    Every bundle and every hash tile of the new size that changed since ``old_size`` is fetched
    and compared with the recomputation. ``on_bundle(first_index, leaves)`` receives the new
    leaves when given (content rules). Transport failures raise ``NetworkError``.
    """
    if builder.size != old_size or new_size < old_size:
        raise MalformedError(f"cannot recompute from size {builder.size} to {new_size}")
    out = Recomputed(b"", builder)
    if new_size == old_size:
        out.root = builder.root()
        return out
    first_b = old_size // TILE_WIDTH
    last_b = (new_size - 1) // TILE_WIDTH
    refs: list[TileRef] = []
    for b in range(first_b, last_b + 1):
        width = min(TILE_WIDTH, new_size - b * TILE_WIDTH)
        refs.append(TileRef(0, b, width, entries=True))
        refs.append(TileRef(0, b, width))
    pipeline = (
        Pipeline(transport.url, auth, timeout=transport.timeout)
        if pipelined and len(refs) > 8
        else None
    )
    try:
        return await _recompute(
            transport, auth, builder, old_size, new_size, refs, out, progress, window,
            on_bundle, pipeline,
        )  # fmt: skip
    finally:
        if pipeline is not None:
            await pipeline.close()


async def _recompute(
    transport: Transport,
    auth: str | None,
    builder: TreeBuilder,
    old_size: int,
    new_size: int,
    refs: list[TileRef],
    out: Recomputed,
    progress: Callable[[int, int], None] | None,
    window: int,
    on_bundle: Callable[[int, list[bytes]], None] | None,
    pipeline: Pipeline | None,
) -> Recomputed:
    first_b = old_size // TILE_WIDTH
    total = new_size - old_size
    done = 0
    upper: list[tuple[TileRef, bytes]] = []
    bundle: bytes = b""
    async for ref, data in in_order(transport, refs, auth, window, pipeline):
        if ref.entries:
            bundle = data
            continue
        b = ref.index
        skip = old_size - b * TILE_WIDTH if b == first_b else 0
        bref = TileRef(0, b, ref.width, entries=True)
        try:
            hashes, count = bundle_leaf_hashes(bundle)
        except MalformedError as e:
            hashes, count = b"", -1
            _note(out.bundles, Mismatch(bref, bundle, None, 0, f"does not decode: {e}"))
        if count >= 0 and count != ref.width:
            pos = _first_diff(hashes, data, HASH_SIZE)
            _note(
                out.bundles,
                Mismatch(bref, bundle, None, pos, f"holds {count} entries, {ref.width} expected"),
            )
        prefix = builder.level0()
        if count >= 0 and hashes[: skip * HASH_SIZE] != prefix:
            pos = _first_diff(hashes, prefix, HASH_SIZE)
            _note(
                out.bundles,
                Mismatch(bref, bundle, None, pos, f"entry {b * TILE_WIDTH + pos} changed"),
            )
        if hashes != data:
            pos = _first_diff(hashes, data, HASH_SIZE)
            _note(out.tiles, Mismatch(ref, data, hashes, pos, f"hash {pos} differs"))
        if count != ref.width:
            # Keep the tree aligned with the tile so the other tiles can still be checked.
            hashes = data if len(data) == ref.width * HASH_SIZE else bytes(ref.width * HASH_SIZE)
        if on_bundle is not None and count == ref.width:
            on_bundle(b * TILE_WIDTH + skip, decode_bundle(bundle)[skip:])
        upper += [t for t in builder.extend(hashes[skip * HASH_SIZE :]) if t[0].level > 0]
        done += ref.width - skip
        if progress is not None:
            progress(done, total)
        if len(upper) >= 8:
            await _compare_upper(transport, auth, upper, out)
            upper = []
    upper += [t for t in builder.partial_tiles() if t[0].level > 0]
    await _compare_upper(transport, auth, upper, out, new_size=new_size, old_size=old_size)
    out.root = builder.root()
    out.entries = total
    return out


def _note(into: list[Mismatch], m: Mismatch) -> None:
    if len(into) < MAX_MISMATCHES:
        into.append(m)


async def _compare_upper(
    transport: Transport,
    auth: str | None,
    tiles: list[tuple[TileRef, bytes]],
    out: Recomputed,
    *,
    new_size: int | None = None,
    old_size: int | None = None,
) -> None:
    """Fetch hash tiles above level 0 and compare them with the recomputed ones."""
    todo = []
    for ref, content in tiles:
        if new_size is not None and old_size is not None and ref.width < TILE_WIDTH:
            # A partial tile is new only if this level changed since the old size.
            if (old_size >> (TILE_HEIGHT * ref.level)) == (new_size >> (TILE_HEIGHT * ref.level)):
                continue
            if partial_width(new_size, ref.level) != ref.width:  # pragma: no cover
                continue
        todo.append((ref, content))
    async for ref, data in in_order(transport, [r for r, _ in todo], auth, FETCH_WINDOW):
        content = dict(todo)[ref]
        if data != content:
            pos = _first_diff(content, data, HASH_SIZE)
            _note(out.tiles, Mismatch(ref, data, content, pos, f"hash {pos} differs"))
