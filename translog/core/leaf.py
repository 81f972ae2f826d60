"""The translog leaf (PROTOCOLS §9): the bytes stored in entry bundles and hashed as leaves.

Layout, big-endian::

    u8   version = 1
    u64  timestamp_ms   (when the log sequenced the entry)
    u8   kind           0 = inline payload, 1 = salted commitment
    kind 0: payload bytes up to the end of the leaf
    kind 1: 32 bytes SHA-256(salt || payload), salt = 32 random bytes

A leaf is at most 65,535 bytes, the largest entry a tlog-tiles bundle can hold (u16 length).
:func:`inline_leaf` and :func:`committed_leaf` are the sequencer's hot path: they pack bytes
directly and check only what ``struct`` does not.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from translog.errors import MalformedError, TooLargeError, VerificationError

LEAF_VERSION = 1
KIND_INLINE = 0
KIND_COMMITTED = 1
MAX_LEAF_SIZE = 65535
SALT_SIZE = 32
COMMITMENT_SIZE = 32
INLINE_HEADER_SIZE = 10
MAX_INLINE_PAYLOAD = MAX_LEAF_SIZE - INLINE_HEADER_SIZE
COMMITTED_LEAF_SIZE = INLINE_HEADER_SIZE + COMMITMENT_SIZE

_HEADER = struct.Struct(">BQB")


@dataclass(frozen=True)
class Leaf:
    """A decoded leaf: an inline ``payload`` or a ``commitment`` to a salted payload."""

    timestamp_ms: int
    kind: int
    payload: bytes | None = None
    commitment: bytes | None = None


def commitment(salt: bytes, payload: bytes) -> bytes:
    """Return ``SHA-256(salt || payload)``; the salt must be 32 bytes."""
    if len(salt) != SALT_SIZE:
        raise MalformedError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    return hashlib.sha256(salt + payload).digest()


def inline_leaf(timestamp_ms: int, payload: bytes) -> bytes:
    """Encode an inline leaf holding ``payload`` (at most 65,525 bytes)."""
    if len(payload) > MAX_INLINE_PAYLOAD:
        raise TooLargeError(
            f"inline payload is {len(payload)} bytes, limit is {MAX_INLINE_PAYLOAD}"
        )
    try:
        return _HEADER.pack(LEAF_VERSION, timestamp_ms, KIND_INLINE) + payload
    except struct.error as e:
        raise MalformedError(f"leaf timestamp {timestamp_ms} is not a u64") from e


def committed_leaf(timestamp_ms: int, payload: bytes, salt: bytes) -> bytes:
    """Encode a committed leaf for ``payload`` under a 32-byte ``salt``."""
    if len(salt) != SALT_SIZE:
        raise MalformedError(f"salt must be {SALT_SIZE} bytes, got {len(salt)}")
    try:
        header = _HEADER.pack(LEAF_VERSION, timestamp_ms, KIND_COMMITTED)
    except struct.error as e:
        raise MalformedError(f"leaf timestamp {timestamp_ms} is not a u64") from e
    return header + hashlib.sha256(salt + payload).digest()


def committed_leaves(
    timestamp_ms: int, payloads: Sequence[bytes], salts: Sequence[bytes]
) -> list[bytes]:
    """Committed leaves for many payloads under one timestamp (one header for all)."""
    if len(payloads) != len(salts):
        raise MalformedError(f"{len(payloads)} payloads but {len(salts)} salts")
    if set(map(len, salts)) - {SALT_SIZE}:
        raise MalformedError(f"every salt must be {SALT_SIZE} bytes")
    header = _header(timestamp_ms, KIND_COMMITTED)
    sha = hashlib.sha256
    return [
        header + sha(salt + payload).digest() for salt, payload in zip(salts, payloads, strict=True)
    ]


def new_salt() -> bytes:
    """A fresh random 32-byte salt."""
    return secrets.token_bytes(SALT_SIZE)


def new_salts(n: int) -> list[bytes]:
    """``n`` fresh random salts from one call to the CSPRNG."""
    if n < 0:
        raise ValueError(f"salt count must be >= 0, got {n}")
    pool = secrets.token_bytes(SALT_SIZE * n)
    return [pool[i : i + SALT_SIZE] for i in range(0, SALT_SIZE * n, SALT_SIZE)]


def encode_leaf(leaf: Leaf) -> bytes:
    """Encode a :class:`Leaf`, checking that its fields fit its kind."""
    if leaf.kind == KIND_INLINE:
        if leaf.payload is None or leaf.commitment is not None:
            raise MalformedError("an inline leaf has a payload and no commitment")
        return inline_leaf(leaf.timestamp_ms, leaf.payload)
    if leaf.kind == KIND_COMMITTED:
        if leaf.commitment is None or leaf.payload is not None:
            raise MalformedError("a committed leaf has a commitment and no payload")
        if len(leaf.commitment) != COMMITMENT_SIZE:
            raise MalformedError(f"commitment must be 32 bytes, got {len(leaf.commitment)}")
        return _header(leaf.timestamp_ms, KIND_COMMITTED) + leaf.commitment
    raise MalformedError(f"unknown leaf kind {leaf.kind}")


def decode_leaf(data: bytes) -> Leaf:
    """Decode a leaf strictly: version 1, a known kind and the exact length for the kind."""
    if len(data) > MAX_LEAF_SIZE:
        raise TooLargeError(f"leaf is {len(data)} bytes, limit is {MAX_LEAF_SIZE}")
    if len(data) < INLINE_HEADER_SIZE:
        raise MalformedError(f"leaf is {len(data)} bytes, shorter than its 10-byte header")
    version, timestamp_ms, kind = _HEADER.unpack_from(data)
    if version != LEAF_VERSION:
        raise MalformedError(f"unknown leaf version {version}, expected {LEAF_VERSION}")
    body = bytes(data[INLINE_HEADER_SIZE:])
    if kind == KIND_INLINE:
        return Leaf(timestamp_ms, KIND_INLINE, payload=body)
    if kind != KIND_COMMITTED:
        raise MalformedError(f"unknown leaf kind {kind}")
    if len(data) != COMMITTED_LEAF_SIZE:
        raise MalformedError(f"committed leaf is {len(data)} bytes, expected 42")
    return Leaf(timestamp_ms, KIND_COMMITTED, commitment=body)


def verify_payload(leaf_bytes: bytes, payload: bytes, salt: bytes | None) -> None:
    """Check that a leaf holds ``payload``: inline verbatim, or as SHA-256(salt || payload).

    Raises :class:`VerificationError` on a mismatch, or when a salt is missing for a
    committed leaf or given for an inline one.
    """
    leaf = decode_leaf(leaf_bytes)
    if leaf.kind == KIND_INLINE:
        if salt is not None:
            raise VerificationError("leaf is inline but a salt was given")
        if leaf.payload != payload:
            raise VerificationError(
                f"payload does not match the inline leaf ({len(payload)} bytes given, "
                f"leaf holds {len(leaf.payload or b'')})"
            )
        return
    if salt is None:
        raise VerificationError("leaf is a commitment; the salt is needed to check the payload")
    if commitment(salt, payload) != leaf.commitment:
        raise VerificationError(
            f"payload ({len(payload)} bytes) and salt do not match the leaf commitment"
        )


def _header(timestamp_ms: int, kind: int) -> bytes:
    try:
        return _HEADER.pack(LEAF_VERSION, timestamp_ms, kind)
    except struct.error as e:
        raise MalformedError(f"leaf timestamp {timestamp_ms} is not a u64") from e
