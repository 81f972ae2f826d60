"""Keys, note signing and verification: Ed25519 notes, cosignature/v1, RFC 6962 tree heads.

Key and verifier types (c2sp.org/signed-note type bytes):

* ``0x01`` Ed25519 note signatures: :class:`NoteSigner` and :class:`NoteVerifier`.
* ``0x04`` timestamped Ed25519 cosignatures (c2sp.org/tlog-cosignature):
  :class:`CosignatureSigner` and :class:`CosignatureVerifier`. A plain 0x01 key converts to
  a cosignature key (same Ed25519 key, key ID recomputed with type 0x04), as
  transparency-dev/formats does.
* ``0x05`` RFC 6962 ``TreeHeadSignature`` note signatures (c2sp.org/tlog-checkpoint):
  :class:`RFC6962Verifier`; :class:`TreeHeadSigner` holds the ECDSA P-256 key and also
  produces the CT ``get-sth`` signature (PROTOCOLS §8).

Every verifier class derives from :class:`NoteVerifier` and carries a ``key_type``, so
:func:`open_note` takes any mix of them. :func:`parse_vkey` picks the class from the vkey's
type byte.

The only third-party exception handled here, ``cryptography``'s ``InvalidSignature``, is
mapped to :class:`InvalidSignatureError`. No exception message or ``repr`` ever contains
private key material.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import struct
import time
from collections.abc import Sequence
from typing import ClassVar, NoReturn, Protocol, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from translog.errors import (
    ConfigError,
    InvalidSignatureError,
    MalformedError,
    UnknownKeyError,
    VerificationError,
)
from translog.note import (
    KEY_TYPE_COSIGNATURE,
    KEY_TYPE_ED25519,
    KEY_TYPE_RFC6962,
    MAX_SIGNATURES,
    Note,
    NoteSignature,
    decode_base64,
    key_id,
    parse_note,
    validate_key_name,
    validate_note_text,
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


class _Ed25519Signer:
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
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID for this key type."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @property
    def vkey(self) -> str:
        """The verifier key text ``<name>+<hex id>+<base64(type || public key)>``."""
        return _format_key(self._name, self._key_id, self.KEY_TYPE, self._public)

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


class NoteVerifier:
    """A trusted public key for one key name. This base class verifies Ed25519 (0x01).

    Subclasses: :class:`CosignatureVerifier` (0x04) and :class:`RFC6962Verifier` (0x05).
    """

    KEY_TYPE: ClassVar[int] = KEY_TYPE_ED25519
    __slots__ = ("_key_id", "_name", "_public")

    def __init__(self, name: str, public_key: bytes) -> None:
        validate_key_name(name)
        self._name = name
        self._public = self._check_public_key(public_key)
        self._key_id = key_id(name, self.KEY_TYPE, self._key_id_material())

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID."""
        return self._key_id

    @property
    def key_type(self) -> int:
        """The signature type byte (0x01, 0x04 or 0x05)."""
        return self.KEY_TYPE

    @property
    def public_key(self) -> bytes:
        """The public key bytes as they appear in the vkey (after the type byte)."""
        return self._public

    @property
    def vkey(self) -> str:
        """The verifier key text."""
        return _format_key(self._name, self._key_id, self.KEY_TYPE, self._public)

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
        name, type_byte, key = _parse_vkey_fields(vkey)
        if type_byte not in (KEY_TYPE_ED25519, KEY_TYPE_COSIGNATURE):
            raise MalformedError(f"vkey for {name}: type 0x{type_byte:02x} cannot cosign")
        verifier = cls(name, key)
        if _vkey_id_hex(vkey) != key_id(name, type_byte, key).hex():
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


