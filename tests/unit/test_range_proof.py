"""Range proofs: exhaustive over every tree size up to 40 and every range, plus tamper cases.

Each range proof is checked three ways: it gives the tree root (compared with ``tree_hash``),
every per-entry inclusion proof derived from it equals ``prove_inclusion``, and its length is
the length the recursion predicts, computed here independently of translog.core.merkle.
"""

from __future__ import annotations

import hashlib

import pytest

from translog.core.merkle import MemoryHashes, prove_inclusion, tree_hash, verify_inclusion
from translog.core.range_proof import (
    inclusion_proofs_from_range,
    prove_range,
    range_proof_nodes,
    root_from_range,
    verify_range,
)
from translog.errors import InvalidProofError, MalformedError

MAX_SIZE = 40
LEAVES = tuple(hashlib.sha256(b"\x00range leaf %d" % i).digest() for i in range(MAX_SIZE))
TREE = MemoryHashes(LEAVES)


def _expected_length(lo: int, hi: int, start: int, end: int) -> int:
    """Proof length from the definition: perfect disjoint subtrees count once."""
    width = hi - lo
    disjoint = hi <= start or lo >= end
    if disjoint and width & (width - 1) == 0:
        return 1
    if width == 1:
        return 0
    k = 1
    while k * 2 < width:
        k *= 2
    return _expected_length(lo, lo + k, start, end) + _expected_length(lo + k, hi, start, end)


def _ranges() -> list[tuple[int, int, int]]:
    return [
        (start, end, size)
        for size in range(1, MAX_SIZE + 1)
        for start in range(size)
        for end in range(start + 1, size + 1)
    ]


def test_every_range_of_every_size_up_to_40() -> None:
    checked = 0
    for size in range(1, MAX_SIZE + 1):
        root = tree_hash(size, TREE)
        for start in range(size):
            for end in range(start + 1, size + 1):
                proof = prove_range(start, end, size, TREE)
                leaves = LEAVES[start:end]
                assert len(proof) == _expected_length(0, size, start, end)
                assert root_from_range(start, end, size, leaves, proof) == root
                verify_range(start, end, size, leaves, proof, root)
                derived = inclusion_proofs_from_range(start, end, size, leaves, proof)
                for i, p in zip(range(start, end), derived, strict=True):
                    assert p == prove_inclusion(i, size, TREE), (start, end, size, i)
                    verify_inclusion(LEAVES[i], i, size, p, root)
                checked += 1
    assert checked == len(_ranges())


def test_whole_tree_needs_no_proof() -> None:
    assert prove_range(0, 13, 13, TREE) == ()
    verify_range(0, 13, 13, LEAVES[:13], (), tree_hash(13, TREE))


def test_nodes_are_complete_subtrees_the_reader_holds() -> None:
    # prove_range reads only stored (complete) nodes: MemoryHashes raises for any other.
    for start, end, size in _ranges():
        for level, index in range_proof_nodes(start, end, size):
            assert (index + 1) << level <= size


def test_one_read_per_proof() -> None:
    calls: list[int] = []

    class Counting:
        def read_hashes(self, nodes: list[tuple[int, int]]) -> list[bytes]:
            calls.append(len(nodes))
            return TREE.read_hashes(nodes)

    proof = prove_range(5, 9, 37, Counting())
    assert calls == [len(proof)]


@pytest.mark.parametrize(("start", "end", "size"), [(-1, 2, 5), (3, 3, 5), (4, 2, 5), (0, 6, 5)])
def test_prove_rejects_bad_ranges(start: int, end: int, size: int) -> None:
    with pytest.raises(MalformedError, match="invalid leaf range"):
        prove_range(start, end, size, TREE)


# -- tampering ---------------------------------------------------------------------------------

START, END, SIZE = 5, 19, 37
ROOT = tree_hash(SIZE, TREE)
PROOF = prove_range(START, END, SIZE, TREE)
LEAF_HASHES = LEAVES[START:END]


def _flip(h: bytes, bit: int) -> bytes:
    return bytes([h[0] ^ (1 << bit), *h[1:]])


