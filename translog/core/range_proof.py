"""Range proofs: one proof for a contiguous run of leaves, instead of one audit path each.

A range proof lets a verifier who holds the leaf hashes of a contiguous run [start, end)
recompute the root of the tree of ``size`` leaves. It is defined by one deterministic
recursion over the RFC 6962 split (§2.1: split [lo, hi) at lo + k, k the largest power of two
below hi - lo):

* a subtree disjoint from [start, end) that is perfect (a power-of-two width) is one proof
  element, a stored node;
* a disjoint subtree that is not perfect lies on the right edge and is split again, so every
  element is a complete node that storage holds;
* a subtree that overlaps [start, end) is split down to its leaves, whose hashes the verifier
  already has.

Elements are listed in the order the recursion meets them: left before right, depth first.
A batch receipt thus carries about 2 * log2(size) hashes, not one audit path per entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from translog.core.merkle import NODE_PREFIX, HashReader, check_hash, check_proof_hashes
from translog.errors import InvalidProofError, MalformedError

_sha256 = hashlib.sha256


def _check_range(start: int, end: int, size: int) -> None:
    """Raise MalformedError unless ``0 <= start < end <= size``."""
    if not 0 <= start < end <= size:
        raise MalformedError(f"invalid leaf range [{start}, {end}) for tree size {size}")


def range_proof_nodes(start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Return the complete nodes ``(level, index)`` of the range proof, in proof order."""
    _check_range(start, end, size)
    nodes: list[tuple[int, int]] = []

    def walk(lo: int, hi: int) -> None:
        width = hi - lo
        if hi <= start or lo >= end:
            if width & (width - 1) == 0:
                level = width.bit_length() - 1
                nodes.append((level, lo >> level))
                return
        elif start <= lo and hi <= end:
            return  # inside the range: the verifier hashes it from leaves, no proof element
        k = 1 << ((width - 1).bit_length() - 1)
        walk(lo, lo + k)
        walk(lo + k, hi)

    walk(0, size)
    return nodes


def prove_range(start: int, end: int, size: int, reader: HashReader) -> tuple[bytes, ...]:
    """Return the range proof for leaves ``[start, end)`` in the tree of ``size``, in one read.

    Requires ``0 <= start < end <= size``.
    """
    nodes = range_proof_nodes(start, end, size)
    if not nodes:
        return ()
    return tuple(reader.read_hashes(nodes))


def _range_hashes(
    start: int, end: int, size: int, leaf_hashes: Sequence[bytes], proof: Sequence[bytes]
) -> dict[tuple[int, int], bytes]:
    """Rebuild the hash of every subtree the range recursion visits, keyed by ``(lo, hi)``.

    Validates the arguments strictly (InvalidProofError): the range, the number of leaf
    hashes, every hash length and the exact proof length.
    """
    if not 0 <= start < end <= size:
        raise InvalidProofError(f"invalid leaf range [{start}, {end}) for tree size {size}")
    if len(leaf_hashes) != end - start:
        raise InvalidProofError(
            f"range [{start}, {end}) needs {end - start} leaf hashes, got {len(leaf_hashes)}"
        )
    for i, h in enumerate(leaf_hashes):
        check_hash(f"leaf hash {start + i}", h)
    check_proof_hashes("range", proof)
    expected = len(range_proof_nodes(start, end, size))
    if len(proof) != expected:
        raise InvalidProofError(
            f"range proof has wrong length: expected {expected}, got {len(proof)}"
        )
    known: dict[tuple[int, int], bytes] = {}
    elements = iter(proof)
    sha = _sha256
    prefix = NODE_PREFIX

    def walk(lo: int, hi: int) -> bytes:
        width = hi - lo
        if (hi <= start or lo >= end) and width & (width - 1) == 0:
            h = next(elements)
        elif width == 1:
            h = leaf_hashes[lo - start]
        else:
            k = 1 << ((width - 1).bit_length() - 1)
            h = sha(prefix + walk(lo, lo + k) + walk(lo + k, hi)).digest()
        known[(lo, hi)] = h
        return h

    walk(0, size)
    return known


def root_from_range(
    start: int, end: int, size: int, leaf_hashes: Sequence[bytes], proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` and the leaf hashes of ``[start, end)`` give for ``size``.

    Raises InvalidProofError for a bad range, a wrong number of leaf hashes, a wrong proof
    length or any hash that is not 32 bytes. The caller compares the result with a trusted root.
    """
    return _range_hashes(start, end, size, leaf_hashes, proof)[(0, size)]


def verify_range(
    start: int,
    end: int,
    size: int,
    leaf_hashes: Sequence[bytes],
    proof: Sequence[bytes],
    root: bytes,
) -> None:
    """Check that leaves ``[start, end)`` with these hashes sit in the tree of ``size``/``root``.

    Strict like :func:`~translog.core.merkle.verify_inclusion`. Raises InvalidProofError.
    """
    check_hash("root hash", root)
    if root_from_range(start, end, size, leaf_hashes, proof) != root:
        raise InvalidProofError(
            f"range proof for [{start}, {end}) does not match the root of size {size}"
        )


def inclusion_proofs_from_range(
    start: int, end: int, size: int, leaf_hashes: Sequence[bytes], proof: Sequence[bytes]
) -> list[tuple[bytes, ...]]:
    """Derive the RFC 9162 inclusion proof of every leaf in ``[start, end)`` from a range proof.

    Every sibling on the audit path of a leaf in the range is a subtree the range recursion
    visits, so its hash is known. The result is only as trustworthy as the range proof: check
    it with :func:`verify_range` (or verify each derived proof) against a trusted root.
    """
    known = _range_hashes(start, end, size, leaf_hashes, proof)
    proofs: list[tuple[bytes, ...]] = []
    for index in range(start, end):
        # RFC 9162 §2.1.3.1 PATH(m, D[lo:hi]), walked from the root down, then reversed.
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append(known[(lo + k, hi)])
                hi = lo + k
            else:
                path.append(known[(lo, lo + k)])
                lo += k
        proofs.append(tuple(reversed(path)))
    return proofs
