"""The witness: verify a log's checkpoint against what it cosigned before, then cosign it.

:meth:`Witness.add_checkpoint` implements c2sp.org/tlog-witness ``add-checkpoint`` (PROTOCOLS
§6) with cosignature/v1 (§5). It raises translog errors that :mod:`translog.http.errors` maps
to the spec's status codes, in the spec's order:

=====  =========================================  ======================================
400    ``MalformedError``                         unparseable body; ``old`` > checkpoint size
404    ``NotFoundError``                          the origin is not a log this witness knows
403    ``ForbiddenError``                         no valid signature by the log's key
409    ``ConflictError(known_size=N)``            ``old`` is not the size last cosigned (N);
                                                  or the same size with a different root
422    ``VerificationError``                      the consistency proof does not verify
=====  =========================================  ======================================

The spec (c2sp.org/tlog-witness) answers a same-size, different-root checkpoint with **409**;
PROTOCOLS §6 says 422 there. The spec wins disagreements, so this is a 409 whose body is the
witness's size (equal to ``old``): a client that gets back the size it sent knows the root
conflicted and must not retry. The conflicting checkpoint, which proves the log signed two
roots for one size, is handed to ``on_misbehaviour``.

The check and the update happen in one state transaction (:meth:`WitnessState.update`), which
is durable before this method returns, so the reply never runs ahead of the disk and
concurrent requests cannot roll the state back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from translog.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from translog.core.merkle import EMPTY_ROOT, verify_consistency
from translog.core.note import Note, format_note, parse_note
from translog.core.signing import CosignatureSigner, NoteVerifier
from translog.errors import (
    ConflictError,
    ForbiddenError,
    InvalidProofError,
    MalformedError,
    NotFoundError,
    TranslogError,
    VerificationError,
)
from translog.formats.misbehaviour import KIND_SAME_SIZE, Attempt, Misbehaviour
from translog.witness.protocol import format_cosignatures, parse_add_checkpoint
from translog.witness.state import WitnessRecord, WitnessState

log = logging.getLogger("translog.witness")


class Witness:
    """One witness key over a set of logs (origin → the log's verifier key)."""

    def __init__(
        self,
        signer: CosignatureSigner,
        logs: Mapping[str, NoteVerifier],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
        on_misbehaviour: Callable[[Misbehaviour], None] | None = None,
    ) -> None:
        self.signer = signer
        self.logs = dict(logs)
        self.state = state
        self._clock = clock
        self._on_misbehaviour = on_misbehaviour

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.signer.name

    def add_checkpoint(self, body: bytes) -> bytes:
        """Handle one ``add-checkpoint`` body; return the 200 body (cosignature lines).

        Blocking (an fsync): call it from a worker thread in a server.
        """
        req = parse_add_checkpoint(body)
        note = parse_note(req.checkpoint)
        origin = _origin(note)
        verifier = self.logs.get(origin)
        if verifier is None:
            raise NotFoundError(f"unknown log origin {origin[:100]!r}")
        try:
            cp, opened, sigs = open_checkpoint(req.checkpoint, verifier, origin=origin)
        except MalformedError:
            raise
        except TranslogError as e:
            raise ForbiddenError(f"no valid signature by the key of log {origin}: {e}") from e
        if req.old_size > cp.size:
            raise MalformedError(f"old size {req.old_size} exceeds the checkpoint size {cp.size}")
        # Keep the log's signature and ours; other cosignatures are not ours to vouch for.
        log_only = Note(opened.text, (sigs[0],))
        conflict: list[WitnessRecord] = []

        def decide(current: WitnessRecord | None) -> WitnessRecord:
            known = 0 if current is None else current.size
            if req.old_size != known:
                raise ConflictError(
                    f"old size {req.old_size} is not the size this witness last cosigned for "
                    f"{origin} ({known})",
                    known_size=known,
                )
            self._check_proof(cp, req.old_size, req.proof, current, conflict)
            cosig = self.signer.cosign(opened.text, int(self._clock()))
            stored = format_note(Note(opened.text, (*log_only.signatures, cosig)))
            return WitnessRecord(cp.size, cp.root_hash, stored)

        try:
            record = self.state.update(origin, decide)
        except ConflictError:
            if conflict:
                self._report_fork(origin, conflict[0], req.checkpoint)
            raise
        cosig_line = parse_note(record.note).signatures[-1]
        return format_cosignatures([cosig_line])

    def _check_proof(
        self,
        cp: Checkpoint,
        old_size: int,
        proof: tuple[bytes, ...],
        current: WitnessRecord | None,
        conflict: list[WitnessRecord],
    ) -> None:
        if old_size == 0:
            if proof:
                raise VerificationError("a consistency proof from size 0 must be empty")
            if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
                raise VerificationError("a checkpoint of size 0 must have the empty root")
            return
        assert current is not None
        if old_size == cp.size:
            if proof:
                raise VerificationError("a consistency proof between equal sizes must be empty")
            if cp.root_hash != current.root_hash:
                conflict.append(current)
                raise ConflictError(
                    f"the log signed tree size {cp.size} with a different root than the one "
                    "this witness cosigned",
                    known_size=current.size,
                )
            return
        try:
            verify_consistency(old_size, cp.size, current.root_hash, cp.root_hash, proof)
        except InvalidProofError as e:
            raise VerificationError(
                f"consistency proof from size {old_size} to {cp.size} does not verify: {e}"
            ) from e

    def _report_fork(self, origin: str, current: WitnessRecord, received: bytes) -> None:
        log.critical(
            "log %s signed two roots for tree size %d: misbehaviour recorded", origin, current.size
        )
        if self._on_misbehaviour is None:
            return
        self._on_misbehaviour(
            Misbehaviour(
                origin=origin,
                kind=KIND_SAME_SIZE,
                older=current.note,
                newer=received,
                attempts=(Attempt("add-checkpoint", "same size, different root"),),
                detected_at=int(self._clock() * 1000),
                detected_by=self.name,
                peer="add-checkpoint request",
            )
        )


def _origin(note: Note) -> str:
    try:
        return parse_checkpoint(note.text).origin
    except MalformedError as e:
        raise MalformedError(f"the checkpoint does not parse: {e}") from e
