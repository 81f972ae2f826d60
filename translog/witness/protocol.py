"""The c2sp.org/tlog-witness ``add-checkpoint`` wire format (PROTOCOLS §6). Pure: no I/O.

Request body (``POST <prefix>/add-checkpoint``)::

    old <size>\\n                     decimal, no leading zeros ("0" when none)
    <base64 consistency-proof hash>\\n (0..63 lines; none when old is 0)
    \\n
    <the signed checkpoint>

Responses: 200 with cosignature lines; 409 with ``<size>\\n`` as ``text/x.tlog.size``; 400,
403, 404, 422 for the other failures (see :mod:`translog.witness.core`).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from translog.core.merkle import HASH_SIZE
from translog.core.note import MAX_NOTE_SIZE, NoteSignature, decode_base64, parse_note
from translog.errors import MalformedError

MAX_PROOF_LINES = 63
"""The spec's cap on consistency-proof lines."""
MAX_REQUEST_SIZE = MAX_NOTE_SIZE + 16 + 64 * (MAX_PROOF_LINES + 1)
"""Largest add-checkpoint body accepted: a note of the largest size plus the header."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""The content type of a 409 answer, whose body is the witness's latest size."""

_DECIMAL = re.compile("0|[1-9][0-9]{0,18}")
MAX_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class AddCheckpoint:
    """One add-checkpoint request: the old size, the proof and the signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    """The signed checkpoint note, exactly as sent (it may carry several signatures)."""


def parse_size(text: str, what: str) -> int:
    """A decimal tree size without leading zeros, at most 2^63-1."""
    if _DECIMAL.fullmatch(text) is None:
        raise MalformedError(f"{what} {text[:24]!r} is not a decimal without leading zeros")
    size = int(text)
    if size > MAX_SIZE:
        raise MalformedError(f"{what} {size} exceeds 2^63-1")
    return size


def format_add_checkpoint(
    old_size: int, proof: tuple[bytes, ...] | list[bytes], note: bytes
) -> bytes:
    """The request body for ``add-checkpoint``."""
    if old_size < 0 or old_size > MAX_SIZE:
        raise MalformedError(f"old size {old_size} is out of range")
    if len(proof) > MAX_PROOF_LINES:
        raise MalformedError(f"consistency proof has {len(proof)} hashes, limit {MAX_PROOF_LINES}")
    if old_size == 0 and proof:
        raise MalformedError("a consistency proof from size 0 must be empty")
    lines = [f"old {old_size}\n"] + [base64.b64encode(h).decode() + "\n" for h in proof] + ["\n"]
    return "".join(lines).encode("ascii") + note


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse a request body strictly; any defect is a ``MalformedError`` (HTTP 400).

    The checkpoint note is only split off here, not verified; its signature is checked by
    the witness against the log's key.
    """
    if len(body) > MAX_REQUEST_SIZE:
        raise MalformedError(f"request body is {len(body)} bytes, limit is {MAX_REQUEST_SIZE}")
    end = body.find(b"\n\n")
    if end < 0:
        raise MalformedError("request has no empty line after the old size and proof lines")
    try:
        header = body[: end + 1].decode("ascii")
    except UnicodeDecodeError as e:
        raise MalformedError("request header lines are not ascii") from e
    lines = header[:-1].split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise MalformedError("request must start with 'old <size>'")
    old_size = parse_size(first[4:], "old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise MalformedError(
            f"request has {len(lines) - 1} consistency proof lines, limit {MAX_PROOF_LINES}"
        )
    proof = []
    for i, line in enumerate(lines[1:]):
        try:
            h = decode_base64(line)
        except MalformedError as e:
            raise MalformedError(f"consistency proof line {i + 1}: {e}") from e
        if len(h) != HASH_SIZE:
            raise MalformedError(f"consistency proof line {i + 1} is {len(h)} bytes, not 32")
        proof.append(h)
    note = body[end + 2 :]
    if not note:
        raise MalformedError("request has no checkpoint after the empty line")
    return AddCheckpoint(old_size, tuple(proof), note)


def format_cosignatures(signatures: list[NoteSignature]) -> bytes:
    """A 200 body: one signature line per cosignature."""
    return "".join(sig.line for sig in signatures).encode("utf-8")


def parse_cosignatures(body: bytes) -> list[NoteSignature]:
    """Parse a 200 body: one or more note signature lines (strict, like a note's block)."""
    if not body or not body.endswith(b"\n"):
        raise MalformedError("cosignature response must be signature lines ending in a newline")
    # Reuse the note parser on a dummy note, so that the line syntax is the same.
    note = parse_note(b"x\n\n" + body)
    return list(note.signatures)


def parse_size_body(body: bytes) -> int:
    """The body of a 409 answer: ``<size>\\n``."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as e:
        raise MalformedError("409 body is not ascii") from e
    if not text.endswith("\n"):
        raise MalformedError("409 body must be '<size>\\n'")
    return parse_size(text[:-1], "409 body size")
