"""Misbehaviour files: what is provable offline, and what is not."""

from __future__ import annotations

import json

import pytest

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.merkle import MemoryHashes, leaf_hash, prove_consistency, tree_hash
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import MalformedError, VerificationError
from translog.formats.misbehaviour import (
    KIND_EMPTY,
    KIND_FORK,
    ForkProof,
    Misbehaviour,
    format_misbehaviour,
    parse_misbehaviour,
    verify_misbehaviour,
)

ORIGIN = "test.example/forked"


def tree(leaves: list[bytes]) -> MemoryHashes:
    return MemoryHashes(leaf_hash(x) for x in leaves)


def note(signer: NoteSigner, t: MemoryHashes, size: int | None = None) -> bytes:
    n = t.size if size is None else size
    return sign_checkpoint(Checkpoint(ORIGIN, n, tree_hash(n, t)), signer)


@pytest.mark.parametrize("old", [16, 13, 1])  # 16: a power of two, the proof omits its root
def test_fork_proof_verifies_for_every_old_size(old: int) -> None:
    signer = NoteSigner.generate(ORIGIN)
    a = tree([b"a%d" % i for i in range(old)])
    b = tree([b"a%d" % i for i in range(old - 1)] + [b"evil"] + [b"b%d" % i for i in range(9)])
    fork = ForkProof(old, b.size, prove_consistency(old, b.size, b), tree_hash(old, b))
    m = Misbehaviour(ORIGIN, KIND_FORK, note(signer, a), note(signer, b), fork)
    data = format_misbehaviour(m)
    assert parse_misbehaviour(data) == m
    proven = verify_misbehaviour(data, parse_vkey(signer.vkey))
    assert "neither history is a prefix" in proven.statement
    # The checkpoints may come in either order.
    swapped = Misbehaviour(ORIGIN, KIND_FORK, m.newer, m.older, fork)
    verify_misbehaviour(format_misbehaviour(swapped), parse_vkey(signer.vkey))


def test_what_does_not_prove_misbehaviour() -> None:
    signer = NoteSigner.generate(ORIGIN)
    v = parse_vkey(signer.vkey)
    honest = tree([b"e%d" % i for i in range(20)])
    small, big = note(signer, honest, 7), note(signer, honest)
    good = ForkProof(7, 20, prove_consistency(7, 20, honest), tree_hash(7, honest))
    cases = {
        "is a prefix": Misbehaviour(ORIGIN, KIND_FORK, small, big, good),
        "no consistency proof": Misbehaviour(ORIGIN, KIND_FORK, small, big, None),
        "the proof is for sizes": Misbehaviour(
            ORIGIN, KIND_FORK, small, big, ForkProof(6, 20, good.proof, good.old_root_in_new_tree)
        ),
        "does not verify against the larger": Misbehaviour(
            ORIGIN, KIND_FORK, small, big, ForkProof(7, 20, good.proof, bytes(32))
        ),
        "the same root": Misbehaviour(ORIGIN, KIND_FORK, big, big, None),
    }
    for why, m in cases.items():
        with pytest.raises(VerificationError, match=why):
            verify_misbehaviour(format_misbehaviour(m), v)
    # Another key cannot frame the log.
    other = NoteSigner.generate(ORIGIN)
    forged = Misbehaviour(ORIGIN, KIND_FORK, note(other, tree([b"x"])), small, None)
    with pytest.raises(VerificationError, match=r"checkpoints\[0\]"):
        verify_misbehaviour(format_misbehaviour(forged), v)


def test_impossible_empty_tree_and_strict_parsing() -> None:
    signer = NoteSigner.generate(ORIGIN)
    empty = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), signer)
    some = note(signer, tree([b"x"]))
    data = format_misbehaviour(Misbehaviour(ORIGIN, KIND_EMPTY, empty, some))
    assert verify_misbehaviour(data, parse_vkey(signer.vkey)).misbehaviour.kind == KIND_EMPTY
    obj = json.loads(data)
    for field, value in (("format", "x"), ("kind", "nope"), ("checkpoints", ["one"])):
        bad = dict(obj, **{field: value})
        with pytest.raises(MalformedError):
            parse_misbehaviour(json.dumps(bad).encode())
    with pytest.raises(MalformedError, match="unknown field"):
        parse_misbehaviour(json.dumps(dict(obj, extra=1)).encode())
