"""Witness policies and .tlog-proof files: parsing, quorum logic, offline verification."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translog.core.checkpoint import Checkpoint, format_checkpoint, sign_checkpoint
from translog.core.merkle import MemoryHashes, leaf_hash, prove_inclusion
from translog.core.note import format_note, parse_note
from translog.core.policy import parse_policy
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import (
    ConfigError,
    InvalidProofError,
    MalformedError,
    UnknownKeyError,
    VerificationError,
)
from translog.formats.proof import TlogProof, format_proof, parse_proof, verify_proof

ORIGIN = "proof.example/log"
LOG = NoteSigner.generate(ORIGIN)
W = {n: CosignatureSigner.generate(f"w{n}.example") for n in range(1, 5)}


def policy_text(quorum: str, groups: str = "") -> str:
    lines = [f"log {LOG.vkey} https://proof.example/log"]
    lines += [f"witness W{n} {w.vkey}" for n, w in W.items()]
    return "\n".join([*lines, groups, f"quorum {quorum}", ""])


def cosigned(cp: Checkpoint, *witnesses: int, ts: int = 1_700_000_000) -> bytes:
    note = parse_note(sign_checkpoint(cp, LOG))
    text = format_checkpoint(cp)
    sigs = note.signatures + tuple(W[n].cosign(text, ts) for n in witnesses)
    return format_note(type(note)(note.text, sigs))


def tree(n: int) -> tuple[MemoryHashes, list[bytes]]:
    leaves = [b"leaf %d" % i for i in range(n)]
    return MemoryHashes(leaf_hash(x) for x in leaves), leaves


@pytest.mark.parametrize(
    ("groups", "quorum", "signers", "ok"),
    [
        ("", "none", [], True),
        ("", "W1", [1], True),
        ("", "W1", [2], False),
        ("group g 2 W1 W2 W3", "g", [1, 3], True),
        ("group g 2 W1 W2 W3", "g", [3], False),
        ("group g any W1 W2", "g", [2], True),
        ("group g all W1 W2", "g", [1], False),
        ("group a any W1 W2\ngroup b any W3 W4\ngroup ab all a b", "ab", [2, 4], True),
        ("group a any W1 W2\ngroup b any W3 W4\ngroup ab all a b", "ab", [1, 2], False),
    ],
)
def test_quorum(groups: str, quorum: str, signers: list[int], ok: bool) -> None:
    policy = parse_policy(policy_text(quorum, groups))
    cp = Checkpoint(ORIGIN, 3, leaf_hash(b"r"))
    note = parse_note(cosigned(cp, *signers))
    if ok:
        assert policy.verify(note.text, note.signatures) == {f"W{n}" for n in signers}
    else:
        with pytest.raises(VerificationError, match="policy not satisfied"):
            policy.verify(note.text, note.signatures)


def test_bad_cosignature_from_known_witness_fails() -> None:
    policy = parse_policy(policy_text("W1"))
    cp = Checkpoint(ORIGIN, 3, leaf_hash(b"r"))
    other = Checkpoint(ORIGIN, 4, leaf_hash(b"r"))
    note = parse_note(sign_checkpoint(cp, LOG))
    wrong = W[1].cosign(format_checkpoint(other), 5)  # cosigned a different checkpoint
    with pytest.raises(VerificationError, match="witness W1"):
        policy.verify(note.text, (*note.signatures, wrong))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quorum none\nquorum none", "twice"),
        ("", "no quorum"),
        ("quorum W9", "unknown quorum"),
        (f"witness A {W[1].vkey}\nwitness A {W[2].vkey}\nquorum A", "already defined"),
        (f"witness A {W[1].vkey}\ngroup g 3 A\nquorum g", "between 1 and 1"),
        (f"witness A {W[1].vkey}\ngroup g x A\nquorum g", "threshold"),
        ("group g any nobody\nquorum g", "unknown member"),
        ("witness A notavkey\nquorum A", "line 1"),
        ("frobnicate\nquorum none", "line 1"),
    ],
)
def test_policy_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_policy(text)


def test_proof_file_round_trip_and_verify() -> None:
    hashes, leaves = tree(37)
    cp = Checkpoint(ORIGIN, 37, hashes.root())
    proof = TlogProof(21, prove_inclusion(21, 37, hashes), cosigned(cp, 1, 2), leaves[21])
    data = format_proof(proof)
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra ")
    assert parse_proof(data) == proof
    verifier = parse_vkey(LOG.vkey)
    assert verify_proof(parse_proof(data), verifier, origin=ORIGIN) == cp
    verify_proof(proof, verifier, policy=parse_policy(policy_text("g", "group g 2 W1 W2 W3")))
    with pytest.raises(VerificationError, match="policy"):
        verify_proof(proof, verifier, policy=parse_policy(policy_text("W3")))
    with pytest.raises(VerificationError, match="differs"):
        verify_proof(proof, verifier, leaf=leaves[20])
    with pytest.raises(InvalidProofError):
        verify_proof(TlogProof(20, proof.hashes, proof.checkpoint, leaves[21]), verifier)


def test_spec_example_layout_parses() -> None:
    hashes, leaves = tree(5)
    cp = Checkpoint(ORIGIN, 5, hashes.root())
    body = "\n".join(
        ["c2sp.org/tlog-proof@v1", "index 4"]
        + [base64.b64encode(h).decode() for h in prove_inclusion(4, 5, hashes)]
    )
    proof = parse_proof(body.encode() + b"\n\n" + sign_checkpoint(cp, LOG))
    assert proof.extra is None and proof.index == 4
    verify_proof(proof, parse_vkey(LOG.vkey), leaf_hash_value=leaf_hash(leaves[4]))
    with pytest.raises(VerificationError, match="no leaf"):
        verify_proof(proof, parse_vkey(LOG.vkey))


def test_every_tampered_byte_is_rejected() -> None:
    hashes, leaves = tree(9)
    cp = Checkpoint(ORIGIN, 9, hashes.root())
    data = format_proof(TlogProof(3, prove_inclusion(3, 9, hashes), cosigned(cp), leaves[3]))
    verifier = parse_vkey(LOG.vkey)
    for i in range(len(data)):
        tampered = bytearray(data)
        tampered[i] ^= 0x20
        with pytest.raises((MalformedError, VerificationError)):
            verify_proof(parse_proof(bytes(tampered)), verifier)


def test_wrong_key_or_origin() -> None:
    hashes, leaves = tree(2)
    cp = Checkpoint(ORIGIN, 2, hashes.root())
    proof = TlogProof(0, prove_inclusion(0, 2, hashes), sign_checkpoint(cp, LOG), leaves[0])
    with pytest.raises(UnknownKeyError):
        verify_proof(proof, parse_vkey(NoteSigner.generate(ORIGIN).vkey))
    with pytest.raises(VerificationError):
        verify_proof(proof, parse_vkey(LOG.vkey), origin="other.example/log")


@given(st.binary(max_size=300))
def test_parse_never_crashes(data: bytes) -> None:
    with contextlib.suppress(MalformedError):
        parse_proof(data)


@pytest.mark.parametrize(
    "header",
    [
        "c2sp.org/tlog-proof@v2\nindex 1",
        "c2sp.org/tlog-proof@v1\nindex 01",
        "c2sp.org/tlog-proof@v1\nindex -1",
        "c2sp.org/tlog-proof@v1\nindex 1\nnot base64!",
        "c2sp.org/tlog-proof@v1\nindex 1\nAAAA",
        "c2sp.org/tlog-proof@v1\nextra @@@\nindex 1",
        "c2sp.org/tlog-proof@v1\nsomething 1",
    ],
)
def test_malformed_headers(header: str) -> None:
    with pytest.raises(MalformedError):
        parse_proof(header.encode() + b"\n\nLog\n1\nAAAA\n")
