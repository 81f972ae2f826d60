"""The translog leaf (PROTOCOLS §9): byte layout, strict decoding, payload checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translog.core.leaf import (
    COMMITTED_LEAF_SIZE,
    INLINE_HEADER_SIZE,
    KIND_COMMITTED,
    KIND_INLINE,
    LEAF_VERSION,
    MAX_INLINE_PAYLOAD,
    MAX_LEAF_SIZE,
    SALT_SIZE,
    Leaf,
    commitment,
    committed_leaf,
    decode_leaf,
    encode_leaf,
    inline_leaf,
    new_salt,
    new_salts,
    verify_payload,
)
from translog.errors import MalformedError, TooLargeError, VerificationError

TS = 0x0102030405060708
SALT = bytes(range(32))
PAYLOAD = b"hello, audit log"
# SHA-256(bytes(range(32)) || b"hello, audit log")
COMMITMENT_HEX = "d3a6d2cd501f36ade3cd03327858aff0a5bba8ce7d7ec54ad06cc3887c2b68ae"


def test_constants() -> None:
    assert (LEAF_VERSION, KIND_INLINE, KIND_COMMITTED) == (1, 0, 1)
    assert (MAX_LEAF_SIZE, SALT_SIZE, INLINE_HEADER_SIZE) == (65535, 32, 10)
    assert MAX_INLINE_PAYLOAD == 65525
    assert COMMITTED_LEAF_SIZE == 42


def test_inline_layout() -> None:
    expected = bytes.fromhex("01010203040506070800616263")
    assert inline_leaf(TS, b"abc") == expected
    assert encode_leaf(Leaf(TS, KIND_INLINE, payload=b"abc")) == expected
    assert decode_leaf(expected) == Leaf(TS, KIND_INLINE, payload=b"abc")


def test_committed_layout() -> None:
    expected = bytes.fromhex("01010203040506070801" + COMMITMENT_HEX)
    assert commitment(SALT, PAYLOAD).hex() == COMMITMENT_HEX
    assert hashlib.sha256(SALT + PAYLOAD).hexdigest() == COMMITMENT_HEX
    assert committed_leaf(TS, PAYLOAD, SALT) == expected
    leaf = Leaf(TS, KIND_COMMITTED, commitment=bytes.fromhex(COMMITMENT_HEX))
    assert encode_leaf(leaf) == expected
    assert decode_leaf(expected) == leaf


def test_empty_inline_payload() -> None:
    assert inline_leaf(0, b"") == bytes.fromhex("01000000000000000000")
    assert decode_leaf(inline_leaf(0, b"")).payload == b""


@pytest.mark.parametrize("ts", [0, 1, (1 << 64) - 1])
def test_timestamp_bounds(ts: int) -> None:
    assert decode_leaf(inline_leaf(ts, b"x")).timestamp_ms == ts
    assert decode_leaf(committed_leaf(ts, b"x", SALT)).timestamp_ms == ts


@pytest.mark.parametrize("ts", [-1, 1 << 64], ids=["negative", "2^64"])
def test_timestamp_out_of_range(ts: int) -> None:
    with pytest.raises(MalformedError):
        inline_leaf(ts, b"x")
    with pytest.raises(MalformedError):
        committed_leaf(ts, b"x", SALT)
    with pytest.raises(MalformedError):
        encode_leaf(Leaf(ts, KIND_INLINE, payload=b"x"))


# ---------------------------------------------------------------------------- strictness

_COMMITTED = committed_leaf(TS, PAYLOAD, SALT)
_INLINE = inline_leaf(TS, PAYLOAD)


@pytest.mark.parametrize("n", range(COMMITTED_LEAF_SIZE), ids=lambda n: f"len{n}")
def test_every_truncation_of_committed_leaf_rejected(n: int) -> None:
    with pytest.raises(MalformedError):
        decode_leaf(_COMMITTED[:n])


@pytest.mark.parametrize("n", range(INLINE_HEADER_SIZE), ids=lambda n: f"len{n}")
def test_every_truncated_inline_header_rejected(n: int) -> None:
    # Past the header an inline leaf has no length field: a shorter payload is still a leaf.
    with pytest.raises(MalformedError):
        decode_leaf(_INLINE[:n])


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version_rejected(version: int) -> None:
    for leaf in (_INLINE, _COMMITTED):
        with pytest.raises(MalformedError, match="version"):
            decode_leaf(bytes([version]) + leaf[1:])


@pytest.mark.parametrize("kind", [2, 3, 255])
def test_bad_kind_rejected(kind: int) -> None:
    bad = _COMMITTED[:9] + bytes([kind]) + _COMMITTED[10:]
    with pytest.raises(MalformedError, match="kind"):
        decode_leaf(bad)


@pytest.mark.parametrize("size", [41, 43, 10, 100])
def test_committed_leaf_must_be_42_bytes(size: int) -> None:
    data = (_COMMITTED + bytes(100))[:size]
    with pytest.raises(MalformedError, match="committed"):
        decode_leaf(data)


def test_max_inline_payload() -> None:
    leaf = inline_leaf(TS, bytes(MAX_INLINE_PAYLOAD))
    assert len(leaf) == MAX_LEAF_SIZE
    assert decode_leaf(leaf).payload == bytes(MAX_INLINE_PAYLOAD)
    with pytest.raises(TooLargeError):
        inline_leaf(TS, bytes(MAX_INLINE_PAYLOAD + 1))
    with pytest.raises(TooLargeError):
        decode_leaf(leaf + b"\x00")


@pytest.mark.parametrize(
    "leaf",
    [
        Leaf(TS, KIND_INLINE),
        Leaf(TS, KIND_INLINE, payload=b"x", commitment=bytes(32)),
        Leaf(TS, KIND_COMMITTED),
        Leaf(TS, KIND_COMMITTED, payload=b"x", commitment=bytes(32)),
        Leaf(TS, KIND_COMMITTED, commitment=bytes(31)),
        Leaf(TS, KIND_COMMITTED, commitment=bytes(33)),
        Leaf(TS, 2, payload=b"x"),
    ],
    ids=[
        "inline-no-payload",
        "inline-with-commitment",
        "committed-no-commitment",
        "committed-with-payload",
        "commitment-31",
        "commitment-33",
        "unknown-kind",
    ],
)
def test_encode_rejects_inconsistent_leaves(leaf: Leaf) -> None:
    with pytest.raises(MalformedError):
        encode_leaf(leaf)


@pytest.mark.parametrize("salt_len", [0, 31, 33])
def test_salt_must_be_32_bytes(salt_len: int) -> None:
    with pytest.raises(MalformedError, match="salt"):
        committed_leaf(TS, PAYLOAD, bytes(salt_len))
    with pytest.raises(MalformedError, match="salt"):
        commitment(bytes(salt_len), PAYLOAD)


# -------------------------------------------------------------------------- verify_payload


def test_verify_inline_payload() -> None:
    verify_payload(_INLINE, PAYLOAD, None)


def test_verify_committed_payload() -> None:
    verify_payload(_COMMITTED, PAYLOAD, SALT)


@pytest.mark.parametrize(
    ("leaf", "payload", "salt", "match"),
    [
        (_INLINE, PAYLOAD + b"!", None, "inline"),
        (_INLINE, PAYLOAD[:-1], None, "inline"),
        (_INLINE, PAYLOAD, SALT, "salt"),
        (_COMMITTED, PAYLOAD + b"!", SALT, "commitment"),
        (_COMMITTED, PAYLOAD, bytes(32), "commitment"),
        (_COMMITTED, PAYLOAD, None, "salt"),
    ],
    ids=[
        "inline-longer",
        "inline-shorter",
        "inline-with-salt",
        "committed-wrong-payload",
        "committed-wrong-salt",
        "committed-no-salt",
    ],
)
def test_verify_payload_failures(
    leaf: bytes, payload: bytes, salt: bytes | None, match: str
) -> None:
    with pytest.raises(VerificationError, match=match):
        verify_payload(leaf, payload, salt)


def test_verify_payload_rejects_malformed_leaf_and_salt() -> None:
    with pytest.raises(MalformedError):
        verify_payload(_COMMITTED[:41], PAYLOAD, SALT)
    with pytest.raises(MalformedError):
        verify_payload(_COMMITTED, PAYLOAD, SALT[:31])


# ----------------------------------------------------------------------------- salts


def test_new_salt() -> None:
    a, b = new_salt(), new_salt()
    assert len(a) == len(b) == SALT_SIZE
    assert a != b


def test_new_salts_unique_and_sized() -> None:
    salts = new_salts(1000)
    assert len(salts) == 1000
    assert all(len(s) == SALT_SIZE for s in salts)
    assert len(set(salts)) == 1000
    assert new_salts(0) == []


def test_new_salts_rejects_negative() -> None:
    with pytest.raises(ValueError):
        new_salts(-1)


# ------------------------------------------------------------------------- properties

_ts = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(ts=_ts, payload=st.binary(max_size=2000))
def test_inline_round_trip(ts: int, payload: bytes) -> None:
    leaf = Leaf(ts, KIND_INLINE, payload=payload)
    data = encode_leaf(leaf)
    assert data == inline_leaf(ts, payload)
    assert decode_leaf(data) == leaf
    verify_payload(data, payload, None)


@given(ts=_ts, payload=st.binary(max_size=2000), salt=st.binary(min_size=32, max_size=32))
def test_committed_round_trip(ts: int, payload: bytes, salt: bytes) -> None:
    data = committed_leaf(ts, payload, salt)
    leaf = decode_leaf(data)
    assert leaf == Leaf(ts, KIND_COMMITTED, commitment=commitment(salt, payload))
    assert encode_leaf(leaf) == data
    verify_payload(data, payload, salt)
