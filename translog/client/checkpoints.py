"""Checkpoints the client has verified, and the one place their notes are opened."""

from __future__ import annotations

from dataclasses import dataclass

from translog.client.answers import served
from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.policy import WitnessPolicy
from translog.core.signing import NoteVerifier


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose log signature, witness policy and consistency were verified."""

    checkpoint: Checkpoint
    note: bytes
    """The signed note exactly as served (the evidence, and what proof files embed)."""
    cosigners: frozenset[str]
    """Names of the policy's witnesses whose cosignatures verified (empty without a policy)."""

    @property
    def size(self) -> int:
        """Tree size."""
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        """Root hash."""
        return self.checkpoint.root_hash


@dataclass(frozen=True, slots=True)
class Trusted:
    """A checkpoint whose log signature verified: size, root and signed note.

    This is what the state keeps and what consistency checks compare.
    """

    size: int
    root_hash: bytes
    note: bytes

    @classmethod
    def of(cls, cp: VerifiedCheckpoint) -> Trusted:
        """The trusted form of a verified checkpoint."""
        return cls(cp.size, cp.root_hash, cp.note)


def open_verified(
    note: bytes, verifier: NoteVerifier, policy: WitnessPolicy | None
) -> VerifiedCheckpoint:
    """Verify the log's signature (origin = the key's name) and the witness policy on a note.

    A malformed note is a ``MalformedError``; callers reading it from the log wrap this in
    :func:`~translog.client.answers.served`.
    """
    witnesses = tuple(policy.witnesses.values()) if policy is not None else ()
    cp, parsed, _ = open_checkpoint(note, verifier, others=witnesses)
    cosigners: set[str] = set()
    if policy is not None:
        cosigners = policy.verify(parsed.text, parsed.signatures)
    return VerifiedCheckpoint(cp, note, frozenset(cosigners))


def open_trusted(note: bytes, verifier: NoteVerifier, what: str) -> Trusted:
    """Verify only the log's signature on a note (a receipt's checkpoint, say)."""
    with served(what):
        cp, _, _ = open_checkpoint(note, verifier)
    return Trusted(cp.size, cp.root_hash, note)
