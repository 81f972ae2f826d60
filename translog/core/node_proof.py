"""Proofs about interior nodes, for monitor evidence: the audit path of a complete node, the
root it gives, and the two roots a consistency proof implies."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from translog.core.merkle import (
    NODE_PREFIX,
    HashReader,
    assemble_audit_path,
    check_hash,
    check_proof_hashes,
    consistency_proof_roots,
    plan_audit_path,
)
from translog.errors import InvalidProofError, MalformedError

_sha256 = hashlib.sha256


def prove_node_inclusion(
    level: int, index: int, size: int, reader: HashReader
) -> tuple[bytes, ...]:
    """The audit path of the complete node ``(level, index)`` in the tree of ``size``.

    It is the inclusion proof of leaf ``index << level`` without its first ``level`` elements
    (those lie inside the node's subtree). Requires ``(index + 1) << level <= size``.
    """
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise MalformedError(f"node ({level}, {index}) is not complete in a tree of size {size}")
    nodes, split, tail = plan_audit_path(level, index, size)
    if not nodes:
        return ()
    return assemble_audit_path(reader.read_hashes(nodes), split, tail)


def root_from_node_proof(
    level: int, index: int, size: int, node: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` gives for the hash ``node`` of the complete node ``(level, index)``.

    The counterpart of :func:`prove_node_inclusion`; strict like
    :func:`~translog.core.merkle.root_from_inclusion_proof` (InvalidProofError for an
    incomplete node, a wrong proof length or a hash that is not 32 bytes).
    """
    if level < 0 or index < 0 or (index + 1) << level > size:
        raise InvalidProofError(f"node ({level}, {index}) is not complete in a tree of size {size}")
    check_hash("node hash", node)
    check_proof_hashes("node inclusion", proof)
    first = index << level
    inner = (first ^ (size - 1)).bit_length()
    expected = inner + (first >> inner).bit_count() - level
    if len(proof) != expected:
        raise InvalidProofError(
            f"node inclusion proof has wrong length: expected {expected}, got {len(proof)}"
        )
    sha = _sha256
    prefix = NODE_PREFIX
    h = node
    for j, i in enumerate(range(level, inner)):
        if (first >> i) & 1:
            h = sha(prefix + proof[j] + h).digest()
        else:
            h = sha(prefix + h + proof[j]).digest()
    for j in range(max(inner - level, 0), expected):
        h = sha(prefix + proof[j] + h).digest()
    return h


def consistency_roots(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes]:
    """The (old root, new root) a consistency proof implies, without judging them.

    When ``old_size`` is a power of two the old tree is a node of the new one and the proof
    does not carry it: ``old_root`` seeds the computation (and is returned as the old root).
    Used to tell a fork (the proof rebuilds the new root but gives another old root) from a
    bad proof. Raises InvalidProofError for bad sizes or a wrong proof length.
    """
    if not 0 < old_size < new_size:
        raise InvalidProofError(f"no consistency proof from size {old_size} to {new_size}")
    check_hash("old root hash", old_root)
    check_proof_hashes("consistency", proof)
    return consistency_proof_roots(old_size, new_size, proof, old_root)