def test_fixture_is_a_valid_proof_with_several_elements() -> None:
    assert len(PROOF) >= 4
    verify_range(START, END, SIZE, LEAF_HASHES, PROOF, ROOT)


@pytest.mark.parametrize("i", range(len(PROOF)))
def test_every_tampered_proof_element_fails(i: int) -> None:
    bad = list(PROOF)
    bad[i] = _flip(bad[i], i % 8)
    with pytest.raises(InvalidProofError, match="does not match the root of size 37"):
        verify_range(START, END, SIZE, LEAF_HASHES, bad, ROOT)


@pytest.mark.parametrize("i", range(END - START))
def test_every_tampered_leaf_hash_fails(i: int) -> None:
    bad = list(LEAF_HASHES)
    bad[i] = _flip(bad[i], 3)
    with pytest.raises(InvalidProofError, match="does not match"):
        verify_range(START, END, SIZE, bad, PROOF, ROOT)


def test_swapped_proof_elements_fail() -> None:
    bad = [PROOF[1], PROOF[0], *PROOF[2:]]
    with pytest.raises(InvalidProofError, match="does not match"):
        verify_range(START, END, SIZE, LEAF_HASHES, bad, ROOT)


def test_tampered_root_fails() -> None:
    with pytest.raises(InvalidProofError, match="does not match"):
        verify_range(START, END, SIZE, LEAF_HASHES, PROOF, _flip(ROOT, 0))


def test_short_and_long_proofs_fail_on_length() -> None:
    n = len(PROOF)
    with pytest.raises(InvalidProofError, match=f"expected {n}, got {n - 1}"):
        verify_range(START, END, SIZE, LEAF_HASHES, PROOF[:-1], ROOT)
    with pytest.raises(InvalidProofError, match=f"expected {n}, got {n + 1}"):
        verify_range(START, END, SIZE, LEAF_HASHES, (*PROOF, PROOF[0]), ROOT)


def test_wrong_hash_lengths_fail() -> None:
    with pytest.raises(InvalidProofError, match="range proof hash 2 has wrong length"):
        verify_range(START, END, SIZE, LEAF_HASHES, (*PROOF[:2], b"x" * 31, *PROOF[3:]), ROOT)
    with pytest.raises(InvalidProofError, match="leaf hash 6 has wrong length"):
        bad = [LEAF_HASHES[0], b"y" * 33, *LEAF_HASHES[2:]]
        verify_range(START, END, SIZE, bad, PROOF, ROOT)
    with pytest.raises(InvalidProofError, match="root hash has wrong length"):
        verify_range(START, END, SIZE, LEAF_HASHES, PROOF, ROOT[:31])


def test_wrong_number_of_leaf_hashes_fails() -> None:
    with pytest.raises(InvalidProofError, match="needs 14 leaf hashes, got 13"):
        verify_range(START, END, SIZE, LEAF_HASHES[:-1], PROOF, ROOT)


@pytest.mark.parametrize(
    ("start", "end", "size"), [(START + 1, END + 1, SIZE), (START, END, 64), (4, 18, 37)]
)
def test_shifted_range_or_size_fails(start: int, end: int, size: int) -> None:
    # As with RFC 9162 inclusion proofs, a size whose right edge has the same shape (38 here)
    # recomputes the same root: the signed checkpoint, not the proof, binds size to root.
    with pytest.raises(InvalidProofError):
        verify_range(start, end, size, LEAF_HASHES, PROOF, ROOT)


@pytest.mark.parametrize(("start", "end", "size"), [(-1, 3, 5), (2, 2, 5), (0, 6, 5)])
def test_verify_rejects_bad_ranges(start: int, end: int, size: int) -> None:
    with pytest.raises(InvalidProofError, match="invalid leaf range"):
        verify_range(start, end, size, [], (), ROOT)


def test_derived_inclusion_proofs_are_checked_like_the_range() -> None:
    bad = list(PROOF)
    bad[0] = b"z" * 30
    with pytest.raises(InvalidProofError, match="wrong length"):
        inclusion_proofs_from_range(START, END, SIZE, LEAF_HASHES, bad)
