"""Every tree size up to 128 and every (m, n) pair, against a naive recursive RFC 9162 reference.

The reference below (MTH, PATH, PROOF/SUBPROOF) is written straight from the recursive
definitions in testdata/ALGORITHMS.md §2-§4 and lives only here. It recomputes subtree hashes
from leaves every time, so it shares nothing with translog.core.merkle but SHA-256.
"""

from __future__ import annotations

import hashlib
from functools import cache

import pytest

from translog.core.merkle import (
    MemoryHashes,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 128
LEAVES = tuple(hashlib.sha256(b"\x00leaf %d" % i).digest() for i in range(MAX_SIZE))
TREE = MemoryHashes(LEAVES)


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]). Cached on the range only so the suite stays fast; still fully recursive."""
    if hi == lo:
        return hashlib.sha256(b"").digest()
    if hi - lo == 1:
        return LEAVES[lo]
    k = _split(hi - lo)
    return hashlib.sha256(b"\x01" + mth(lo, lo + k) + mth(lo + k, hi)).digest()


def path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi]) with m relative to lo."""
    if hi - lo == 1:
        return []
    k = _split(hi - lo)
    if m < k:
        return [*path(m, lo, lo + k), mth(lo + k, hi)]
    return [*path(m - k, lo + k, hi), mth(lo, lo + k)]


def subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b)."""
    if m == hi - lo:
        return [] if b else [mth(lo, hi)]
    k = _split(hi - lo)
    if m <= k:
        return [*subproof(m, lo, lo + k, b), mth(lo + k, hi)]
    return [*subproof(m - k, lo + k, hi, False), mth(lo, lo + k)]


def test_reference_is_not_trivially_wrong() -> None:
    # A hand-expanded 3-leaf tree guards the reference itself.
    h01 = hashlib.sha256(b"\x01" + LEAVES[0] + LEAVES[1]).digest()
    assert mth(0, 3) == hashlib.sha256(b"\x01" + h01 + LEAVES[2]).digest()
    assert path(2, 0, 3) == [h01]
    assert subproof(2, 0, 3, True) == [LEAVES[2]]


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1), ids=lambda n: f"size-{n}")
def test_every_proof_for_size(size: int) -> None:
    root = mth(0, size)
    assert tree_hash(size, TREE) == root
    for index in range(size):
        proof = prove_inclusion(index, size, TREE)
        assert list(proof) == path(index, 0, size), f"inclusion {index} in {size}"
        verify_inclusion(LEAVES[index], index, size, proof, root)
    for old in range(1, size + 1):
        proof = prove_consistency(old, size, TREE)
        assert list(proof) == subproof(old, 0, size, True), f"consistency {old} -> {size}"
        verify_consistency(old, size, mth(0, old), root, proof)