class RFC6962Verifier(NoteVerifier):
    """Verifies RFC 6962 ``TreeHeadSignature`` note signatures (0x05) on a checkpoint.

    The vkey carries the DER SubjectPublicKeyInfo of an ECDSA P-256 key (a translog choice:
    no spec defines a 0x05 vkey); the key ID hashes the RFC 6962 log ID, per
    c2sp.org/tlog-checkpoint. The note signature is ``u64 timestamp_ms || digitally-signed``.
    """

    KEY_TYPE: ClassVar[int] = KEY_TYPE_RFC6962
    __slots__ = ()

    @property
    def log_id(self) -> bytes:
        """The RFC 6962 log ID: SHA-256 of the public key DER."""
        return hashlib.sha256(self._public).digest()

    def _check_public_key(self, public_key: bytes) -> bytes:
        _load_p256_public(public_key)
        return bytes(public_key)

    def _key_id_material(self) -> bytes:
        return self.log_id

    def _check(self, text: bytes, signature: bytes) -> bool:
        from translog.checkpoint import parse_checkpoint  # checkpoint imports this module

        try:
            cp = parse_checkpoint(text.decode("utf-8"), origin=self._name)
        except (UnicodeDecodeError, VerificationError, MalformedError):
            return False
        if cp.extensions or len(signature) < 8:
            return False
        (timestamp,) = _U64.unpack_from(signature)
        try:
            verify_tree_head(self._public, signature[8:], timestamp, cp.size, cp.root_hash)
        except (MalformedError, VerificationError):
            return False
        return True


def parse_vkey(vkey: str) -> NoteVerifier:
    """Parse a verifier key strictly and return the verifier class for its type byte.

    Rejects wrong part counts, key IDs that are not 8 lowercase hex digits, non-canonical
    base64, invalid names, unknown type bytes, wrong key lengths and mismatched key IDs.
    """
    name, type_byte, key = _parse_vkey_fields(vkey)
    cls = _VERIFIER_TYPES.get(type_byte)
    if cls is None:
        raise MalformedError(f"vkey for {name}: unknown key type 0x{type_byte:02x}")
    verifier = cls(name, key)
    if _vkey_id_hex(vkey) != verifier.key_id.hex():
        raise MalformedError(f"vkey for {name}: key id does not match the key")
    return verifier


_VERIFIER_TYPES: dict[int, type[NoteVerifier]] = {
    KEY_TYPE_ED25519: NoteVerifier,
    KEY_TYPE_COSIGNATURE: CosignatureVerifier,
    KEY_TYPE_RFC6962: RFC6962Verifier,
}


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


# ------------------------------------------------------------ RFC 6962 tree heads (PROTOCOLS §8)

_TH_INPUT = struct.Struct(">BBQQ")
_DS_HEADER = struct.Struct(">BBH")
HASH_SHA256 = 4
SIG_ECDSA = 3


def tree_head_input(timestamp_ms: int, size: int, root_hash: bytes) -> bytes:
    """The RFC 6962 ``TreeHeadSignature`` input: version 0, type 1 (tree_hash), ts, size, root."""
    if not 0 <= timestamp_ms < 1 << 64 or not 0 <= size < 1 << 64:
        raise MalformedError(f"tree head timestamp {timestamp_ms} or size {size} out of range")
    if len(root_hash) != 32:
        raise MalformedError(f"tree head root must be 32 bytes, got {len(root_hash)}")
    return _TH_INPUT.pack(0, 1, timestamp_ms, size) + root_hash


class TreeHeadSigner:
    """An ECDSA P-256 key that signs RFC 6962 tree heads (``get-sth``)."""

    __slots__ = ("_key",)

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigError(f"tree head key must be P-256, got {private_key.curve.name}")
        self._key = private_key

    @classmethod
    def generate(cls) -> TreeHeadSigner:
        """Create a signer with a fresh P-256 key."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> TreeHeadSigner:
        """Load an unencrypted PEM private key (PKCS8 or SEC1) that must be P-256."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise ConfigError("tree head key is not an unencrypted pem private key") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("tree head key is not an ecdsa key")
        return cls(key)

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS8 PEM. Secret: write it only to a 0600 file."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_der(self) -> bytes:
        """The public key as SubjectPublicKeyInfo DER."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def log_id(self) -> bytes:
        """The RFC 6962 log ID: SHA-256 of the public key DER."""
        return hashlib.sha256(self.public_der()).digest()

    def sign_tree_head(self, timestamp_ms: int, size: int, root_hash: bytes) -> bytes:
        """Sign a tree head; return the TLS ``digitally-signed`` encoding (hash 4, sig 3)."""
        message = tree_head_input(timestamp_ms, size, root_hash)
        der = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        return _DS_HEADER.pack(HASH_SHA256, SIG_ECDSA, len(der)) + der

    def verifier(self, name: str) -> RFC6962Verifier:
        """The 0x05 note verifier for this key under the log's name (its origin)."""
        return RFC6962Verifier(name, self.public_der())

    def note_signature(
        self, name: str, timestamp_ms: int, size: int, root_hash: bytes
    ) -> NoteSignature:
        """A 0x05 checkpoint signature line: ``u64 timestamp_ms || digitally-signed``."""
        raw = _U64.pack(timestamp_ms) + self.sign_tree_head(timestamp_ms, size, root_hash)
        return NoteSignature(name, self.verifier(name).key_id, raw)

    def __repr__(self) -> str:
        return f"TreeHeadSigner(log_id={self.log_id.hex()!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("TreeHeadSigner cannot be pickled")


