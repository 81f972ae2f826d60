"""C2SP checkpoints (c2sp.org/tlog-checkpoint): the signed tree head as a signed note.

The note text is ``<origin>\\n<size>\\n<base64 root>\\n`` plus optional extension lines.

Parsing is strict (PROTOCOLS §1): the size is decimal with no leading zeros and at most
2^63-1, and the root must be canonical base64 of exactly 32 bytes. ``strict_root=False``
skips only the 32-byte length check; it exists for transparency-dev/formats vectors, whose
``ParseCheckpoint`` does not check the root length, and must not be used for real logs.

The origin is only required to be a non-empty line: the spec forbids spaces in it, but the
Go checksum database's origin is ``go.sum database tree``, and we verify that log too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from translog.core.note import MAX_NOTE_SIZE, Note, NoteSignature, decode_base64, validate_note_text
from translog.core.signing import NoteSigner, NoteVerifier, Signer, open_note, sign_note
from translog.errors import MalformedError, UnknownKeyError, VerificationError

HASH_SIZE = 32
MAX_SIZE = (1 << 63) - 1
_SIZE = re.compile("0|[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, tree size, RFC 6962 root hash and opaque extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(cp: Checkpoint) -> str:
    """Return the checkpoint's note text; raise :class:`MalformedError` if it would not parse."""
    root = base64.b64encode(cp.root_hash).decode("ascii")
    text = f"{cp.origin}\n{cp.size}\n{root}\n" + "".join(f"{ext}\n" for ext in cp.extensions)
    parsed = parse_checkpoint(text, strict_root=len(cp.root_hash) == HASH_SIZE)
    if parsed != cp:
        raise MalformedError("checkpoint fields contain newlines or are out of range")
    return text


def parse_checkpoint(
    text: str, *, origin: str | None = None, strict_root: bool = True
) -> Checkpoint:
    """Parse checkpoint note text strictly.

    If ``origin`` is given, a different origin raises :class:`VerificationError`. Other
    defects raise :class:`MalformedError`.
    """
    if len(text) > MAX_NOTE_SIZE:
        raise MalformedError(f"checkpoint is {len(text)} characters, limit is {MAX_NOTE_SIZE}")
    validate_note_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedError(f"checkpoint has {len(lines)} lines, needs at least 3")
    cp_origin, size_line, root_line, *extensions = lines
    if not cp_origin:
        raise MalformedError("checkpoint origin is empty")
    if origin is not None and cp_origin != origin:
        raise VerificationError(f"checkpoint origin is {cp_origin!r}, expected {origin!r}")
    if any(not ext for ext in extensions):
        raise MalformedError("checkpoint has an empty extension line")
    return Checkpoint(
        cp_origin, _parse_size(size_line), _parse_root(root_line, strict_root), tuple(extensions)
    )


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner, *extra: Signer) -> bytes:
    """Sign with the log's key, then any extra signers (e.g. cosigners); return the note."""
    return sign_note(format_checkpoint(cp), [signer, *extra])


def open_checkpoint(
    data: bytes | str,
    log_verifier: NoteVerifier,
    *,
    origin: str | None = None,
    others: Sequence[NoteVerifier] = (),
    strict_root: bool = True,
) -> tuple[Checkpoint, Note, list[NoteSignature]]:
    """Verify a signed checkpoint and parse it.

    The log's signature must be present and valid; the origin must equal ``origin`` (default:
    the log key's name). Signatures by ``others`` (witnesses, cosigners) are verified too and
    any known one that fails rejects the checkpoint; unknown signatures are ignored. The text
    is parsed only after the log's signature verified. Returns the checkpoint, the note and
    the verified signatures, the log's first.
    """
    note, verified = _open_with_log(data, log_verifier, others)
    expected = log_verifier.name if origin is None else origin
    cp = parse_checkpoint(note.text, origin=expected, strict_root=strict_root)
    log_sig = next(sig for sig in verified if log_verifier.matches(sig))
    rest = [sig for sig in verified if sig is not log_sig]
    return cp, note, [log_sig, *rest]


def _open_with_log(
    data: bytes | str, log_verifier: NoteVerifier, others: Sequence[NoteVerifier]
) -> tuple[Note, list[NoteSignature]]:
    try:
        note, verified = open_note(data, [log_verifier, *others])
    except UnknownKeyError as e:
        raise UnknownKeyError(f"checkpoint has no signature by log key {log_verifier.label}") from e
    if not any(log_verifier.matches(sig) for sig in verified):
        raise UnknownKeyError(f"checkpoint has no signature by log key {log_verifier.label}")
    return note, verified


def _parse_size(line: str) -> int:
    if _SIZE.fullmatch(line) is None:
        raise MalformedError(f"checkpoint size {line[:40]!r} is not a decimal without leading 0")
    size = int(line)
    if size > MAX_SIZE:
        raise MalformedError(f"checkpoint size {size} exceeds 2^63-1")
    return size


def _parse_root(line: str, strict: bool) -> bytes:
    try:
        root = decode_base64(line)
    except MalformedError as e:
        raise MalformedError(f"checkpoint root hash: {e}") from e
    if strict and len(root) != HASH_SIZE:
        raise MalformedError(f"checkpoint root hash is {len(root)} bytes, expected {HASH_SIZE}")
    return root
