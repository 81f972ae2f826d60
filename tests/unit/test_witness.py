"""Witness: add-checkpoint wire format, every status of the spec, atomic durable state."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest

from tests.vectors import load_json
from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.merkle import MemoryHashes, leaf_hash, prove_consistency
from translog.core.note import parse_note
from translog.core.policy import parse_policy
from translog.core.signing import CosignatureSigner, CosignatureVerifier, NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import (
    ConflictError,
    ForbiddenError,
    MalformedError,
    NotFoundError,
    TranslogError,
    VerificationError,
)
from translog.formats.misbehaviour import KIND_SAME_SIZE, Misbehaviour, verify_misbehaviour
from translog.http.errors import status_for
from translog.witness.core import Witness
from translog.witness.protocol import (
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_cosignatures,
    parse_size_body,
)
from translog.witness.state import LMDBWitnessState, MemoryWitnessState, WitnessState

ORIGIN = "test.example/witnessed"


class Tree:
    """A log's tree and key, producing signed checkpoints and proofs."""

    def __init__(self, signer: NoteSigner, prefix: bytes = b"") -> None:
        self.signer = signer
        self.hashes = MemoryHashes()
        self.prefix = prefix

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.hashes.append(leaf_hash(self.prefix + b"%d" % self.hashes.size))

    def note(self) -> bytes:
        cp = Checkpoint(self.signer.name, self.hashes.size, self.hashes.root())
        return sign_checkpoint(cp, self.signer)

    def proof(self, old: int) -> tuple[bytes, ...]:
        return prove_consistency(old, self.hashes.size, self.hashes) if old > 0 else ()


@pytest.fixture
def log_signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def wsigner() -> CosignatureSigner:
    return CosignatureSigner.generate("witness.example/w1")


