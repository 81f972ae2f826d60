"""Whether a new checkpoint can follow the verified one: forks, rollbacks, split views.

:class:`Finding` is two checkpoints that cannot both be true (or a rollback), with the proof
from the log's tiles. :class:`ConsistencyChecks` compares a checkpoint the log serves, or one
obtained elsewhere (:meth:`~ConsistencyChecks.check_foreign`, the gossip hook), with the
verified view and reports what it finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from translog.client.checkpoints import Trusted, VerifiedCheckpoint
from translog.client.proofs import TileProof
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import verify_consistency
from translog.errors import (
    InvalidProofError,
    MalformedError,
    NotFoundError,
    SplitViewError,
    TilesUnusableError,
    VerificationError,
)
from translog.formats.evidence import b64, hash_list, note_text
from translog.monitor.alerts import Alert
from translog.monitor.follower_base import FollowerBase, fingerprint_of


@dataclass(frozen=True)
class Finding:
    """Two checkpoints that cannot both be true, or a rollback."""

    kind: str
    reason: str
    older: Trusted
    newer: Trusted
    proof: tuple[bytes, ...] = ()
    prefix_root: bytes | None = None

    def evidence_fields(self) -> dict[str, Any]:
        """The evidence fields of a fork, rollback or same-size finding."""
        out: dict[str, Any] = {
            "older": note_text(self.older.note),
            "newer": note_text(self.newer.note),
            "proof": hash_list(self.proof),
        }
        if self.prefix_root is not None:
            out["prefix_root"] = b64(self.prefix_root)
        return out


class ConsistencyChecks(FollowerBase):
    """Consistency of a follower's checkpoints with its verified view."""

    async def compare(self, trusted: Trusted, seen: Trusted) -> Finding | None:
        """Can ``seen`` follow ``trusted``? None if so, else the finding (fork, rollback...).

        Raises :class:`~translog.errors.TilesUnusableError` when the log's tiles do not rebuild
        ``seen``'s signed root (growth), and ``NetworkError`` when the log cannot be asked.
        """
        if seen.size == trusted.size:
            if seen.root_hash != trusted.root_hash:
                return Finding(
                    "same_size_different_root",
                    f"the log signed two different roots for tree size {seen.size}",
                    trusted,
                    seen,
                )
            return None
        if seen.size > trusted.size:
            if trusted.size == 0:
                return None
            try:
                found = await self.proofs.tile_consistency(trusted.size, seen.size)
            except (NotFoundError, VerificationError, MalformedError) as e:
                raise TilesUnusableError(str(e)) from e
            if found.new_root != seen.root_hash:
                raise TilesUnusableError(
                    f"the tiles of size {seen.size} do not give its signed root"
                )
            verdict = _judge(trusted, seen, found)
            if verdict == "bad":
                raise TilesUnusableError("the tiles' consistency proof is not the tree's")
            if verdict == "fork":
                return Finding(
                    "fork",
                    f"the log forked: its checkpoint of size {seen.size} does not extend the "
                    f"verified checkpoint of size {trusted.size} (its tree has root "
                    f"{b64(found.old_root)} at size {trusted.size})",
                    trusted,
                    seen,
                    found.proof,
                    found.old_root,
                )
            return None
        # Smaller than what was verified: a replay of an old checkpoint, a rollback or a fork.
        why = f"the log presents tree size {seen.size} after size {trusted.size} was verified"
        if seen.size == 0:
            return Finding("rollback", f"rollback: {why}", trusted, seen)
        try:
            found = await self.proofs.tile_consistency(seen.size, trusted.size)
        except (NotFoundError, VerificationError, MalformedError) as e:
            return Finding(
                "rollback", f"rollback: {why}, and no longer serves that tree ({e})", trusted, seen
            )
        if found.new_root != trusted.root_hash:
            return Finding(
                "rollback",
                f"rollback: {why}, and its tiles no longer give that tree's root",
                trusted,
                seen,
            )
        verdict = _judge(seen, trusted, found)
        if verdict == "bad":
            return Finding(
                "rollback",
                f"rollback: {why}, and its tiles no longer prove that tree",
                trusted,
                seen,
            )
        if verdict == "fork":
            return Finding(
                "fork",
                f"the log forked: its checkpoint of size {seen.size} is not a prefix of the "
                f"verified checkpoint of size {trusted.size}",
                trusted,
                seen,
                found.proof,
                found.old_root,
            )
        return Finding(
            "rollback",
            f"rollback: {why} (an old checkpoint replayed; it is a prefix of the verified tree)",
            trusted,
            seen,
            found.proof,
            found.old_root,
        )

    async def _report_finding(self, f: Finding) -> Alert | None:
        return await self._alert(
            f.kind,
            fingerprint_of(f.older.note, f.newer.note),
            f.reason,
            f.evidence_fields(),
            {"older_size": f.older.size, "newer_size": f.newer.size},
        )

    async def check_foreign(self, note: bytes, source: str = "gossip") -> VerifiedCheckpoint:
        """Check a signed checkpoint of this log obtained elsewhere against the verified view.

        The gossip hook for witnesses and other monitors. ``note`` must carry the log's valid
        signature (``VerificationError`` otherwise). Same size: the roots must match. Smaller:
        the log's tiles for the verified size must prove it a prefix. Larger: the log's tiles
        for its size must prove the verified checkpoint a prefix of it (a log that does not
        serve that size raises ``NotFoundError``: nothing can be concluded yet). A
        contradiction raises :class:`SplitViewError` after raising a ``fork`` (or
        ``same_size_different_root``) alert with evidence, whose path the error carries.
        Returns the foreign checkpoint, verified.
        """
        cp, parsed, _ = open_checkpoint(
            note,
            self.verifier,
            others=tuple(self.policy.witnesses.values()) if self.policy else (),
        )
        seen = Trusted(cp.size, cp.root_hash, note)
        state = self.state()
        if state is None:
            raise NotFoundError(f"log {self.name}: no verified checkpoint yet")
        trusted = Trusted(state.size, state.root, state.note)
        try:
            finding = await self.compare(trusted, seen)
        except TilesUnusableError as e:
            raise NotFoundError(
                f"log {self.name}: its tiles cannot judge the {source} checkpoint of size "
                f"{cp.size} yet ({e})"
            ) from e
        if finding is not None and finding.kind == "rollback":
            finding = None  # an older checkpoint from elsewhere is no rollback...
            if seen.size < trusted.size and not await self._prefix_ok(seen, trusted):
                raise NotFoundError(
                    f"log {self.name}: it no longer serves size {trusted.size} to judge the "
                    f"{source} checkpoint of size {seen.size}"
                )
        if finding is not None:
            finding = Finding(
                finding.kind,
                f"split view ({source}): {finding.reason}",
                finding.older,
                finding.newer,
                finding.proof,
                finding.prefix_root,
            )
            alert = await self._report_finding(finding)
            raise SplitViewError(finding.reason, finding, alert.evidence if alert else None)
        cosigners: frozenset[str] = frozenset()
        if self.policy is not None:
            cosigners = frozenset(self.policy.cosigners(parsed.text, parsed.signatures))
        return VerifiedCheckpoint(cp, note, cosigners)

    async def _prefix_ok(self, small: Trusted, big: Trusted) -> bool:
        try:
            found = await self.proofs.tile_consistency(small.size, big.size)
        except (NotFoundError, VerificationError, MalformedError):
            return False
        return found.new_root == big.root_hash and found.old_root == small.root_hash


def _judge(small: Trusted, big: Trusted, found: TileProof) -> str:
    """What the tiles' consistency proof says of two signed checkpoints, ``small`` the smaller.

    ``"prefix"``: it proves ``small`` a prefix of ``big``. Otherwise, whether it joins the
    tiles' own old root to ``big``'s signed root: if it does, a different signed old root is a
    fork, proven (``"fork"``); if not, the tiles are bad (``"bad"``).
    """
    try:
        verify_consistency(small.size, big.size, small.root_hash, big.root_hash, found.proof)
    except InvalidProofError:
        try:
            verify_consistency(small.size, big.size, found.old_root, big.root_hash, found.proof)
        except InvalidProofError:
            return "bad"
        return "fork"
    return "prefix"
