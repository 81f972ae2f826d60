"""translog.core.merkle against the shared vectors: transparency-dev probes, the RFC 6962 reference
tree, certificate-transparency-go tables, real Argon 2020 CT proofs, and the Frontier."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tests.vectors import b64, load_json, probe_files
from translog.core.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    MemoryHashes,
    leaf_hash,
    node_hash,
    prove_consistency,
    prove_inclusion,
    root_from_inclusion_proof,
    subtree_nodes,
    tree_hash,
    tree_hash_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from translog.errors import InvalidProofError, MalformedError, NotFoundError

REF = load_json("transparency-dev-merkle/reference_tree.json")
REF_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in REF["leaf_inputs_hex"]]
REF_ROOTS = {int(k): bytes.fromhex(v) for k, v in REF["root_hash_by_tree_size_hex"].items()}
CT = load_json("ct-go-merkletree/vectors.json")

# Probes where translog is deliberately stricter than upstream, with the reason. For these we
# assert OUR verdict (rejection); the entry fails loudly if upstream's verdict ever changes.
STRICTER_THAN_UPSTREAM = {
    "transparency-dev-merkle/consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": (
        "roots are the 12-byte string 'don't care 2'; PROTOCOLS.md §1 requires 32-byte hashes"
    ),
}


def _ref_tree() -> MemoryHashes:
    return MemoryHashes(REF_LEAVES)


def _hexes(values: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(v) for v in values)


def _probe_id(path: str) -> str:
    return path.removeprefix("transparency-dev-merkle/")


def _proof(probe: dict[str, Any]) -> list[bytes]:
    return [b64(p) for p in probe["proof"] or []]


class CountingReader:
    """Wraps a reader and counts read_hashes calls."""

    def __init__(self, inner: MemoryHashes) -> None:
        self.inner = inner
        self.calls = 0

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        self.calls += 1
        return self.inner.read_hashes(nodes)


# --- transparency-dev/merkle probes ---------------------------------------------------------


def _probe_is_reference(probe: dict[str, Any], size_key: str, root_key: str) -> bool:
    size = probe[size_key]
    return 0 < size <= 8 and b64(probe[root_key]) == REF_ROOTS[size]


@pytest.mark.parametrize("path", probe_files("inclusion"), ids=_probe_id)
def test_inclusion_probe(path: str) -> None:
    probe = load_json(path)
    args = (b64(probe["leafHash"]), probe["leafIdx"], probe["treeSize"], _proof(probe))
    if probe["wantErr"]:
        with pytest.raises(InvalidProofError):
            verify_inclusion(*args, b64(probe["root"]))
        return
    verify_inclusion(*args, b64(probe["root"]))
    if _probe_is_reference(probe, "treeSize", "root"):
        got = prove_inclusion(probe["leafIdx"], probe["treeSize"], _ref_tree())
        assert list(got) == _proof(probe)


@pytest.mark.parametrize("path", probe_files("consistency"), ids=_probe_id)
def test_consistency_probe(path: str) -> None:
    probe = load_json(path)
    args = (probe["size1"], probe["size2"], b64(probe["root1"]), b64(probe["root2"]))
    if probe["wantErr"] or path in STRICTER_THAN_UPSTREAM:
        with pytest.raises(InvalidProofError):
            verify_consistency(*args, _proof(probe))
        return
    verify_consistency(*args, _proof(probe))
    if _probe_is_reference(probe, "size1", "root1") and _probe_is_reference(
        probe, "size2", "root2"
    ):
        got = prove_consistency(probe["size1"], probe["size2"], _ref_tree())
        assert list(got) == _proof(probe)


@pytest.mark.parametrize("path", sorted(STRICTER_THAN_UPSTREAM))
def test_stricter_than_upstream_is_still_accurate(path: str) -> None:
    # Upstream accepts this probe; if that changes, drop it from the exception list.
    assert load_json(path)["wantErr"] is False


# --- the RFC 6962 reference tree --------------------------------------------------------------


def test_empty_root_and_hash_prefixes() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest() == REF_ROOTS[0]
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    assert (
        node_hash(b"l" * 32, b"r" * 32) == hashlib.sha256(b"\x01" + b"l" * 32 + b"r" * 32).digest()
    )
    assert HASH_SIZE == 32


@pytest.mark.parametrize("i", range(8), ids=lambda i: f"leaf-{i}")
def test_reference_leaf_hash(i: int) -> None:
    assert REF_LEAVES[i] == bytes.fromhex(REF["leaf_hashes_hex"][i])


def test_reference_node_hashes_every_level() -> None:
    tree = _ref_tree()
    for level, row in enumerate(REF["node_hashes_by_level_hex"]):
        nodes = [(level, i) for i in range(len(row))]
        assert tree.read_hashes(nodes) == list(_hexes(row)), f"level {level}"
        if level:
            below = REF["node_hashes_by_level_hex"][level - 1]
            for i, h in enumerate(row):
                kids = _hexes(below[2 * i : 2 * i + 2])
                assert node_hash(*kids) == bytes.fromhex(h)


@pytest.mark.parametrize("size", range(9), ids=lambda n: f"size-{n}")
def test_reference_roots(size: int) -> None:
    tree = _ref_tree()
    assert tree_hash(size, tree) == REF_ROOTS[size]
    assert tree_hash_from_leaf_hashes(REF_LEAVES[:size]) == REF_ROOTS[size]
    assert MemoryHashes(REF_LEAVES[:size]).root() == REF_ROOTS[size]


@pytest.mark.parametrize("size", range(9), ids=lambda n: f"size-{n}")
def test_reference_compact_ranges(size: int) -> None:
    want = REF["compact_range_by_tree_size"][str(size)]
    nodes = subtree_nodes(0, size)
    assert nodes == [(n["level"], n["index"]) for n in want]
    assert _ref_tree().read_hashes(nodes) == [bytes.fromhex(n["hash"]) for n in want]


def _incl_id(v: dict[str, Any]) -> str:
    return f"index-{v['leaf_index']}-size-{v['tree_size']}"


def _cons_id(v: dict[str, Any]) -> str:
    return f"{v['size1']}-to-{v['size2']}"


@pytest.mark.parametrize("vec", REF["inclusion_proofs"], ids=_incl_id)
def test_reference_inclusion_proofs(vec: dict[str, Any]) -> None:
    want = _hexes(vec["proof_hex"])
    assert prove_inclusion(vec["leaf_index"], vec["tree_size"], _ref_tree()) == want
    leaf = leaf_hash(bytes.fromhex(vec["leaf_input_hex"]))
    verify_inclusion(
        leaf, vec["leaf_index"], vec["tree_size"], want, bytes.fromhex(vec["root_hex"])
    )


@pytest.mark.parametrize("vec", REF["consistency_proofs"], ids=_cons_id)
def test_reference_consistency_proofs(vec: dict[str, Any]) -> None:
    want = _hexes(vec["proof_hex"])
    assert prove_consistency(vec["size1"], vec["size2"], _ref_tree()) == want
    roots = bytes.fromhex(vec["root1_hex"]), bytes.fromhex(vec["root2_hex"])
    verify_consistency(vec["size1"], vec["size2"], *roots, want)


# --- certificate-transparency-go tables -------------------------------------------------------

CT_LEAVES = [leaf_hash(bytes.fromhex(x)) for x in CT["leaf_inputs_hex"]]


def test_ct_go_roots() -> None:
    tree = MemoryHashes(CT_LEAVES)
    assert tree_hash(0, tree).hex() == CT["empty_tree_root_hex"]
    for size, root in CT["root_hash_by_tree_size_hex"].items():
        assert tree_hash(int(size), tree).hex() == root, f"size {size}"


@pytest.mark.parametrize("vec", CT["inclusion_proofs"], ids=_incl_id)
def test_ct_go_inclusion(vec: dict[str, Any]) -> None:
    want = _hexes(vec["proof_hex"])
    assert prove_inclusion(vec["leaf_index"], vec["tree_size"], MemoryHashes(CT_LEAVES)) == want
    leaf = leaf_hash(bytes.fromhex(vec["leaf_input_hex"]))
    verify_inclusion(
        leaf, vec["leaf_index"], vec["tree_size"], want, bytes.fromhex(vec["root_hex"])
    )


@pytest.mark.parametrize("vec", CT["consistency_proofs"], ids=_cons_id)
def test_ct_go_consistency(vec: dict[str, Any]) -> None:
    want = _hexes(vec["proof_hex"])
    assert prove_consistency(vec["size1"], vec["size2"], MemoryHashes(CT_LEAVES)) == want
    roots = bytes.fromhex(vec["root1_hex"]), bytes.fromhex(vec["root2_hex"])
    verify_consistency(vec["size1"], vec["size2"], *roots, want)


def _legacy_id(v: dict[str, Any]) -> str:
    verdict = "legacy-accepted-we-reject" if v["legacy_valid"] else "legacy-rejected"
    return f"{v['size1']}-to-{v['size2']}-{verdict}-{v['note'].replace(' ', '-')}"


@pytest.mark.parametrize("vec", CT["consistency_edge_cases_legacy_semantics"], ids=_legacy_id)
def test_ct_go_legacy_consistency_edge_cases_our_verdict(vec: dict[str, Any]) -> None:
    # The old CT-go verifier accepted size1 == 0 (0->0, 0->1 with an empty proof) and did not
    # check hash lengths ("don't care" roots). translog follows transparency-dev/merkle at HEAD
    # and PROTOCOLS.md §1: size1 == 0 is always rejected and every hash must be 32 bytes, so
    # every one of these edge cases is rejected, including the legacy-accepted ones.
    roots = bytes.fromhex(vec["root1_hex"]), bytes.fromhex(vec["root2_hex"])
    with pytest.raises(InvalidProofError):
        verify_consistency(vec["size1"], vec["size2"], *roots, _hexes(vec["proof_hex"]))


@pytest.mark.parametrize(
    "vec", CT["inclusion_edge_cases"], ids=lambda v: f"{_incl_id(v)}-{v['note'].replace(' ', '-')}"
)
def test_ct_go_inclusion_edge_cases_rejected(vec: dict[str, Any]) -> None:
    leaf = leaf_hash(bytes.fromhex(vec["leaf_input_hex"]))
    with pytest.raises(InvalidProofError):
        verify_inclusion(
            leaf,
            vec["leaf_index"],
            vec["tree_size"],
            _hexes(vec["proof_hex"]),
            bytes.fromhex(vec["root_hex"]),
        )


# --- real CT data: Google Argon 2020 ---------------------------------------------------------

ARGON = "golang-mod-sumdb/argon2020/"


def _argon_inclusion() -> tuple[bytes, int, int, list[bytes], bytes]:
    sth = load_json(ARGON + "sth.json")
    proof = load_json(ARGON + "proof.json")
    entry = load_json(ARGON + "entries.json")["entries"][0]
    leaf = leaf_hash(b64(entry["leaf_input"]))
    path = [b64(p) for p in proof["audit_path"]]
    return leaf, proof["leaf_index"], sth["tree_size"], path, b64(sth["sha256_root_hash"])


def _argon_consistency() -> tuple[int, int, bytes, bytes, list[bytes]]:
    sth = load_json(ARGON + "sth.json")
    old = load_json(ARGON + "old_tree.json")
    proof = [b64(p) for p in load_json(ARGON + "consistency.json")["consistency"]]
    old_root, new_root = b64(old["sha256_root_hash"]), b64(sth["sha256_root_hash"])
    return old["tree_size"], sth["tree_size"], old_root, new_root, proof


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_argon2020_inclusion() -> None:
    leaf, index, size, path, root = _argon_inclusion()
    assert (index, size, len(path)) == (10000, 961984013, 30)
    verify_inclusion(leaf, index, size, path, root)
    assert root_from_inclusion_proof(leaf, index, size, path) == root


def test_argon2020_consistency() -> None:
    old_size, new_size, old_root, new_root, proof = _argon_consistency()
    assert (old_size, new_size, len(proof)) == (3654490, 961984013, 30)
    verify_consistency(old_size, new_size, old_root, new_root, proof)


@pytest.mark.parametrize("element", range(30), ids=lambda i: f"element-{i}")
def test_argon2020_inclusion_any_bit_flip_fails(element: int) -> None:
    leaf, index, size, path, root = _argon_inclusion()
    for bit in range(HASH_SIZE * 8):
        bad = list(path)
        bad[element] = _flip(bad[element], bit)
        with pytest.raises(InvalidProofError):
            verify_inclusion(leaf, index, size, bad, root)


@pytest.mark.parametrize("element", range(30), ids=lambda i: f"element-{i}")
def test_argon2020_consistency_any_bit_flip_fails(element: int) -> None:
    old_size, new_size, old_root, new_root, proof = _argon_consistency()
    for bit in range(HASH_SIZE * 8):
        bad = list(proof)
        bad[element] = _flip(bad[element], bit)
        with pytest.raises(InvalidProofError):
            verify_consistency(old_size, new_size, old_root, new_root, bad)


# --- argument checking and the reader contract -----------------------------------------------


def _leaves(n: int, salt: bytes = b"") -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(8, "big")) for i in range(n)]


@pytest.mark.parametrize(("index", "size"), [(0, 0), (5, 5), (6, 5), (-1, 5)], ids=lambda v: str(v))
def test_prove_inclusion_rejects_bad_arguments(index: int, size: int) -> None:
    with pytest.raises(MalformedError):
        prove_inclusion(index, size, MemoryHashes(_leaves(8)))


@pytest.mark.parametrize(("old", "new"), [(0, 0), (0, 5), (6, 5), (-1, 3)], ids=lambda v: str(v))
def test_prove_consistency_rejects_bad_arguments(old: int, new: int) -> None:
    with pytest.raises(MalformedError):
        prove_consistency(old, new, MemoryHashes(_leaves(8)))


def test_prove_beyond_stored_tree_raises_not_found() -> None:
    tree = MemoryHashes(_leaves(5))
    with pytest.raises(NotFoundError):
        prove_inclusion(0, 6, tree)
    with pytest.raises(NotFoundError):
        prove_consistency(3, 8, tree)
    with pytest.raises(NotFoundError):
        tree_hash(6, tree)


def test_memory_hashes_rejects_negative_and_incomplete_nodes() -> None:
    tree = MemoryHashes(_leaves(5))
    for node in [(0, -1), (-1, 0), (1, 2), (3, 0), (0, 5)]:
        with pytest.raises(NotFoundError):
            tree.read_hashes([node])
    with pytest.raises(MalformedError):
        tree.append(b"short")


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100], ids=lambda n: f"size-{n}")
def test_one_read_per_operation(size: int) -> None:
    ops: list[Callable[[CountingReader], object]] = [
        lambda r: tree_hash(size, r),
        lambda r: prove_inclusion(size // 2, size, r),
        lambda r: prove_consistency(max(1, size // 3), size, r),
    ]
    for op in ops:
        reader = CountingReader(MemoryHashes(_leaves(size)))
        proof = op(reader)
        # A proof with no elements needs no read at all; anything else needs exactly one.
        assert reader.calls == (1 if proof else 0)


def test_subtree_nodes_ranges() -> None:
    assert subtree_nodes(0, 0) == []
    assert subtree_nodes(3, 3) == []
    assert subtree_nodes(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert subtree_nodes(1, 8) == [(0, 1), (1, 1), (2, 1)]
    assert subtree_nodes(5, 13) == [(0, 5), (1, 3), (2, 2), (0, 12)]
    with pytest.raises(MalformedError):
        subtree_nodes(4, 3)
    with pytest.raises(MalformedError):
        subtree_nodes(-1, 3)


@pytest.mark.parametrize("hi", range(0, 40), ids=lambda n: f"hi-{n}")
def test_subtree_nodes_cover_range_with_aligned_nodes(hi: int) -> None:
    for lo in range(hi + 1):
        nodes = subtree_nodes(lo, hi)
        pos = lo
        for level, index in nodes:
            assert index << level == pos
            pos += 1 << level
        assert pos == hi
        # Maximal: no two neighbours could merge into one aligned node.
        for (l1, i1), (l2, i2) in itertools.pairwise(nodes):
            assert not (l1 == l2 and i1 % 2 == 0 and i2 == i1 + 1)


def test_verify_rejects_wrong_hash_lengths() -> None:
    leaves = _leaves(5)
    tree = MemoryHashes(leaves)
    proof = prove_inclusion(1, 5, tree)
    root = tree.root()
    verify_inclusion(leaves[1], 1, 5, proof, root)
    for bad in (leaves[1][:31], leaves[1] + b"\x00", b""):
        with pytest.raises(InvalidProofError):
            verify_inclusion(bad, 1, 5, proof, root)
        with pytest.raises(InvalidProofError, match="root hash has wrong length"):
            verify_inclusion(leaves[1], 1, 5, proof, bad)
        with pytest.raises(InvalidProofError):
            verify_inclusion(leaves[1], 1, 5, [bad, *proof[1:]], root)
    with pytest.raises(InvalidProofError, match="expected 3, got 2"):
        verify_inclusion(leaves[1], 1, 5, proof[:2], root)


# --- Frontier ---------------------------------------------------------------------------------

LEAVES_300 = _leaves(300, b"frontier")
TREE_300 = MemoryHashes(LEAVES_300)


def _expected_created(n: int) -> list[tuple[int, int, bytes]]:
    """Nodes completed by appending leaf n: level l is completed iff 2**l divides n + 1."""
    nodes = [(0, n)]
    level = 1
    while (n + 1) % (1 << level) == 0:
        nodes.append((level, (n + 1 >> level) - 1))
        level += 1
    return [(lv, i, h) for (lv, i), h in zip(nodes, TREE_300.read_hashes(nodes), strict=True)]


def test_frontier_append_returns_exactly_the_completed_nodes() -> None:
    frontier = Frontier()
    for n, leaf in enumerate(LEAVES_300):
        assert frontier.append(leaf) == _expected_created(n), f"leaf {n}"
        assert frontier.size == n + 1


def test_frontier_fourth_leaf_completes_three_nodes() -> None:
    frontier = Frontier()
    for leaf in LEAVES_300[:3]:
        frontier.append(leaf)
    got = [(level, index) for level, index, _ in frontier.append(LEAVES_300[3])]
    assert got == [(0, 3), (1, 1), (2, 0)]


def test_frontier_root_matches_tree_hash_for_sizes_0_to_300() -> None:
    frontier = Frontier()
    assert frontier.root() == EMPTY_ROOT
    for n, leaf in enumerate(LEAVES_300):
        assert frontier.root() == tree_hash(n, TREE_300), f"size {n}"
        frontier.append(leaf)
    assert frontier.root() == tree_hash(300, TREE_300)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 63, 64, 65, 127, 200, 255, 256, 299])
def test_frontier_from_reader_restores(size: int) -> None:
    restored = Frontier.from_reader(size, TREE_300)
    assert restored.size == size
    assert restored.root() == tree_hash(size, TREE_300)
    fresh = Frontier()
    for leaf in LEAVES_300[:size]:
        fresh.append(leaf)
    for n in range(size, min(size + 20, 300)):
        assert restored.append(LEAVES_300[n]) == fresh.append(LEAVES_300[n])
        assert restored.root() == fresh.root()


def test_frontier_copy_is_independent() -> None:
    original = Frontier()
    for leaf in LEAVES_300[:7]:
        original.append(leaf)
    root7 = original.root()
    tentative = original.copy()
    for leaf in LEAVES_300[7:20]:
        tentative.append(leaf)
    assert (original.size, original.root()) == (7, root7)
    assert tentative.root() == tree_hash(20, TREE_300)
    original.append(LEAVES_300[7])
    assert tentative.root() == tree_hash(20, TREE_300)
    assert original.root() == tree_hash(8, TREE_300)


def test_frontier_rejects_bad_leaf_hash() -> None:
    frontier = Frontier()
    with pytest.raises(MalformedError):
        frontier.append(b"\x00" * 31)
    assert frontier.size == 0
