"""Proofs from the log, verified against roots the caller already trusts.

Inclusion and consistency proofs are computed from tlog-tiles
(:class:`~translog.core.tiles.TileHashReader`), or taken from the RFC 6962 ``/ct/v1`` API when the
client was made with ``use_ct_api=True``. Leaves come from entry bundles, authenticated in
groups by a range proof (computed from tiles) that rebuilds the checkpoint's root from the
leaves' own hashes, so no leaf outside the verified tree is ever returned.

Proofs that reach a receipt's checkpoint always come from tiles, which the log serves for its
whole durable tree; the CT API answers only up to the published size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from translog.client.answers import hash_list
from translog.client.checkpoints import VerifiedCheckpoint
from translog.client.fetcher import TileFetcher
from translog.client.transport import Transport
from translog.core.jsonfields import encode_base64
from translog.core.merkle import (
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from translog.core.range_proof import prove_range, verify_range
from translog.core.tiles import TILE_WIDTH, TileHashReader, TileRef, decode_bundle
from translog.errors import InvalidProofError, MalformedError, VerificationError

_BUNDLES_PER_STEP = 4
"""Bundles verified per range proof in :meth:`Proofs.leaves` (bounds memory: a bundle can
hold up to 16 MiB)."""


@dataclass(frozen=True, slots=True)
class TileProof:
    """A consistency proof computed from tiles, the two roots they give, and the tiles."""

    proof: tuple[bytes, ...]
    old_root: bytes
    new_root: bytes
    tiles: dict[TileRef, bytes]


class Proofs:
    """Fetches proofs and leaves from one log and verifies them."""

    def __init__(
        self, transport: Transport, fetcher: TileFetcher, *, read_token: str | None, use_ct: bool
    ) -> None:
        """Read through ``transport`` and ``fetcher``; CT API proofs when ``use_ct``."""
        self._transport = transport
        self.fetcher = fetcher
        self._read_token = read_token
        self.use_ct = use_ct

    async def inclusion(
        self, index: int, size: int, *, leaf_hash: bytes | None, root_hash: bytes | None
    ) -> tuple[bytes, ...]:
        """The inclusion proof of leaf ``index`` in the tree of ``size``.

        With ``leaf_hash`` and ``root_hash`` it is verified (``InvalidProofError``); without
        them only its shape is checked.
        """
        if self.use_ct:
            proof = await self._ct_inclusion(index, size)
            if leaf_hash is not None and root_hash is not None:
                verify_inclusion(leaf_hash, index, size, proof, root_hash)
            return proof
        proof, tiles = await self.fetcher.with_tiles(
            size, lambda r: prove_inclusion(index, size, r)
        )
        if leaf_hash is not None and root_hash is not None:
            verify_inclusion(leaf_hash, index, size, proof, root_hash)
            self.fetcher.keep(tiles)
        return proof

    async def verified_inclusion(
        self, index: int, lh: bytes, cp: VerifiedCheckpoint
    ) -> tuple[bytes, ...]:
        """An inclusion proof of ``lh`` at ``index`` that verifies against ``cp``."""
        try:
            return await self.inclusion(index, cp.size, leaf_hash=lh, root_hash=cp.root_hash)
        except InvalidProofError as e:
            source = "ct api" if self.use_ct else "tiles"
            raise InvalidProofError(
                f"the inclusion proof of entry {index} from the log's {source} does not match "
                f"the checkpoint of size {cp.size}: {e}"
            ) from e

    async def consistency(
        self, old_size: int, new_size: int, *, old_root: bytes | None, new_root: bytes | None
    ) -> tuple[bytes, ...]:
        """The consistency proof from ``old_size`` to ``new_size``.

        With both roots it is verified (``InvalidProofError``); without them only its shape
        is checked.
        """
        if old_size <= 0 or old_size > new_size:
            raise MalformedError(f"no consistency proof from size {old_size} to {new_size}")
        if self.use_ct:
            proof = await self.ct_consistency(old_size, new_size)
            if old_root is not None and new_root is not None:
                verify_consistency(old_size, new_size, old_root, new_root, proof)
            return proof
        found = await self.tile_consistency(old_size, new_size)
        if old_root is not None and new_root is not None:
            verify_consistency(old_size, new_size, old_root, new_root, found.proof)
            self.fetcher.keep(found.tiles)
        return found.proof

    async def tile_consistency(self, old_size: int, new_size: int) -> TileProof:
        """The consistency proof and both roots, all computed from the tiles of ``new_size``.

        Nothing is verified or cached: the caller judges the result (see
        :mod:`translog.client.consistency`).
        """

        def compute(reader: TileHashReader) -> tuple[tuple[bytes, ...], bytes, bytes]:
            proof = prove_consistency(old_size, new_size, reader) if old_size else ()
            return proof, tree_hash(old_size, reader), tree_hash(new_size, reader)

        (proof, old_root, new_root), tiles = await self.fetcher.with_tiles(new_size, compute)
        return TileProof(proof, old_root, new_root, tiles)

    async def ct_consistency(self, old_size: int, new_size: int) -> tuple[bytes, ...]:
        """``get-sth-consistency`` from the CT API (unverified)."""
        obj = await self._get_json(
            "/ct/v1/get-sth-consistency",
            "consistency proof",
            {"first": str(old_size), "second": str(new_size)},
        )
        return hash_list(obj, "consistency", "consistency proof")

    async def leaves(self, start: int, end: int, cp: VerifiedCheckpoint) -> list[bytes]:
        """The leaves ``[start, end)`` from entry bundles, proven in ``cp`` by range proofs."""
        if not 0 <= start <= end <= cp.size:
            raise MalformedError(
                f"leaf range [{start}, {end}) is outside the checkpoint of size {cp.size}"
            )
        if start == end:
            return []
        out: list[bytes] = []
        step = _BUNDLES_PER_STEP * TILE_WIDTH
        first = start - start % TILE_WIDTH
        for lo in range(first, end, step):
            entries = await self._verified_bundles(lo, min(lo + step, end), cp)
            out += entries[max(start - lo, 0) : end - lo]
        return out

    async def _verified_bundles(self, lo: int, end: int, cp: VerifiedCheckpoint) -> list[bytes]:
        """Every leaf of the bundles covering ``[lo, end)`` (``lo`` tile-aligned), verified."""
        size = cp.size
        refs = [
            TileRef(0, n, min(TILE_WIDTH, size - n * TILE_WIDTH), entries=True)
            for n in range(lo // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1)
        ]
        bundles = await self.fetcher.fetch_all(refs)
        entries = [e for ref in refs for e in decode_bundle(bundles[ref])]
        hi = lo + len(entries)
        proof, tiles = await self.fetcher.with_tiles(size, lambda r: prove_range(lo, hi, size, r))
        try:
            verify_range(lo, hi, size, [leaf_hash(e) for e in entries], proof, cp.root_hash)
        except InvalidProofError as e:
            raise VerificationError(
                f"entry bundles for leaves [{lo}, {hi}) do not match the checkpoint of size "
                f"{size}: {e}"
            ) from e
        self.fetcher.keep({**bundles, **tiles})
        return entries

    async def index_of(self, lh: bytes, cp: VerifiedCheckpoint) -> int:
        """The index of the leaf hashing to ``lh`` (CT ``get-proof-by-hash``), proven in ``cp``."""
        obj = await self._get_json(
            "/ct/v1/get-proof-by-hash",
            "proof by hash",
            {"hash": encode_base64(lh), "tree_size": str(cp.size)},
        )
        index = obj.get("leaf_index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise VerificationError("the log served a malformed proof by hash: no leaf_index")
        path = hash_list(obj, "audit_path", "proof by hash")
        try:
            verify_inclusion(lh, index, cp.size, path, cp.root_hash)
        except InvalidProofError as e:
            raise InvalidProofError(
                f"the log's proof by hash for index {index} does not verify: {e}"
            ) from e
        return index

    async def _ct_inclusion(self, index: int, size: int) -> tuple[bytes, ...]:
        obj = await self._get_json(
            "/ct/v1/get-entry-and-proof",
            "entry and proof",
            {"leaf_index": str(index), "tree_size": str(size)},
        )
        return hash_list(obj, "audit_path", "entry and proof")

    async def _get_json(self, path: str, what: str, params: dict[str, str]) -> dict[str, Any]:
        return await self._transport.get_json(path, what, params=params, auth=self._read_token)
