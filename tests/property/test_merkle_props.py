"""Hypothesis properties of translog.core.merkle on one random tree of up to 5000 leaves.

verify(prove(x)) always passes; any single flipped bit (proof element, root, leaf hash), an added
or removed proof element, a wrong index or a wrong size makes it fail.

On wrong sizes: a verifier only uses the size to decide, for each proof element, whether it is
a left or a right sibling (the "shape"). Two sizes can give the same shape, e.g. leaf 0 in trees
of 3 and 4 leaves (both: two right siblings), so an inclusion proof with the root of size 3 also
"verifies" when told size 4. The proof still pins the root, which is what a checkpoint
signs; the size is bound by the signature, not by the proof. So the property tested is exact:
a wrong size verifies iff it gives the same shape. (Wrong indexes never share a shape: the
lowest bits of the shape spell out the index.)
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from translog.core.merkle import (
    HASH_SIZE,
    Frontier,
    MemoryHashes,
    NodeLevels,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from translog.errors import InvalidProofError, MalformedError

MAX_SIZE = 5000
_rng = random.Random(6962)
LEAVES = [_rng.randbytes(HASH_SIZE) for _ in range(MAX_SIZE)]
TREE = MemoryHashes(LEAVES)
SETTINGS = settings(max_examples=200, deadline=None)


def root(size: int) -> bytes:
    return tree_hash(size, TREE)


def flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def inclusion_shape(index: int, size: int) -> tuple[int, ...]:
    """1 where the proof element is a left sibling, 0 where it is a right sibling."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return tuple((index >> i) & 1 for i in range(inner)) + (1,) * border


def consistency_shape(old: int, new: int) -> tuple[object, ...]:
    """Whether the proof starts with a seed, then the left/right role of each element."""
    if old == new:
        return ("equal",)
    level = (old & -old).bit_length() - 1
    index = (old - 1) >> level
    inner = (index ^ ((new - 1) >> level)).bit_length()
    border = (index >> inner).bit_count()
    return (index != 0, *((index >> i) & 1 for i in range(inner)), *(1,) * border)


@st.composite
def leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def size_pair(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(1, new)), new


def _inclusion_fails(index: int, size: int, proof: list[bytes], rt: bytes, leaf: bytes) -> None:
    with pytest.raises(InvalidProofError):
        verify_inclusion(leaf, index, size, proof, rt)


# --- inclusion --------------------------------------------------------------------------------


@SETTINGS
@given(leaf_in_tree())
def test_inclusion_round_trip(case: tuple[int, int]) -> None:
    index, size = case
    verify_inclusion(LEAVES[index], index, size, prove_inclusion(index, size, TREE), root(size))


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_any_bit_flip_fails(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = list(prove_inclusion(index, size, TREE))
    rt, leaf = root(size), LEAVES[index]
    bit = data.draw(st.integers(0, HASH_SIZE * 8 - 1), label="bit")
    _inclusion_fails(index, size, proof, flip(rt, bit), leaf)
    _inclusion_fails(index, size, proof, rt, flip(leaf, bit))
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof[i] = flip(proof[i], bit)
        _inclusion_fails(index, size, proof, rt, leaf)


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_added_or_removed_element_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    index, size = case
    proof = list(prove_inclusion(index, size, TREE))
    rt, leaf = root(size), LEAVES[index]
    extra = data.draw(st.sampled_from([rt, leaf, LEAVES[0], bytes(HASH_SIZE)]), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="at")
    _inclusion_fails(index, size, [*proof[:at], extra, *proof[at:]], rt, leaf)
    if proof:
        gone = data.draw(st.integers(0, len(proof) - 1), label="removed")
        _inclusion_fails(index, size, proof[:gone] + proof[gone + 1 :], rt, leaf)


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_wrong_index_fails(case: tuple[int, int], data: st.DataObject) -> None:
    index, size = case
    proof = list(prove_inclusion(index, size, TREE))
    wrong = data.draw(
        st.sampled_from([index + 1, index - 1, index ^ 2, index * 2, size]).filter(
            lambda i: i != index
        ),
        label="wrong index",
    )
    _inclusion_fails(wrong, size, proof, root(size), LEAVES[index])


@SETTINGS
@given(leaf_in_tree(), st.sampled_from(["+1", "-1", "*2", "//2"]))
@example((0, 3), "+1")  # same shape: legitimately verifies
@example((5, 6), "+1")  # different shape: must fail
def test_inclusion_wrong_size_fails_unless_same_shape(case: tuple[int, int], how: str) -> None:
    index, size = case
    wrong = {"+1": size + 1, "-1": size - 1, "*2": size * 2, "//2": size // 2}[how]
    proof = list(prove_inclusion(index, size, TREE))
    args = (LEAVES[index], index, wrong, proof, root(size))
    if wrong > index and inclusion_shape(index, wrong) == inclusion_shape(index, size):
        verify_inclusion(*args)  # legitimately indistinguishable: see the module docstring
    else:
        with pytest.raises(InvalidProofError):
            verify_inclusion(*args)


# --- consistency ------------------------------------------------------------------------------


def _consistency_fails(
    old: int, new: int, old_rt: bytes, new_rt: bytes, proof: list[bytes]
) -> None:
    with pytest.raises(InvalidProofError):
        verify_consistency(old, new, old_rt, new_rt, proof)


@SETTINGS
@given(size_pair())
def test_consistency_round_trip(case: tuple[int, int]) -> None:
    old, new = case
    verify_consistency(old, new, root(old), root(new), prove_consistency(old, new, TREE))


@SETTINGS
@given(size_pair(), st.data())
def test_consistency_any_bit_flip_fails(case: tuple[int, int], data: st.DataObject) -> None:
    old, new = case
    proof = list(prove_consistency(old, new, TREE))
    old_rt, new_rt = root(old), root(new)
    bit = data.draw(st.integers(0, HASH_SIZE * 8 - 1), label="bit")
    _consistency_fails(old, new, flip(old_rt, bit), new_rt, proof)
    _consistency_fails(old, new, old_rt, flip(new_rt, bit), proof)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1), label="element")
        proof[i] = flip(proof[i], bit)
        _consistency_fails(old, new, old_rt, new_rt, proof)


