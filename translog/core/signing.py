"""Ed25519 keys, note signing and verification: signed notes and cosignature/v1.

Key and verifier types (c2sp.org/signed-note type bytes):

* ``0x01`` Ed25519 note signatures: :class:`NoteSigner` and :class:`NoteVerifier`.
* ``0x04`` timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature):
  :class:`CosignatureSigner` and :class:`CosignatureVerifier`. A plain 0x01 key converts to
  a cosignature key (same Ed25519 key, key ID recomputed with type 0x04), as
  transparency-dev/formats does.
* ``0x05`` RFC 6962 ``TreeHeadSignature`` note signatures (c2sp.org/tlog-checkpoint) live in
  :mod:`translog.core.ct` (:class:`~translog.core.ct.RFC6962Verifier`,
  :class:`~translog.core.ct.TreeHeadSigner`),
  which builds on this module. Private key files are :mod:`translog.keyfile`.

Every verifier class derives from :class:`NoteVerifier` and carries a ``key_type``, so
:func:`open_note` takes any mix of them. :func:`translog.core.vkey.parse_vkey` picks the class from
the vkey's
type byte.

The only third-party exception handled here, ``cryptography``'s ``InvalidSignature``, is
mapped to :class:`InvalidSignatureError`. No exception message or ``repr`` ever contains
private key material.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Sequence
from typing import ClassVar, NoReturn, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from translog.core.note import (
    KEY_TYPE_COSIGNATURE,
    KEY_TYPE_ED25519,
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    decode_base64,
    key_id,
    parse_note,
    validate_key_name,
    validate_note_text,
)
from translog.errors import (
    ConfigError,
    InvalidSignatureError,
    MalformedError,
    UnknownKeyError,
)

MAX_TIMESTAMP = (1 << 63) - 1
_U64 = struct.Struct(">Q")
_HEX = frozenset("0123456789abcdef")


class Signer(Protocol):
    """Anything that can add one signature line to a note."""

    @property
    def name(self) -> str:
        """The key name on the signature line."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID on the signature line."""
        ...

    def sign(self, text: str) -> NoteSignature:
        """Sign the note text (which ends in a newline)."""
        ...


# ---------------------------------------------------------------- Ed25519 signers (0x01, 0x04)

_S = TypeVar("_S", bound="_Ed25519Signer")


class _KeyIdentity:
    """What names a key, shared by signers and verifiers: name, key ID, public key, vkey."""

    KEY_TYPE: ClassVar[int]
    _name: str
    _key_id: bytes
    _public: bytes

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID for this key type."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The public key bytes as they appear in the vkey (after the type byte)."""
        return self._public

    @property
    def vkey(self) -> str:
        """The verifier key text ``<name>+<hex id>+<base64(type || public key)>``."""
        return _format_key(self._name, self._key_id, self.KEY_TYPE, self._public)


