"""Misbehaviour files: offline proof that a log signed two incompatible histories. Pure.

A log must never sign two checkpoints that cannot be proven consistent (PROTOCOLS §3). What a
third party can check **offline**, with nothing but the log's vkey, is narrow:

* **Same size, different roots.** Two checkpoints signed by the log for the same tree size
  with different root hashes. Both signatures verify, and no tree has two roots.
* **A proof that the newer tree has another prefix.** Checkpoints A (size n, root a) and B
  (size m > n, root b), plus a consistency proof ``p`` and a hash ``r`` such that ``p``
  verifies from (n, r) to (m, b). By the collision resistance of SHA-256 such a proof pins
  ``r`` as the root of the first n leaves of B's tree; when ``r != a``, the log signed two
  trees of which neither is a prefix of the other. The proof comes from B's tree (the log
  serves it to whoever sees B, or a gossip peer computed it from that view); the detector
  never needs A's tree.
* **An impossible empty tree.** A checkpoint of size 0 whose root is not SHA-256("").

What is **not** provable offline: that a log refused to serve a proof, served tiles that do
not match its own checkpoint, or that a proof some party sent does not verify. A bad proof
only shows that *someone* sent bad data. Such failed attempts are still recorded (kind
``unproven``), with every attempt and its outcome, so an operator can investigate; but
:func:`verify_misbehaviour` rejects them.

File format (JSON, ``translog-misbehaviour/v1``; docs/FORMATS.md)::

    {"format": "translog-misbehaviour/v1", "origin": ..., "kind": ...,
     "detected_at": <ms>, "detected_by": <name>, "peer": <url or name>,
     "checkpoints": [<signed note A>, <signed note B>],          # A.size <= B.size
     "consistency": {"old_size": n, "new_size": m, "proof": [<b64>...],
                     "old_root_in_new_tree": <b64>} | null,
     "attempts": [{"source": ..., "outcome": ...}, ...]}
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields, encode_base64
from translog.core.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from translog.core.note import MAX_NOTE_SIZE
from translog.core.signing import NoteVerifier
from translog.errors import InvalidProofError, MalformedError, TranslogError, VerificationError

FORMAT = "translog-misbehaviour/v1"
KIND_SAME_SIZE = "same-size-different-roots"
KIND_FORK = "inconsistent-histories"
KIND_EMPTY = "invalid-empty-tree"
KIND_UNPROVEN = "unproven"
KINDS = (KIND_SAME_SIZE, KIND_FORK, KIND_EMPTY, KIND_UNPROVEN)
MAX_FILE_SIZE = 4 * MAX_NOTE_SIZE


@dataclass(frozen=True)
class Attempt:
    """One try to prove two checkpoints consistent: where the proof came from, what happened."""

    source: str
    outcome: str


@dataclass(frozen=True)
class ForkProof:
    """A consistency proof in the newer tree and the older size's root it pins down."""

    old_size: int
    new_size: int
    proof: tuple[bytes, ...]
    old_root_in_new_tree: bytes


@dataclass(frozen=True)
class Misbehaviour:
    """Two signed checkpoints of one log and why they cannot both be true."""

    origin: str
    kind: str
    older: bytes
    """Signed note of the smaller checkpoint (either one for equal sizes)."""
    newer: bytes
    consistency: ForkProof | None = None
    attempts: tuple[Attempt, ...] = ()
    detected_at: int = 0
    detected_by: str = ""
    peer: str = ""


@dataclass(frozen=True)
class Proven:
    """What :func:`verify_misbehaviour` established."""

    misbehaviour: Misbehaviour
    older: Checkpoint
    newer: Checkpoint
    statement: str


def classify(older: Checkpoint, newer: Checkpoint, fork: ForkProof | None) -> str | None:
    """The misbehaviour kind two verified checkpoints (and a proof) prove, or None.

    ``older.size <= newer.size``; ``fork``, when given, is a proof in the newer tree.
    """
    if older.size == newer.size:
        return KIND_SAME_SIZE if older.root_hash != newer.root_hash else None
    for cp in (older, newer):
        if cp.size == 0 and cp.root_hash != EMPTY_ROOT:
            return KIND_EMPTY
    if fork is None or older.size == 0:
        return None
    if (fork.old_size, fork.new_size) != (older.size, newer.size):
        return None
    try:
        verify_consistency(
            older.size, newer.size, fork.old_root_in_new_tree, newer.root_hash, fork.proof
        )
    except InvalidProofError:
        return None
    return KIND_FORK if fork.old_root_in_new_tree != older.root_hash else None


