"""C2SP signed notes (c2sp.org/signed-note), byte-compatible with golang.org/x/mod/sumdb/note.

A signed note is UTF-8 text ending in a newline, one blank line, then one or more signature
lines ``— <key name> <base64(4-byte key ID || signature)>``. This module only parses and
formats; signing and verification live in :mod:`translog.core.signing`.

Where this parser is stricter than Go's ``note.Open`` (all deliberate, see PROTOCOLS §1):

* base64 must be canonical (re-encoding the bytes gives the same text), so a signature line
  has exactly one spelling;
* key names may not contain any character below U+0020 either (Go only rejects those in the
  note as a whole, which covers note names but not names in vkeys);
* the whole note is at most :data:`MAX_NOTE_SIZE` bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from translog.errors import MalformedError, TooLargeError

KEY_TYPE_ED25519 = 0x01
KEY_TYPE_COSIGNATURE = 0x04
KEY_TYPE_RFC6962 = 0x05

KEY_ID_SIZE = 4
MAX_SIGNATURES = 100  # Go's note.Open limit; the spec asks for at least 16
MAX_NOTE_SIZE = 1 << 20  # 1 MiB

SIG_PREFIX = "\u2014 "  # em dash, space

# Go's unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property above U+00FF.
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes after the ID."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        validate_key_name(self.name)
        if len(self.key_id) != KEY_ID_SIZE:
            raise MalformedError(f"key id must be {KEY_ID_SIZE} bytes, got {len(self.key_id)}")
        if not self.signature:
            raise MalformedError(f"empty signature for key {self.name}")

    @property
    def key_id_hex(self) -> str:
        """The key ID as 8 lowercase hex digits, as in a vkey."""
        return self.key_id.hex()

    @property
    def line(self) -> str:
        """The signature line, ``— <name> <base64(key ID || signature)>\\n``."""
        b64 = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIG_PREFIX}{self.name} {b64}\n"


@dataclass(frozen=True)
class Note:
    """A parsed signed note: the signed text (ending in newline) and every signature line."""

    text: str
    signatures: tuple[NoteSignature, ...]


def key_id(name: str, key_type: int, public_key: bytes) -> bytes:
    """Return the 4-byte key ID: ``SHA-256(name || 0x0A || type || public key)[:4]``."""
    if not 0 <= key_type <= 0xFF:
        raise MalformedError(f"key type must be one byte, got {key_type}")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key)
    return digest.digest()[:KEY_ID_SIZE]


def validate_key_name(name: str) -> None:
    """Raise :class:`MalformedError` unless ``name`` is a valid key name.

    Valid: non-empty UTF-8 with no Unicode space (Go's ``unicode.IsSpace``), no ``+`` and no
    ASCII control character.
    """
    if not name:
        raise MalformedError("key name is empty")
    if "+" in name:
        raise MalformedError(f"key name {name!r} contains '+'")
    if any(ch in _GO_SPACES or ch < " " for ch in name):
        raise MalformedError(f"key name {name!r} contains a space or control character")
    _encode_utf8(name, "key name")


def validate_note_text(text: str) -> None:
    """Raise :class:`MalformedError` unless ``text`` can be the text of a signed note.

    The text must be non-empty valid UTF-8, end in a newline and hold no ASCII control
    character other than newline.
    """
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    _check_no_control(text)
    _encode_utf8(text, "note text")


def decode_base64(text: str) -> bytes:
    """Decode standard, padded, canonical base64; raise :class:`MalformedError` otherwise.

    The message never echoes the input, so this is safe for secret material.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedError(f"invalid base64 ({len(text)} characters)") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedError(f"non-canonical base64 ({len(text)} characters)")
    return raw


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note strictly, the way Go's ``note.Open`` does, without verifying.

    The text is split from the signatures at the **last** blank line. Every line after it
    must be a signature line; there must be 1 to :data:`MAX_SIGNATURES` of them.
    """
    msg = _decode_note(data)
    split = msg.rfind("\n\n")
    if split < 0:
        raise MalformedError("note has no blank line before its signatures")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block:
        raise MalformedError("note has no signature lines")
    if not block.endswith("\n"):
        raise MalformedError("note signature block does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedError(f"note has {len(lines)} signatures, limit is {MAX_SIGNATURES}")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def format_note(note: Note) -> bytes:
    """Serialize a note: text, blank line, signature lines. Validates like :func:`parse_note`."""
    validate_note_text(note.text)
    if not note.signatures:
        raise MalformedError("note has no signatures")
    if len(note.signatures) > MAX_SIGNATURES:
        raise MalformedError(
            f"note has {len(note.signatures)} signatures, limit is {MAX_SIGNATURES}"
        )
    out = note.text + "\n" + "".join(sig.line for sig in note.signatures)
    return out.encode("utf-8")


def _decode_note(data: bytes | str) -> str:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_NOTE_SIZE:
        raise TooLargeError(f"note is {len(raw)} bytes, limit is {MAX_NOTE_SIZE}")
    try:
        msg = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedError(f"note is not valid utf-8 at byte {e.start}") from e
    _check_no_control(msg)
    return msg


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(SIG_PREFIX):
        raise MalformedError("note has a line after the blank line that is not a signature")
    name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
    if not sep or not b64:
        raise MalformedError("signature line has no base64 signature")
    validate_key_name(name)
    raw = decode_base64(b64)
    if len(raw) < KEY_ID_SIZE + 1:
        raise MalformedError(f"signature for key {name} is {len(raw)} bytes, need at least 5")
    return NoteSignature(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


def _check_no_control(text: str) -> None:
    m = _CONTROL.search(text)
    if m is not None:
        raise MalformedError(f"note has control character 0x{ord(m.group()):02x} at {m.start()}")


def _encode_utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MalformedError(f"{what} is not valid utf-8 at index {e.start}") from e