@SETTINGS
@given(size_pair(), st.data())
def test_consistency_added_or_removed_element_fails(
    case: tuple[int, int], data: st.DataObject
) -> None:
    old, new = case
    proof = list(prove_consistency(old, new, TREE))
    old_rt, new_rt = root(old), root(new)
    extra = data.draw(st.sampled_from([old_rt, new_rt, bytes(HASH_SIZE)]), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="at")
    _consistency_fails(old, new, old_rt, new_rt, [*proof[:at], extra, *proof[at:]])
    if proof:
        gone = data.draw(st.integers(0, len(proof) - 1), label="removed")
        _consistency_fails(old, new, old_rt, new_rt, proof[:gone] + proof[gone + 1 :])


@SETTINGS
@given(size_pair(), st.sampled_from(["old+1", "old-1", "new+1", "new-1", "new*2", "swap"]))
@example((1, 3), "new+1")  # same shape: legitimately verifies
@example((3, 5), "old+1")  # different shape: must fail
def test_consistency_wrong_size_fails_unless_same_shape(case: tuple[int, int], how: str) -> None:
    old, new = case
    proof = list(prove_consistency(old, new, TREE))
    wrong = {
        "old+1": (old + 1, new),
        "old-1": (old - 1, new),
        "new+1": (old, new + 1),
        "new-1": (old, new - 1),
        "new*2": (old, new * 2),
        "swap": (new, old),
    }[how]
    assume(wrong != (old, new))  # "swap" with old == new changes nothing
    args = (*wrong, root(old), root(new), proof)
    if 0 < wrong[0] <= wrong[1] and consistency_shape(*wrong) == consistency_shape(old, new):
        verify_consistency(*args)  # legitimately indistinguishable: see the module docstring
    else:
        with pytest.raises(InvalidProofError):
            verify_consistency(*args)


@given(st.lists(st.integers(0, 300), min_size=1, max_size=6), st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_frontier_extend_equals_appends(batches: list[int], rnd: Any) -> None:
    one, bulk = Frontier(), Frontier()
    for n in batches:
        hashes = [rnd.randbytes(32) for _ in range(n)]
        expected = [node for h in hashes for node in one.append(h)]
        got = bulk.extend(hashes)
        assert sorted(got) == sorted(expected)
        for level in {lvl for lvl, _, _ in got}:  # level by level, each in index order
            indexes = [i for lvl, i, _ in got if lvl == level]
            assert indexes == sorted(indexes)
        assert bulk.size == one.size and bulk.root() == one.root()
    with pytest.raises(MalformedError):
        bulk.extend([b"short"])


@given(st.lists(st.integers(0, 300), min_size=1, max_size=6), st.randoms(use_true_random=False))
@settings(max_examples=100, deadline=None)
def test_frontier_extend_levels_equals_appends(batches: list[int], rnd: Any) -> None:
    one, bulk = Frontier(), Frontier()
    appended: list[bytes] = []
    everything: list[tuple[int, int, bytes]] = []
    for n in batches:
        hashes = [rnd.randbytes(32) for _ in range(n)]
        appended += hashes
        old = one.size
        expected = [node for h in hashes for node in one.append(h)]
        everything += expected
        levels = bulk.extend_levels(hashes)
        new = one.size
        # One list per level that gained a node, each in index order from old >> level.
        assert len(levels) == (old ^ new).bit_length()
        for level, values in enumerate(levels):
            want = sorted((i, h) for lvl, i, h in expected if lvl == level)
            assert [i for i, _ in want] == list(range(old >> level, new >> level))
            assert values == [h for _, h in want]
        run = NodeLevels(old, levels)
        assert len(run) == len(expected)
        assert list(run) == sorted(expected, key=lambda t: (t[0], t[1]))
        if expected:
            assert run[0] == (0, old, hashes[0]) and run[-1] == list(run)[-1]
            assert run[1:3] == list(run)[1:3]
        assert bulk.size == one.size and bulk.root() == one.root()
    # One call over everything gives every node the single appends gave, level by level.
    assert list(NodeLevels(0, Frontier().extend_levels(appended))) == sorted(
        everything, key=lambda t: (t[0], t[1])
    )
    with pytest.raises(MalformedError):
        bulk.extend_levels([b"short"])
