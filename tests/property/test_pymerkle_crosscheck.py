"""Cross-check translog.core.merkle against an independent implementation: pymerkle 7.

pymerkle quirks, checked against its source:
* Indexes are 1-based: its leaf 1 is our index 0.
* ``InmemoryTree()`` defaults to sha256 with "security" on, which is exactly RFC 6962
  (``0x00`` leaf prefix, ``0x01`` node prefix); ``disable_security=True`` would drop them.
  It hashes the raw entry bytes it is given.
* Its inclusion ``path`` starts with the leaf hash itself, then the RFC 9162 audit path.
* Its consistency ``path`` is NOT the RFC 9162 proof: it starts from a leaf-level base and
  carries a ``subset`` bitmask of which hashes rebuild the old root, so it is usually longer.
  Only the two roots it resolves to are comparable.
* ``get_state`` is a deprecated alias of ``get_root``.
"""

from __future__ import annotations

import random
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymerkle import ConsistencyProof, InclusionProof, InmemoryTree

from translog.core.merkle import (
    EMPTY_ROOT,
    MemoryHashes,
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)

SIZES = [1, 2, 3, 7, 100, 1000, 3000]
MAX_SIZE = max(SIZES)
_rng = random.Random(20)
ENTRIES = [_rng.randbytes(_rng.randrange(0, 40)) for _ in range(MAX_SIZE)]


@cache
def trees() -> tuple[InmemoryTree, MemoryHashes]:
    """One pymerkle tree and one translog tree over the same entries (built once)."""
    theirs = InmemoryTree(algorithm="sha256")
    for entry in ENTRIES:
        theirs.append_entry(entry)
    return theirs, MemoryHashes(leaf_hash(e) for e in ENTRIES)


def _sample(n: int, k: int, seed: int) -> list[int]:
    """Up to k values in [0, n), always including both ends."""
    picks = random.Random(seed).sample(range(n), min(k, n))
    return sorted({0, n - 1, *picks})


def test_pymerkle_is_configured_as_rfc6962() -> None:
    theirs, _ = trees()
    assert theirs.security and theirs.algorithm == "sha256"
    assert theirs.get_leaf(1) == leaf_hash(ENTRIES[0])
    assert theirs.get_root(0) == EMPTY_ROOT


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"size-{n}")
def test_same_roots(size: int) -> None:
    theirs, ours = trees()
    for n in _sample(size, 30, size):
        assert theirs.get_root(n + 1) == tree_hash(n + 1, ours), f"size {n + 1}"


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"size-{n}")
def test_same_inclusion_paths(size: int) -> None:
    theirs, ours = trees()
    root = tree_hash(size, ours)
    for index in _sample(size, 60, size + 1):
        proof = theirs.prove_inclusion(index + 1, size)
        mine = prove_inclusion(index, size, ours)
        assert proof.path[0] == leaf_hash(ENTRIES[index])
        assert proof.path[1:] == list(mine), f"index {index}"
        verify_inclusion(proof.path[0], index, size, proof.path[1:], root)


@pytest.mark.parametrize("size", SIZES, ids=lambda n: f"size-{n}")
def test_consistency_roots_agree(size: int) -> None:
    theirs, ours = trees()
    for old in _sample(size, 40, size + 2):
        old += 1
        proof: ConsistencyProof = theirs.prove_consistency(old, size)
        old_root, new_root = tree_hash(old, ours), tree_hash(size, ours)
        assert proof.retrieve_prior_state() == old_root, f"{old} -> {size}"
        assert proof.compute_root() == new_root, f"{old} -> {size}"
        proof.verify(old_root, new_root, prior_size=old, later_size=size)
        verify_consistency(old, size, old_root, new_root, prove_consistency(old, size, ours))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_pymerkle_accepts_our_inclusion_proofs(case: tuple[int, int]) -> None:
    index, size = case
    theirs, ours = trees()
    mine = list(prove_inclusion(index, size, ours))
    # Rebuild a pymerkle proof around our path and let pymerkle's own verifier judge it.
    template = theirs.prove_inclusion(index + 1, size)
    leaf = leaf_hash(ENTRIES[index])
    proof = InclusionProof("sha256", True, size, index + 1, template.rule, [leaf, *mine])
    proof.verify(leaf, theirs.get_root(size), index=index + 1, size=size)
