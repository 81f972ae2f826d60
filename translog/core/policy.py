"""Witness policy: which logs and witnesses are trusted, and what quorum makes a checkpoint valid.

The text format follows the Sigsum policy file (also used by transparency-dev), with C2SP
vkeys in place of raw keys::

    # comments and blank lines are ignored
    log <vkey> [url]
    witness <name> <vkey> [url]          # cosignature/v1 (0x04) vkey, or a plain Ed25519 (0x01) one
    group <name> <k|any|all> <member>... # members: witnesses or groups defined above
    quorum <name|none>                   # exactly once

Witnesses and groups share one namespace; ``none`` is predefined and needs no cosignature.
A witness counts once however many of its signatures a note carries, and only if one of them
verifies over the checkpoint. Unknown signatures are ignored, as signed-note requires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from translog.core.note import NoteSignature
from translog.core.signing import CosignatureVerifier, NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import ConfigError, TranslogError, VerificationError


@dataclass(frozen=True)
class _Group:
    name: str
    threshold: int
    members: tuple[str, ...]


@dataclass(frozen=True)
class WitnessPolicy:
    """A parsed policy. ``quorum`` is a witness name, a group name, or ``none``."""

    logs: tuple[NoteVerifier, ...] = ()
    log_urls: dict[str, str] = field(default_factory=dict)
    witnesses: dict[str, CosignatureVerifier] = field(default_factory=dict)
    witness_urls: dict[str, str] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    quorum: str = "none"

    def satisfied_by(self, present: set[str]) -> bool:
        """True when the witnesses named in ``present`` meet the quorum."""
        return self._meets(self.quorum, present)

    def _meets(self, name: str, present: set[str]) -> bool:
        if name == "none":
            return True
        if name in self.witnesses:
            return name in present
        group = self.groups[name]
        return sum(self._meets(m, present) for m in group.members) >= group.threshold

    def cosigners(self, checkpoint_text: str, signatures: Sequence[NoteSignature]) -> set[str]:
        """Names of the policy's witnesses whose cosignature on this checkpoint verifies.

        A known witness whose signature fails to verify raises ``VerificationError``.
        """
        present: set[str] = set()
        for name, verifier in self.witnesses.items():
            for sig in signatures:
                if verifier.matches(sig):
                    try:
                        verifier.verify(checkpoint_text, sig)
                    except TranslogError as e:
                        raise VerificationError(f"witness {name}: {e}") from e
                    present.add(name)
        return present

    def verify(self, checkpoint_text: str, signatures: Sequence[NoteSignature]) -> set[str]:
        """Raise ``VerificationError`` unless the quorum is met; return who cosigned."""
        present = self.cosigners(checkpoint_text, signatures)
        if not self.satisfied_by(present):
            have = ", ".join(sorted(present)) or "none"
            raise VerificationError(
                f"witness policy not satisfied: quorum {self.quorum!r} needs more cosignatures "
                f"(verified: {have})"
            )
        return present


def _threshold(word: str, members: int, where: str) -> int:
    if word == "any":
        return 1
    if word == "all":
        return members
    if not word.isdigit() or word != str(int(word)):
        raise ConfigError(f"{where}: threshold must be 'any', 'all' or a number, got {word!r}")
    k = int(word)
    if not 1 <= k <= members:
        raise ConfigError(f"{where}: threshold {k} is not between 1 and {members}")
    return k


def parse_policy(text: str) -> WitnessPolicy:
    """Parse a policy file; errors name the line."""
    logs: list[NoteVerifier] = []
    log_urls: dict[str, str] = {}
    witnesses: dict[str, CosignatureVerifier] = {}
    witness_urls: dict[str, str] = {}
    groups: dict[str, _Group] = {}
    quorum: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"policy line {number}"
        words = line.split()
        keyword, args = words[0], words[1:]
        try:
            if keyword == "log" and 1 <= len(args) <= 2:
                verifier = parse_vkey(args[0])
                logs.append(verifier)
                if len(args) == 2:
                    log_urls[verifier.name] = args[1]
            elif keyword == "witness" and 2 <= len(args) <= 3:
                name = args[0]
                if name in witnesses or name in groups or name == "none":
                    raise ConfigError(f"{where}: name {name!r} is already defined")
                witnesses[name] = CosignatureVerifier.from_vkey(args[1])
                if len(args) == 3:
                    witness_urls[name] = args[2]
            elif keyword == "group" and len(args) >= 3:
                name, members = args[0], tuple(args[2:])
                if name in witnesses or name in groups or name == "none":
                    raise ConfigError(f"{where}: name {name!r} is already defined")
                for m in members:
                    if m not in witnesses and m not in groups:
                        raise ConfigError(f"{where}: unknown member {m!r} (define it above)")
                if len(set(members)) != len(members):
                    raise ConfigError(f"{where}: a member is listed twice")
                groups[name] = _Group(name, _threshold(args[1], len(members), where), members)
            elif keyword == "quorum" and len(args) == 1:
                if quorum is not None:
                    raise ConfigError(f"{where}: quorum is defined twice")
                if args[0] != "none" and args[0] not in witnesses and args[0] not in groups:
                    raise ConfigError(f"{where}: unknown quorum {args[0]!r}")
                quorum = args[0]
            else:
                raise ConfigError(f"{where}: cannot parse {keyword!r} with {len(args)} arguments")
        except ConfigError:
            raise
        except TranslogError as e:
            raise ConfigError(f"{where}: {e}") from e
    if quorum is None:
        raise ConfigError("policy: no quorum line")
    return WitnessPolicy(tuple(logs), log_urls, witnesses, witness_urls, groups, quorum)
