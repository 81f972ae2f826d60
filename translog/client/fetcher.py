"""Fetching tlog-tiles: hash tiles and entry bundles, their shape checks, and a verified cache.

A tile alone proves nothing. The callers (:mod:`translog.client.proofs`) compute a proof or a
root from the tiles they fetch, verify it against a checkpoint, and only then hand the tiles to
:meth:`TileFetcher.keep`: tiles and bundles are immutable once served, so verified ones are
cached, and tiles that fail verification never are.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from translog.client.answers import served
from translog.client.transport import Transport
from translog.core.merkle import HASH_SIZE
from translog.core.tiles import TILE_WIDTH, TileHashReader, TileRef, decode_bundle
from translog.errors import VerificationError

T = TypeVar("T")

MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
"""Largest entry bundle read: 256 leaves of at most 65,535 bytes, each with its length."""
_MAX_CONCURRENT_FETCHES = 8
_CACHE_BYTES = 32 << 20


class TileCache:
    """Verified tiles and bundles (immutable once served), LRU within a byte budget."""

    def __init__(self, budget: int = _CACHE_BYTES) -> None:
        self._items: collections.OrderedDict[TileRef, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._budget = budget

    def get(self, ref: TileRef) -> bytes | None:
        """The cached tile, or None."""
        data = self._items.get(ref)
        if data is not None:
            self._items.move_to_end(ref)
        return data

    def add(self, tiles: Mapping[TileRef, bytes]) -> None:
        """Cache verified tiles, evicting the least recently used beyond the budget."""
        for ref, data in tiles.items():
            if ref not in self._items:
                self._items[ref] = data
                self._bytes += len(data)
        while self._bytes > self._budget and self._items:
            _, old = self._items.popitem(last=False)
            self._bytes -= len(old)


class TileFetcher:
    """Fetches tiles and bundles with the read token, a few at a time, cache first."""

    def __init__(self, transport: Transport, read_token: str | None) -> None:
        """Fetch through ``transport``; nothing is fetched yet."""
        self._transport = transport
        self._read_token = read_token
        self._cache = TileCache()
        self._slots = asyncio.Semaphore(_MAX_CONCURRENT_FETCHES)

    async def tile(self, ref: TileRef) -> bytes:
        """One tile or bundle, checked for its exact length or entry count (not verified)."""
        cached = self._cache.get(ref)
        return cached if cached is not None else await self._fetch(ref)

    def keep(self, tiles: Mapping[TileRef, bytes]) -> None:
        """Cache tiles that verified against a checkpoint."""
        self._cache.add(tiles)

    async def fetch_all(self, refs: Sequence[TileRef]) -> dict[TileRef, bytes]:
        """Fetch tiles concurrently (cached ones from the cache); raise the first failure."""
        out: dict[TileRef, bytes] = {}
        missing: list[TileRef] = []
        for ref in dict.fromkeys(refs):
            cached = self._cache.get(ref)
            if cached is None:
                missing.append(ref)
            else:
                out[ref] = cached
        results = await asyncio.gather(*(self._fetch(r) for r in missing), return_exceptions=True)
        for ref, result in zip(missing, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            out[ref] = result
        return out

    async def with_tiles(
        self, size: int, compute: Callable[[TileHashReader], T]
    ) -> tuple[T, dict[TileRef, bytes]]:
        """Run ``compute`` over the tiles of the tree of ``size``, fetching them all first.

        A dry run over zero hashes lists the tiles ``compute`` reads; they are fetched
        concurrently, then ``compute`` runs for real. The caller verifies the result and only
        then keeps the tiles.
        """
        wanted: dict[TileRef, None] = {}

        def record(ref: TileRef) -> bytes:
            wanted[ref] = None
            return bytes(ref.width * HASH_SIZE)

        compute(TileHashReader(size, record))
        tiles = await self.fetch_all(list(wanted))
        with served(f"tile for tree size {size}"):
            return compute(TileHashReader(size, tiles.__getitem__)), tiles

    async def _fetch(self, ref: TileRef) -> bytes:
        limit = MAX_BUNDLE_BYTES if ref.entries else ref.width * HASH_SIZE
        async with self._slots:
            resp = await self._transport.request(
                "GET", "/" + ref.path, auth=self._read_token, limit=limit
            )
        data = resp.body
        if ref.entries:
            with served(f"entry bundle {ref.path}"):
                count = len(decode_bundle(data))
            if count != ref.width:
                raise VerificationError(
                    f"entry bundle {ref.path} holds {count} entries, expected {ref.width}"
                )
        elif len(data) != ref.width * HASH_SIZE:
            raise VerificationError(
                f"tile {ref.path} has wrong length: expected {ref.width * HASH_SIZE}, "
                f"got {len(data)}"
            )
        return data