def format_misbehaviour(m: Misbehaviour) -> bytes:
    """The JSON file (indented, UTF-8, ending in a newline)."""
    consistency = None
    if m.consistency is not None:
        c = m.consistency
        consistency = {
            "old_size": c.old_size,
            "new_size": c.new_size,
            "proof": [encode_base64(h) for h in c.proof],
            "old_root_in_new_tree": encode_base64(c.old_root_in_new_tree),
        }
    obj = {
        "format": FORMAT,
        "origin": m.origin,
        "kind": m.kind,
        "detected_at": m.detected_at,
        "detected_by": m.detected_by,
        "peer": m.peer,
        "checkpoints": [m.older.decode("utf-8"), m.newer.decode("utf-8")],
        "consistency": consistency,
        "attempts": [{"source": a.source, "outcome": a.outcome} for a in m.attempts],
    }
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def parse_misbehaviour(data: bytes) -> Misbehaviour:
    """Parse a misbehaviour file strictly; errors name the field."""
    if len(data) > MAX_FILE_SIZE:
        raise MalformedError(f"misbehaviour file is {len(data)} bytes, limit {MAX_FILE_SIZE}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedError(f"misbehaviour file is not JSON: {e}") from e
    f = Fields(obj, "misbehaviour")
    if f.get_str("format") != FORMAT:
        raise MalformedError(f"misbehaviour.format: expected {FORMAT!r}")
    kind = f.get_str("kind")
    if kind not in KINDS:
        raise MalformedError(f"misbehaviour.kind: {kind[:40]!r} is not one of {', '.join(KINDS)}")
    notes = f.get_list("checkpoints")
    if len(notes) != 2 or not all(isinstance(n, str) for n in notes):
        raise MalformedError("misbehaviour.checkpoints: expected two signed notes (strings)")
    raw = f.value("consistency")
    consistency = None
    if raw is not None:
        c = Fields(raw, "misbehaviour.consistency")
        consistency = ForkProof(
            c.get_int("old_size"),
            c.get_int("new_size"),
            c.get_hashes("proof"),
            c.get_bytes("old_root_in_new_tree", HASH_SIZE),
        )
        c.done()
    attempts = []
    raw_attempts = f.value("attempts")
    if not isinstance(raw_attempts, list):
        raise MalformedError("misbehaviour.attempts: expected a list")
    for i, item in enumerate(raw_attempts):
        a = Fields(item, f"misbehaviour.attempts[{i}]")
        attempts.append(Attempt(a.get_str("source"), a.get_str("outcome")))
        a.done()
    m = Misbehaviour(
        origin=f.get_str("origin"),
        kind=kind,
        older=str(notes[0]).encode("utf-8"),
        newer=str(notes[1]).encode("utf-8"),
        consistency=consistency,
        attempts=tuple(attempts),
        detected_at=f.get_int("detected_at"),
        detected_by=f.get_str("detected_by"),
        peer=f.get_str("peer"),
    )
    f.done()
    return m


def verify_misbehaviour(data: bytes, verifier: NoteVerifier) -> Proven:
    """Prove offline that the log of ``verifier`` signed two incompatible histories.

    Both checkpoints must carry a valid signature by the log (origin = the key's name); the
    file's own ``kind`` is not trusted, the proof is recomputed. Raises ``VerificationError``
    when the file does not prove misbehaviour, ``MalformedError`` when it does not parse.
    """
    m = parse_misbehaviour(data)
    checkpoints = []
    for i, note in enumerate((m.older, m.newer)):
        try:
            cp, _, _ = open_checkpoint(note, verifier)
        except TranslogError as e:
            raise VerificationError(f"misbehaviour.checkpoints[{i}]: {e}") from e
        checkpoints.append(cp)
    a, b = checkpoints
    if a.size > b.size:
        a, b = b, a
    kind = classify(a, b, m.consistency)
    if kind is None:
        raise VerificationError(_why_not(a, b, m))
    return Proven(m, a, b, _statement(kind, a, b, m.consistency))


def _why_not(a: Checkpoint, b: Checkpoint, m: Misbehaviour) -> str:
    head = f"the file does not prove misbehaviour of log {a.origin}: "
    if a.size == b.size:
        return head + f"both checkpoints have size {a.size} and the same root"
    c = m.consistency
    if c is None:
        tried = "; ".join(f"{t.source}: {t.outcome}" for t in m.attempts) or "none recorded"
        return head + (
            f"sizes {a.size} and {b.size} differ and the file holds no consistency proof "
            f"(attempts: {tried}); a failed or missing proof is not evidence on its own"
        )
    if (c.old_size, c.new_size) != (a.size, b.size):
        return head + (
            f"the proof is for sizes {c.old_size} -> {c.new_size}, the checkpoints have "
            f"sizes {a.size} and {b.size}"
        )
    try:
        verify_consistency(a.size, b.size, c.old_root_in_new_tree, b.root_hash, c.proof)
    except InvalidProofError as e:
        return head + f"the proof does not verify against the larger checkpoint: {e}"
    return head + "the proof shows the smaller checkpoint is a prefix of the larger one"


def _statement(kind: str, a: Checkpoint, b: Checkpoint, c: ForkProof | None) -> str:
    ra, rb = _b64(a.root_hash), _b64(b.root_hash)
    if kind == KIND_SAME_SIZE:
        return f"the log signed two different roots for tree size {a.size}: {ra} and {rb}"
    if kind == KIND_EMPTY:
        return "the log signed a checkpoint of size 0 whose root is not SHA-256 of nothing"
    assert c is not None
    return (
        f"the log signed size {a.size} with root {ra}, and size {b.size} with root {rb}; "
        f"a consistency proof of {len(c.proof)} hashes shows that the first {a.size} leaves "
        f"of the size-{b.size} tree have root {_b64(c.old_root_in_new_tree)}, so neither "
        "history is a prefix of the other"
    )


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode("ascii")
