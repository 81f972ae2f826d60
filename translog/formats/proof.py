"""Offline proof files (c2sp.org/tlog-proof@v1), extension ``.tlog-proof``.

::

    c2sp.org/tlog-proof@v1
    extra <base64 extra data>        (optional)
    index <leaf index>
    <base64 hash>                    (the inclusion proof, leaf's sibling first; 0 or more)

    <the signed checkpoint, verbatim, with any cosignatures>

translog puts the entry's leaf (FORMATS.md §2) in ``extra``, so the file alone proves the leaf
is in the log: the verifier hashes it itself, it does not trust it. Proof files from other logs
carry any extra data, or none; then the caller supplies the leaf or its hash.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.merkle import leaf_hash, verify_inclusion
from translog.core.note import NoteSignature
from translog.core.policy import WitnessPolicy
from translog.core.signing import NoteVerifier
from translog.errors import MalformedError, VerificationError

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64


@dataclass(frozen=True)
class TlogProof:
    """One parsed proof file."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None


def _b64(text: str, what: str) -> bytes:
    try:
        value = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedError(f"proof file: {what} is not valid base64") from e
    if base64.b64encode(value).decode() != text:
        raise MalformedError(f"proof file: {what} is not canonical base64")
    return value


def format_proof(proof: TlogProof) -> bytes:
    """The proof file bytes."""
    lines = [HEADER]
    if proof.extra is not None:
        lines.append("extra " + base64.b64encode(proof.extra).decode())
    lines.append(f"index {proof.index}")
    lines += [base64.b64encode(h).decode() for h in proof.hashes]
    return ("\n".join(lines) + "\n\n").encode() + proof.checkpoint


def parse_proof(data: bytes) -> TlogProof:
    """Parse a proof file strictly (MalformedError names what is wrong)."""
    head, sep, checkpoint = data.partition(b"\n\n")
    if not sep or not checkpoint:
        raise MalformedError("proof file: missing the blank line before the checkpoint")
    try:
        lines = head.decode("ascii").split("\n")
    except UnicodeDecodeError as e:
        raise MalformedError("proof file: header is not ASCII") from e
    if lines[0] != HEADER:
        raise MalformedError(f"proof file: first line must be {HEADER!r}")
    rest = lines[1:]
    extra = None
    if rest and rest[0].startswith("extra "):
        extra = _b64(rest.pop(0)[6:], "extra data")
    if not rest or not rest[0].startswith("index "):
        raise MalformedError("proof file: missing the index line")
    digits = rest.pop(0)[6:]
    if not digits.isascii() or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
        raise MalformedError(f"proof file: bad index {digits[:30]!r}")
    index = int(digits)
    if index >= 1 << 63:
        raise MalformedError("proof file: index is too large")
    if len(rest) > MAX_PROOF_HASHES:
        raise MalformedError(f"proof file: {len(rest)} proof hashes; at most {MAX_PROOF_HASHES}")
    hashes = []
    for i, line in enumerate(rest):
        h = _b64(line, f"proof hash {i}")
        if len(h) != 32:
            raise MalformedError(f"proof file: proof hash {i} has {len(h)} bytes, not 32")
        hashes.append(h)
    return TlogProof(index, tuple(hashes), checkpoint, extra)


def verify_proof(
    proof: TlogProof,
    log_verifier: NoteVerifier,
    *,
    origin: str | None = None,
    leaf: bytes | None = None,
    leaf_hash_value: bytes | None = None,
    policy: WitnessPolicy | None = None,
) -> Checkpoint:
    """Verify a proof file offline; return the checkpoint it proves inclusion in.

    The leaf is ``leaf`` if given, else the proof's extra data; ``leaf_hash_value`` may be
    given instead for logs whose leaves are not carried. Raises VerificationError (or a
    subclass) naming what failed.
    """
    others: Sequence[NoteVerifier] = tuple(policy.witnesses.values()) if policy else ()
    cp, note, _ = open_checkpoint(proof.checkpoint, log_verifier, origin=origin, others=others)
    if policy is not None:
        sigs: Sequence[NoteSignature] = note.signatures
        policy.verify(note.text, sigs)
    if leaf_hash_value is None:
        data = leaf if leaf is not None else proof.extra
        if data is None:
            raise VerificationError("proof file carries no leaf and none was given")
        if leaf is not None and proof.extra is not None and leaf != proof.extra:
            raise VerificationError("the given leaf differs from the proof file's leaf")
        leaf_hash_value = leaf_hash(data)
    verify_inclusion(leaf_hash_value, proof.index, cp.size, proof.hashes, cp.root_hash)
    return cp
