"""RFC 6962 tree heads (PROTOCOLS §8): the signed ``get-sth`` and the 0x05 checkpoint signature.

* :func:`tree_head_input` is the ``TreeHeadSignature`` input (RFC 6962 §3.5) and
  :class:`TreeHeadSigner` the log's ECDSA P-256 key that signs it, TLS ``digitally-signed``
  encoded; :func:`parse_tree_head_signature` and :func:`verify_tree_head` check one.
* :class:`RFC6962Verifier` is the note verifier for type ``0x05`` (c2sp.org/tlog-checkpoint):
  the same signature, carried on a checkpoint's signature line after a u64 timestamp.
  :func:`translog.core.vkey.parse_vkey` returns it for a 0x05 vkey.

``cryptography``'s ``InvalidSignature`` is mapped to :class:`InvalidSignatureError` here, for
the tree-head signatures (:mod:`translog.core.signing` does the same for Ed25519).
"""

from __future__ import annotations

import hashlib
import struct
from typing import ClassVar, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from translog.core.checkpoint import parse_checkpoint
from translog.core.note import KEY_TYPE_RFC6962, NoteSignature
from translog.core.signing import NoteVerifier
from translog.errors import ConfigError, InvalidSignatureError, MalformedError, VerificationError

_U64 = struct.Struct(">Q")
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