class _Ed25519Signer(_KeyIdentity):
    """An Ed25519 private key with a key name; the subclass fixes the key type byte."""

    KEY_TYPE: ClassVar[int] = KEY_TYPE_ED25519
    __slots__ = ("_key", "_key_id", "_name", "_public")

    def __init__(self, name: str, private_key: ed25519.Ed25519PrivateKey) -> None:
        validate_key_name(name)
        self._name = name
        self._key = private_key
        self._public = private_key.public_key().public_bytes_raw()
        self._key_id = key_id(name, self.KEY_TYPE, self._public)

    @classmethod
    def generate(cls: type[_S], name: str) -> _S:
        """Create a signer with a fresh random key."""
        return cls(name, ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls: type[_S], text: str) -> _S:
        """Parse ``PRIVATE+KEY+<name>+<hex id>+<base64(type || seed)>`` strictly.

        One trailing newline (as in a key file) is allowed. The key ID must match the key.
        """
        name, hex_id, type_byte, seed = _parse_skey(text, cls._accepted_skey_types())
        signer = cls(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed))
        if hex_id != key_id(name, type_byte, signer._public).hex():
            raise ConfigError(f"signer key for {name}: key id does not match the key")
        return signer

    @classmethod
    def _accepted_skey_types(cls) -> tuple[int, ...]:
        return (KEY_TYPE_ED25519,)

    @property
    def skey(self) -> str:
        """The signer key text. Secret: never log, serve or put it in an error."""
        seed = self._key.private_bytes_raw()
        return "PRIVATE+KEY+" + _format_key(self._name, self._key_id, self.KEY_TYPE, seed)

    def _sign_raw(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r}, key_id={self._key_id.hex()!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled")


class NoteSigner(_Ed25519Signer):
    """An Ed25519 (type 0x01) note signer, e.g. a log's checkpoint key."""

    __slots__ = ()

    def sign(self, text: str) -> NoteSignature:
        """Sign the note text (UTF-8, ending in newline) and return the signature line."""
        validate_note_text(text)
        return NoteSignature(self.name, self.key_id, self._sign_raw(text.encode("utf-8")))


class CosignatureSigner(_Ed25519Signer):
    """A timestamped Ed25519 cosigner (type 0x04, c2sp.org/tlog-cosignature).

    :meth:`from_skey` also accepts a plain 0x01 skey and converts it (the key ID on the
    signature line is then the 0x04 one); :attr:`skey` always uses type 0x04.
    """

    KEY_TYPE: ClassVar[int] = KEY_TYPE_COSIGNATURE
    __slots__ = ()

    @classmethod
    def _accepted_skey_types(cls) -> tuple[int, ...]:
        return (KEY_TYPE_ED25519, KEY_TYPE_COSIGNATURE)

    def cosign(self, checkpoint_text: str, timestamp: int) -> NoteSignature:
        """Cosign the checkpoint text as of ``timestamp`` (POSIX seconds)."""
        message = cosignature_message(checkpoint_text, timestamp)
        raw = _U64.pack(timestamp) + self._sign_raw(message)
        return NoteSignature(self.name, self.key_id, raw)

    def sign(self, text: str) -> NoteSignature:
        """Cosign ``text`` with the current time."""
        return self.cosign(text, int(time.time()))


def cosignature_message(checkpoint_text: str | bytes, timestamp: int) -> bytes:
    """Return the cosignature/v1 signed message: header, time line, then the checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedError(f"cosignature timestamp {timestamp} is out of range")
    text = _utf8(checkpoint_text)
    if not text.endswith(b"\n") or text.count(b"\n") < 3:
        raise MalformedError("cosigned text must be a checkpoint body of at least 3 lines")
    return b"cosignature/v1\ntime %d\n" % timestamp + text


def parse_cosignature_timestamp(sig_bytes: bytes) -> int:
    """Return the timestamp of a cosignature/v1 signature (the bytes after the key ID)."""
    if len(sig_bytes) != 8 + 64:
        raise MalformedError(f"cosignature must be 72 bytes after the key id, got {len(sig_bytes)}")
    (timestamp,) = _U64.unpack_from(sig_bytes)
    if timestamp > MAX_TIMESTAMP:
        raise MalformedError(f"cosignature timestamp {timestamp} exceeds 2^63-1")
    return int(timestamp)


# ------------------------------------------------------------------------------- verifiers


class NoteVerifier(_KeyIdentity):
    """A trusted public key for one key name. This base class verifies Ed25519 (0x01).

    Subclasses: :class:`CosignatureVerifier` (0x04) and :class:`translog.core.ct.RFC6962Verifier`
    (0x05).
    """

    KEY_TYPE: ClassVar[int] = KEY_TYPE_ED25519
    __slots__ = ("_key_id", "_name", "_public")

    def __init__(self, name: str, public_key: bytes) -> None:
        validate_key_name(name)
        self._name = name
        self._public = self._check_public_key(public_key)
        self._key_id = key_id(name, self.KEY_TYPE, self._key_id_material())

    @property
    def key_type(self) -> int:
        """The signature type byte (0x01, 0x04 or 0x05)."""
        return self.KEY_TYPE

    @property
    def label(self) -> str:
        """``<name>+<hex id>``, the way errors name a key."""
        return f"{self._name}+{self._key_id.hex()}"

    def matches(self, sig: NoteSignature) -> bool:
        """Whether ``sig`` claims to be by this key (same name and key ID)."""
        return sig.name == self._name and sig.key_id == self._key_id

    def verify(self, text: bytes | str, sig: NoteSignature) -> None:
        """Verify ``sig`` over the note text; raise :class:`InvalidSignatureError` if bad."""
        if not self.matches(sig):
            raise UnknownKeyError(
                f"signature by {sig.name}+{sig.key_id.hex()} is not by key {self.label}"
            )
        if not self._check(_utf8(text), sig.signature):
            raise InvalidSignatureError(f"invalid signature for key {self.label}")

    def _check_public_key(self, public_key: bytes) -> bytes:
        if len(public_key) != 32:
            raise MalformedError(f"ed25519 public key must be 32 bytes, got {len(public_key)}")
        return bytes(public_key)

    def _key_id_material(self) -> bytes:
        return self._public

    def _check(self, text: bytes, signature: bytes) -> bool:
        return _ed25519_ok(self._public, text, signature)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoteVerifier) and (type(other), other.vkey) == (
            type(self),
            self.vkey,
        )

    def __hash__(self) -> int:
        return hash(self.vkey)


class CosignatureVerifier(NoteVerifier):
    """Verifies cosignature/v1 (0x04) signatures over a checkpoint text."""

    KEY_TYPE: ClassVar[int] = KEY_TYPE_COSIGNATURE
    __slots__ = ()

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse a 0x04 vkey, or convert a plain Ed25519 (0x01) vkey to a cosignature key."""
        name, type_byte, key = parse_vkey_fields(vkey)
        if type_byte not in (KEY_TYPE_ED25519, KEY_TYPE_COSIGNATURE):
            raise MalformedError(f"vkey for {name}: type 0x{type_byte:02x} cannot cosign")
        verifier = cls(name, key)
        if vkey_id_hex(vkey) != key_id(name, type_byte, key).hex():
            raise MalformedError(f"vkey for {name}: key id does not match the key")
        return verifier

    def timestamp(self, sig: NoteSignature) -> int:
        """The cosignature's timestamp (POSIX seconds); call after :meth:`verify`."""
        return parse_cosignature_timestamp(sig.signature)

    def _check(self, text: bytes, signature: bytes) -> bool:
        try:
            timestamp = parse_cosignature_timestamp(signature)
            message = cosignature_message(text, timestamp)
        except MalformedError:
            return False
        return _ed25519_ok(self._public, message, signature[8:])


# --------------------------------------------------------------------------- notes


def sign_note(text: str, signers: Sequence[Signer]) -> bytes:
    """Sign ``text`` with every signer and return the full signed note (UTF-8 bytes)."""
    validate_note_text(text)
    if not signers:
        raise MalformedError("a signed note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise MalformedError(f"{len(signers)} signers, limit is {MAX_SIGNATURES}")
    lines = "".join(signer.sign(text).line for signer in signers)
    return (text + "\n" + lines).encode("utf-8")


def open_note(
    data: bytes | str, verifiers: Sequence[NoteVerifier]
) -> tuple[Note, list[NoteSignature]]:
    """Parse a signed note and verify it, with the semantics of Go's ``note.Open``.

    Signatures are matched to verifiers by (name, key ID); unknown ones are ignored. Every
    signature of a known key must verify (:class:`InvalidSignatureError` otherwise), and at
    least one must (:class:`UnknownKeyError`). Returns the note and the verified signatures
    in note order, one per key.
    """
    note = parse_note(data)
    known = _index_verifiers(verifiers)
    text = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    checked: set[NoteSignature] = set()
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None or sig in checked:
            continue
        verifier.verify(text, sig)
        checked.add(sig)
        verified.setdefault((sig.name, sig.key_id), sig)
    if not verified:
        raise UnknownKeyError("note has no verifiable signatures")
    return note, list(verified.values())


def _index_verifiers(
    verifiers: Sequence[NoteVerifier],
) -> dict[tuple[str, bytes], NoteVerifier]:
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other != v:
            raise ConfigError(f"two different verifier keys share name and id {v.label}")
    return known


# ------------------------------------------------------------------------------ key text


def _format_key(name: str, kid: bytes, key_type: int, material: bytes) -> str:
    return f"{name}+{kid.hex()}+{base64.b64encode(bytes([key_type]) + material).decode()}"


def _utf8(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise MalformedError(f"text is not valid utf-8 at index {e.start}") from e


def _ed25519_ok(public: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != 64:
        return False
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _split_key_id(hex_id: str, what: str) -> None:
    if len(hex_id) != 8 or not set(hex_id) <= _HEX:
        raise MalformedError(f"{what}: key id must be 8 lowercase hex digits")


def parse_vkey_fields(vkey: str) -> tuple[str, int, bytes]:
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise MalformedError(f"vkey must be <name>+<id>+<key>, got {len(parts)} parts")
    name, hex_id, b64 = parts
    validate_key_name(name)
    _split_key_id(hex_id, f"vkey for {name}")
    try:
        raw = decode_base64(b64)
    except MalformedError as e:
        raise MalformedError(f"vkey for {name}: {e}") from e
    if not raw:
        raise MalformedError(f"vkey for {name}: empty key")
    return name, raw[0], raw[1:]


def vkey_id_hex(vkey: str) -> str:
    return vkey.split("+", 2)[1]


def _parse_skey(text: str, key_types: tuple[int, ...]) -> tuple[str, str, int, bytes]:
    """Split a signer key; every error names only the key name, never the material."""
    text = text[:-1] if text.endswith("\n") else text
    parts = text.split("+", 4)
    if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
        raise ConfigError("signer key must be PRIVATE+KEY+<name>+<id>+<key>")
    name, hex_id, b64 = parts[2], parts[3], parts[4]
    try:
        validate_key_name(name)
        _split_key_id(hex_id, f"signer key for {name}")
        raw = decode_base64(b64)
    except MalformedError as e:
        raise ConfigError(f"malformed signer key: {e}") from None
    if not raw or raw[0] not in key_types:
        raise ConfigError(f"signer key for {name}: unsupported key type")
    if len(raw) != 33:
        raise ConfigError(f"signer key for {name}: seed must be 32 bytes, got {len(raw) - 1}")
    return name, hex_id, raw[0], raw[1:]