def parse_tree_head_signature(signature: bytes) -> bytes:
    """Parse a TLS ``digitally-signed`` struct strictly; return the DER ECDSA signature.

    Requires hash algorithm 4 (SHA-256), signature algorithm 3 (ECDSA), a length that
    matches exactly and a DER ``ECDSA-Sig-Value``.
    """
    if len(signature) < _DS_HEADER.size:
        raise MalformedError(f"tree head signature is {len(signature)} bytes, too short")
    hash_alg, sig_alg, length = _DS_HEADER.unpack_from(signature)
    if hash_alg != HASH_SHA256 or sig_alg != SIG_ECDSA:
        raise MalformedError(f"tree head signature uses hash {hash_alg} sig {sig_alg}, want 4/3")
    der = signature[_DS_HEADER.size :]
    if len(der) != length:
        raise MalformedError(f"tree head signature length is {length}, got {len(der)} bytes")
    try:
        decode_dss_signature(der)  # strict DER: rejects BER forms and trailing bytes
    except ValueError as e:
        raise MalformedError("tree head signature is not a der ecdsa signature") from e
    return der


def verify_tree_head(
    public_key: bytes, signature: bytes, timestamp_ms: int, size: int, root_hash: bytes
) -> None:
    """Verify a TLS-encoded RFC 6962 tree head signature with a P-256 key (PEM or DER)."""
    key = _load_p256_public(public_key)
    der = parse_tree_head_signature(signature)
    message = tree_head_input(timestamp_ms, size, root_hash)
    try:
        key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise InvalidSignatureError(
            f"invalid tree head signature for size {size} at {timestamp_ms}"
        ) from e


def _load_p256_public(data: bytes) -> ec.EllipticCurvePublicKey:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise MalformedError("public key is not a pem or der subjectpublickeyinfo") from e
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise MalformedError("public key is not an ecdsa p-256 key")
    return key


# ---------------------------------------------------------------------------- key files


def write_private_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Create ``path`` with mode 0600, write ``data`` and fsync; never overwrite.

    Raises :class:`ConfigError` if the file exists. On a write failure the partial file is
    removed.
    """
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as e:
        raise ConfigError(f"refusing to overwrite existing key file {os.fspath(path)}") from e
    except OSError as e:
        raise ConfigError(f"cannot create key file {os.fspath(path)}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but make it exact
        _write_all(fd, data)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise ConfigError(f"cannot write key file {os.fspath(path)}: {e.strerror}") from e
    os.close(fd)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def read_private_file(path: str | os.PathLike[str]) -> bytes:
    """Read a private key file, refusing one that group or others can access."""
    shown = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)  # a fifo must not hang
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise ConfigError(f"private key {shown} does not exist") from e
    except OSError as e:
        raise ConfigError(f"cannot open private key {shown}: {e.strerror}") from e
    try:
        _check_key_mode(shown, os.fstat(fd))  # fstat the open file: no check-then-open race
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _check_key_mode(shown: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"private key {shown} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        what = "readable" if mode & 0o044 else "accessible"
        raise ConfigError(
            f"private key {shown} is {what} by group or others (mode {mode:04o}); "
            f"run chmod 600 {shown}"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some platforms cannot open directories; the file itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _parse_vkey_fields(vkey: str) -> tuple[str, int, bytes]:
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


def _vkey_id_hex(vkey: str) -> str:
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