@pytest.fixture(params=["memory", "lmdb"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> WitnessState:
    if request.param == "memory":
        return MemoryWitnessState()
    return LMDBWitnessState(tmp_path / "state")


def make_witness(
    wsigner: CosignatureSigner,
    log_signer: NoteSigner,
    state: WitnessState,
    found: list[Misbehaviour],
) -> Witness:
    return Witness(
        wsigner,
        {ORIGIN: parse_vkey(log_signer.vkey)},
        state,
        clock=lambda: 1_700_000_000.0,
        on_misbehaviour=found.append,
    )


# ------------------------------------------------------------------------------ wire format


def test_request_roundtrip_and_spec_example_layout() -> None:
    proof = (b"\x01" * 32, b"\x02" * 32)
    note = b"example.com/log\n5\n" + base64.b64encode(b"\x00" * 32) + b"\n\n\xe2\x80\x94 x AAAA\n"
    body = format_add_checkpoint(3, proof, note)
    assert body.startswith(b"old 3\n" + base64.b64encode(proof[0]) + b"\n")
    assert b"\n\nexample.com/log\n5\n" in body
    req = parse_add_checkpoint(body)
    assert (req.old_size, req.proof, req.checkpoint) == (3, proof, note)
    assert parse_add_checkpoint(format_add_checkpoint(0, (), note)).proof == ()


@pytest.mark.parametrize(
    "body",
    [
        b"old 01\n\nx",  # leading zero
        b"old -1\n\nx",
        b"old 3\nnot base64!\n\nx",
        b"old 3\n" + base64.b64encode(b"x" * 31) + b"\n\nx",  # short hash
        b"new 3\n\nx",
        b"old 3\n",  # no empty line
        b"old 3\n\n",  # no checkpoint
        b"old 3\n" + (base64.b64encode(b"x" * 32) + b"\n") * 64 + b"\nx",  # 64 proof lines
    ],
)
def test_malformed_requests_are_rejected(body: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_add_checkpoint(body)


def test_size_body_and_cosignature_lines() -> None:
    assert parse_size_body(b"42\n") == 42
    for bad in (b"42", b"042\n", b"x\n"):
        with pytest.raises(MalformedError):
            parse_size_body(bad)
    with pytest.raises(MalformedError):
        parse_cosignatures(b"not a signature line\n")


# ------------------------------------------------------------------- the spec's status codes


def status(e: Exception) -> int:
    assert isinstance(e, TranslogError)
    return status_for(e)[0]


def test_cosigns_growth_and_verifies_with_0x04_vkey(
    log_signer: NoteSigner, wsigner: CosignatureSigner, state: WitnessState
) -> None:
    found: list[Misbehaviour] = []
    w = make_witness(wsigner, log_signer, state, found)
    tree = Tree(log_signer)
    tree.grow(5)
    first = w.add_checkpoint(format_add_checkpoint(0, (), tree.note()))
    (sig,) = parse_cosignatures(first)
    verifier = CosignatureVerifier.from_vkey(wsigner.vkey)
    assert parse_vkey(wsigner.vkey).key_type == 0x04
    note = parse_note(tree.note())
    verifier.verify(note.text, sig)
    assert verifier.timestamp(sig) == 1_700_000_000
    tree.grow(7)
    w.add_checkpoint(format_add_checkpoint(5, tree.proof(5), tree.note()))
    record = state.get(ORIGIN)
    assert record is not None and record.size == 12 and record.root_hash == tree.hashes.root()
    # Same size again (the log re-signs without growth): cosigned again.
    w.add_checkpoint(format_add_checkpoint(12, (), tree.note()))
    # The stored note carries the log's signature and this witness's cosignature.
    policy = parse_policy(f"log {log_signer.vkey}\nwitness w1 {wsigner.vkey}\nquorum w1\n")
    stored = parse_note(record.note)
    assert policy.verify(stored.text, stored.signatures) == {"w1"}
    assert not found


def test_every_error_status(
    log_signer: NoteSigner, wsigner: CosignatureSigner, state: WitnessState
) -> None:
    found: list[Misbehaviour] = []
    w = make_witness(wsigner, log_signer, state, found)
    tree = Tree(log_signer)
    tree.grow(8)
    w.add_checkpoint(format_add_checkpoint(0, (), tree.note()))

    def code(body: bytes) -> tuple[int, int | None]:
        errors = (ConflictError, ForbiddenError, MalformedError, NotFoundError, VerificationError)
        with pytest.raises(errors) as e:
            w.add_checkpoint(body)
        return status(e.value), getattr(e.value, "known_size", None)

    # 400: malformed body, and old > checkpoint size
    assert code(b"old x\n\n" + tree.note())[0] == 400
    assert code(format_add_checkpoint(9, (b"\0" * 32,), tree.note()))[0] == 400
    # 404: unknown origin
    stranger = Tree(NoteSigner.generate("other.example/log"))
    stranger.grow(1)
    assert code(format_add_checkpoint(0, (), stranger.note()))[0] == 404
    # 403: the origin is known but no valid signature by its key
    impostor = Tree(NoteSigner.generate(ORIGIN))
    impostor.grow(9)
    assert code(format_add_checkpoint(8, impostor.proof(8), impostor.note()))[0] == 403
    # 409: old is not the size last cosigned; the body names it
    tree.grow(4)
    assert code(format_add_checkpoint(0, (), tree.note())) == (409, 8)
    assert code(format_add_checkpoint(5, tree.proof(5), tree.note())) == (409, 8)
    # 422: a bad consistency proof
    bad = list(tree.proof(8))
    bad[0] = bytes(32)
    assert code(format_add_checkpoint(8, tuple(bad), tree.note()))[0] == 422
    # 409 (spec; PROTOCOLS says 422): same size, different root: a fork, recorded
    fork = Tree(log_signer, prefix=b"fork")
    fork.grow(8)
    assert code(format_add_checkpoint(8, (), fork.note())) == (409, 8)
    assert len(found) == 1 and found[0].kind == KIND_SAME_SIZE
    # The state did not move through any of it.
    record = state.get(ORIGIN)
    assert record is not None and record.size == 8
    # ForbiddenError is what 403 means in the error table.
    assert status_for(ForbiddenError("x"))[0] == 403


def test_same_size_fork_file_verifies_offline(
    log_signer: NoteSigner, wsigner: CosignatureSigner
) -> None:
    from translog.formats.misbehaviour import format_misbehaviour

    found: list[Misbehaviour] = []
    w = make_witness(wsigner, log_signer, MemoryWitnessState(), found)
    a, b = Tree(log_signer), Tree(log_signer, prefix=b"b")
    a.grow(3)
    b.grow(3)
    w.add_checkpoint(format_add_checkpoint(0, (), a.note()))
    with pytest.raises(ConflictError):
        w.add_checkpoint(format_add_checkpoint(3, (), b.note()))
    proven = verify_misbehaviour(format_misbehaviour(found[0]), parse_vkey(log_signer.vkey))
    assert "two different roots for tree size 3" in proven.statement


def test_restart_keeps_state_and_refuses_rollback(
    log_signer: NoteSigner, wsigner: CosignatureSigner, tmp_path: Path
) -> None:
    tree = Tree(log_signer)
    tree.grow(10)
    state = LMDBWitnessState(tmp_path / "s")
    make_witness(wsigner, log_signer, state, []).add_checkpoint(
        format_add_checkpoint(0, (), tree.note())
    )
    state.close()
    reopened = LMDBWitnessState(tmp_path / "s")
    w = make_witness(wsigner, log_signer, reopened, [])
    small = Tree(log_signer)
    small.grow(6)
    with pytest.raises(ConflictError) as e:
        w.add_checkpoint(format_add_checkpoint(0, (), small.note()))
    assert e.value.known_size == 10
    with pytest.raises(MalformedError):  # old 10 > size 6: 400
        w.add_checkpoint(format_add_checkpoint(10, (), small.note()))
    record = reopened.get(ORIGIN)
    assert record is not None and record.size == 10
    reopened.close()


def test_check_then_update_is_atomic_under_races(
    log_signer: NoteSigner, wsigner: CosignatureSigner, tmp_path: Path
) -> None:
    """Many threads race requests for different sizes from the same old size: exactly one
    wins, and the state never moves backwards."""
    state = LMDBWitnessState(tmp_path / "race")
    w = make_witness(wsigner, log_signer, state, [])
    tree = Tree(log_signer)
    tree.grow(4)
    w.add_checkpoint(format_add_checkpoint(0, (), tree.note()))
    bodies = []
    for _ in range(8):
        tree.grow(3)
        bodies.append(format_add_checkpoint(4, tree.proof(4), tree.note()))
    wins: list[int] = []
    conflicts: list[int] = []

    def run(body: bytes) -> None:
        try:
            w.add_checkpoint(body)
            wins.append(1)
        except ConflictError as e:
            assert e.known_size is not None
            conflicts.append(e.known_size)

    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(conflicts) == 7
    record = state.get(ORIGIN)
    assert record is not None and record.size > 4
    assert all(size == record.size for size in conflicts)
    state.close()


def test_cosignature_vectors_parse_and_vkeys() -> None:
    v = load_json("transparency-dev-formats/vectors.json")["cosignature_v1"]
    for case in v["vkey_cases"]:
        if case["valid"]:
            CosignatureVerifier.from_vkey(case["vkey"])
        else:
            with pytest.raises(MalformedError):
                CosignatureVerifier.from_vkey(case["vkey"])
