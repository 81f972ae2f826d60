"""Can two signed checkpoints of one log both be true? Rollbacks and forks, told from bad data.

:func:`check` compares a checkpoint the client already trusts with one it has just seen:

* Same size: the roots must match.
* Larger: a consistency proof from the trusted size must verify (from tiles, or from the CT
  API's ``get-sth-consistency`` when the client uses it).
* Smaller: the log must still serve the tiles of the trusted tree, and they must prove the
  smaller checkpoint a prefix of it. A smaller checkpoint is not by itself a rollback: receipts
  carry the checkpoint signed right after their batch, which is newer than the one published on
  the interval, and caches serve ``/checkpoint`` for up to a second. Go's sumdb client accepts
  such trees the same way.

A log that rolled back (it cannot serve the tree it signed) or forked (two signed checkpoints
no proof can join) raises :class:`~translog.errors.InconsistencyError`, a security event
carrying both signed notes (``older``: the one trusted before; ``newer``: the one just seen)
and the proof, if any. It is never reported as a network error.

A proof that does not verify is told apart from a fork: when the tiles do not reproduce the
log's own signed root they are bad data (:class:`~translog.errors.VerificationError`); when
they do, and prove that the log's tree at the old size has another root, that is a fork.
"""

from __future__ import annotations

from translog.client.checkpoints import Trusted
from translog.client.proofs import Proofs, TileProof
from translog.core.merkle import verify_consistency
from translog.errors import (
    InconsistencyError,
    InvalidProofError,
    NotFoundError,
    VerificationError,
)


async def check(proofs: Proofs, trusted: Trusted, seen: Trusted, *, ct: bool) -> None:
    """Raise ``InconsistencyError`` unless ``seen`` and ``trusted`` can both be true.

    ``ct`` takes a growth proof from the CT API instead of tiles.
    """
    if seen.size == trusted.size:
        if seen.root_hash != trusted.root_hash:
            raise InconsistencyError(
                f"the log signed two different roots for tree size {seen.size}",
                older=trusted.note,
                newer=seen.note,
                proof=[],
            )
    elif seen.size > trusted.size:
        await _check_growth(proofs, trusted, seen, ct=ct)
    else:
        await _check_prefix(proofs, trusted, seen)


async def _check_growth(proofs: Proofs, old: Trusted, new: Trusted, *, ct: bool) -> None:
    """``new`` must extend ``old``: verify a consistency proof between them."""
    if old.size == 0:
        return  # the empty tree is a prefix of every tree
    if ct:
        proof = await proofs.ct_consistency(old.size, new.size)
        try:
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except InvalidProofError as e:
            raise _fork(old, new, list(proof), e) from e
        return
    try:
        found = await proofs.tile_consistency(old.size, new.size)
    except NotFoundError as e:
        raise VerificationError(
            f"the log signed tree size {new.size} but does not serve its tiles: {e}"
        ) from e
    _judge(old, new, found, new_is_seen=True)
    proofs.fetcher.keep(found.tiles)


async def _check_prefix(proofs: Proofs, trusted: Trusted, seen: Trusted) -> None:
    """``seen`` is smaller: the log must still prove it a prefix of the trusted tree."""
    try:
        found = await proofs.tile_consistency(seen.size, trusted.size)
    except NotFoundError as e:
        raise InconsistencyError(
            f"rollback: the log presents tree size {seen.size}, this client verified size "
            f"{trusted.size}, and the log no longer serves that tree ({e})",
            older=trusted.note,
            newer=seen.note,
            proof=[],
        ) from e
    _judge(seen, trusted, found, new_is_seen=False)
    proofs.fetcher.keep(found.tiles)


def _judge(old: Trusted, new: Trusted, found: TileProof, *, new_is_seen: bool) -> None:
    """Verify a consistency proof made from tiles; tell bad tiles from a fork.

    The tiles must rebuild ``new``'s signed root, or they are not the log's tree
    (``VerificationError``). If they do, and the proof joins the root they give for the
    first ``old.size`` leaves to ``new``'s root, a different signed ``old`` root is a
    fork, proven by the proof. ``new_is_seen`` says which checkpoint was just received.
    """
    if found.new_root != new.root_hash:
        raise VerificationError(
            f"the log's tiles for tree size {new.size} do not match its signed root"
        )
    if old.size == 0:
        return
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, found.proof)
    except InvalidProofError as e:
        try:
            verify_consistency(old.size, new.size, found.old_root, new.root_hash, found.proof)
        except InvalidProofError as bad:
            raise VerificationError(
                f"the log's tiles do not prove tree size {old.size} a prefix of tree "
                f"size {new.size}: {bad}"
            ) from bad
        older, newer = (old, new) if new_is_seen else (new, old)
        raise _fork(older, newer, list(found.proof), e) from e


def _fork(old: Trusted, new: Trusted, proof: list[bytes], cause: Exception) -> InconsistencyError:
    return InconsistencyError(
        f"the log forked: its checkpoint of size {new.size} does not extend the checkpoint of "
        f"size {old.size} ({cause})",
        older=old.note,
        newer=new.note,
        proof=proof,
    )
