"""Signers, verifier keys, RFC 6962 tree heads and private key files."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.vectors import load_json
from translog.core.checkpoint import Checkpoint, format_checkpoint, open_checkpoint, sign_checkpoint
from translog.core.ct import (
    RFC6962Verifier,
    TreeHeadSigner,
    parse_tree_head_signature,
    tree_head_input,
    verify_tree_head,
)
from translog.core.note import KEY_TYPE_RFC6962, NoteSignature, key_id
from translog.core.signing import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign_note,
)
from translog.core.vkey import parse_vkey
from translog.errors import (
    ConfigError,
    InvalidSignatureError,
    MalformedError,
    UnknownKeyError,
)
from translog.keyfile import read_private_file, write_private_file

STH = load_json("golang-mod-sumdb/argon2020/sth.json")
FORMATS = load_json("transparency-dev-formats/vectors.json")
ROOT = bytes([0xAA]) * 32
SIGNER = TreeHeadSigner.generate()


# ------------------------------------------------------------------- RFC 6962 tree heads


def test_tree_head_input_layout() -> None:
    expected = bytes.fromhex(
        "00"  # version v1
        "01"  # signature_type tree_hash
        "0000000000000001"  # timestamp
        "0000000000000002" + "aa" * 32  # tree_size  # sha256_root_hash
    )
    assert tree_head_input(1, 2, ROOT) == expected


@pytest.mark.parametrize(
    ("ts", "size", "root"),
    [(-1, 0, ROOT), (1 << 64, 0, ROOT), (0, -1, ROOT), (0, 1 << 64, ROOT), (0, 0, ROOT[:31])],
    ids=["ts-negative", "ts-2^64", "size-negative", "size-2^64", "root-31"],
)
def test_tree_head_input_rejects_out_of_range(ts: int, size: int, root: bytes) -> None:
    with pytest.raises(MalformedError):
        tree_head_input(ts, size, root)


def test_sign_verify_round_trip_with_der_and_pem() -> None:
    sig = SIGNER.sign_tree_head(1_700_000_000_123, 42, ROOT)
    verify_tree_head(SIGNER.public_der(), sig, 1_700_000_000_123, 42, ROOT)
    verify_tree_head(SIGNER.public_pem(), sig, 1_700_000_000_123, 42, ROOT)


def test_tls_encoding_header() -> None:
    sig = SIGNER.sign_tree_head(1, 2, ROOT)
    assert sig[0] == 4  # hash sha256
    assert sig[1] == 3  # signature ecdsa
    assert int.from_bytes(sig[2:4], "big") == len(sig) - 4
    assert sig[4] == 0x30  # DER SEQUENCE
    assert parse_tree_head_signature(sig) == sig[4:]
    decode_dss_signature(sig[4:])


@pytest.mark.parametrize(
    ("ts", "size", "root"),
    [(2, 2, ROOT), (1, 3, ROOT), (1, 2, bytes([0xAB]) + ROOT[1:])],
    ids=["timestamp", "size", "root"],
)
def test_tampered_tree_head_fails(ts: int, size: int, root: bytes) -> None:
    sig = SIGNER.sign_tree_head(1, 2, ROOT)
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(SIGNER.public_der(), sig, ts, size, root)


def test_tampered_signature_fails() -> None:
    sig = bytearray(SIGNER.sign_tree_head(1, 2, ROOT))
    sig[-1] ^= 0x01  # last byte of s: still valid DER
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(SIGNER.public_der(), bytes(sig), 1, 2, ROOT)


def test_other_key_fails() -> None:
    sig = SIGNER.sign_tree_head(1, 2, ROOT)
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(TreeHeadSigner.generate().public_der(), sig, 1, 2, ROOT)


def _bad_structs() -> list[tuple[str, bytes]]:
    sig = SIGNER.sign_tree_head(1, 2, ROOT)
    der = sig[4:]
    n = len(der)
    cases = [(f"truncated-{i}", sig[:i]) for i in range(len(sig))]
    cases += [
        ("trailing-byte", sig + b"\x00"),
        ("hash-sha1", b"\x02" + sig[1:]),
        ("hash-sha384", b"\x05" + sig[1:]),
        ("sig-rsa", sig[:1] + b"\x01" + sig[2:]),
        ("sig-anonymous", sig[:1] + b"\x00" + sig[2:]),
        ("length-plus-one", sig[:2] + (n + 1).to_bytes(2, "big") + der),
        ("length-minus-one", sig[:2] + (n - 1).to_bytes(2, "big") + der),
        ("not-der", sig[:2] + (4).to_bytes(2, "big") + b"\x01\x02\x03\x04"),
        ("der-long-form-length", sig[:2] + (n + 1).to_bytes(2, "big") + b"\x30\x81" + der[1:]),
    ]
    return cases


_BAD = _bad_structs()


@pytest.mark.parametrize("bad", [b for _, b in _BAD], ids=[i for i, _ in _BAD])
def test_bad_tls_structs_rejected(bad: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_tree_head_signature(bad)
    with pytest.raises(MalformedError):
        verify_tree_head(SIGNER.public_der(), bad, 1, 2, ROOT)


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        b"not a key",
        b"",
    ],
    ids=["p384", "ed25519", "garbage", "empty"],
)
def test_verify_rejects_non_p256_keys(key: bytes) -> None:
    with pytest.raises(MalformedError):
        verify_tree_head(key, SIGNER.sign_tree_head(1, 2, ROOT), 1, 2, ROOT)


def test_argon2020_sth_signature_parses() -> None:
    sig = base64.b64decode(STH["tree_head_signature"])
    assert sig[:2] == b"\x04\x03"
    der = parse_tree_head_signature(sig)
    assert len(der) == int.from_bytes(sig[2:4], "big") == len(sig) - 4
    r, s = decode_dss_signature(der)
    assert 0 < r < 1 << 256 and 0 < s < 1 << 256
    # The log's key is not in the vectors, so a random key must reject it.
    with pytest.raises(InvalidSignatureError):
        verify_tree_head(
            SIGNER.public_der(),
            sig,
            STH["timestamp"],
            STH["tree_size"],
            base64.b64decode(STH["sha256_root_hash"]),
        )


def test_tree_head_signer_pem_round_trip() -> None:
    again = TreeHeadSigner.from_pem(SIGNER.private_pem())
    assert again.public_der() == SIGNER.public_der()
    assert SIGNER.private_pem().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert SIGNER.log_id == hashlib.sha256(SIGNER.public_der()).digest()
    sig = again.sign_tree_head(5, 6, ROOT)
    verify_tree_head(SIGNER.public_pem(), sig, 5, 6, ROOT)


@pytest.mark.parametrize(
    "pem",
    [
        b"garbage",
        ec.generate_private_key(ec.SECP384R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        ),
    ],
    ids=["garbage", "p384", "ed25519", "encrypted"],
)
def test_tree_head_signer_rejects_bad_pem(pem: bytes) -> None:
    with pytest.raises(ConfigError):
        TreeHeadSigner.from_pem(pem)


# ------------------------------------------------------ RFC 6962 note signatures (0x05)

ORIGIN = "ct.example/log"
CP = Checkpoint(ORIGIN, 10, ROOT)


def _rfc6962_note(cp: Checkpoint = CP, ts: int = 1_700_000_000_000) -> bytes:
    text = format_checkpoint(cp)
    sig = SIGNER.note_signature(cp.origin, ts, cp.size, cp.root_hash)
    return (text + "\n" + sig.line).encode()


def test_rfc6962_note_signature_verifies() -> None:
    verifier = parse_vkey(SIGNER.verifier(ORIGIN).vkey)
    assert isinstance(verifier, RFC6962Verifier)
    assert verifier.key_type == KEY_TYPE_RFC6962
    assert verifier.key_id == key_id(ORIGIN, KEY_TYPE_RFC6962, SIGNER.log_id)
    cp, _, sigs = open_checkpoint(_rfc6962_note(), verifier)
    assert cp == CP
    assert int.from_bytes(sigs[0].signature[:8], "big") == 1_700_000_000_000


def test_rfc6962_note_signature_with_other_timestamp_fails() -> None:
    sig = SIGNER.note_signature(ORIGIN, 1_700_000_000_000, CP.size, CP.root_hash)
    bumped = (1_700_000_000_001).to_bytes(8, "big") + sig.signature[8:]
    bad = format_checkpoint(CP) + "\n" + NoteSignature(ORIGIN, sig.key_id, bumped).line
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(bad, SIGNER.verifier(ORIGIN))


def test_rfc6962_signature_refuses_extension_lines() -> None:
    cp = Checkpoint(ORIGIN, 10, ROOT, ("ext",))
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(_rfc6962_note(cp), SIGNER.verifier(ORIGIN))


def test_rfc6962_signature_requires_origin_equal_to_key_name() -> None:
    # A signature line named other.example/log over a checkpoint whose origin is ORIGIN.
    sig = SIGNER.note_signature("other.example/log", 1, CP.size, CP.root_hash)
    mismatched = format_checkpoint(CP) + "\n" + sig.line
    with pytest.raises(InvalidSignatureError):
        open_note(mismatched, [SIGNER.verifier("other.example/log")])


# ------------------------------------------------------------------ Ed25519 note keys


def test_generated_signer_round_trip() -> None:
    signer = NoteSigner.generate("example.com/log")
    verifier = parse_vkey(signer.vkey)
    assert type(verifier) is NoteVerifier
    assert verifier.key_id == signer.key_id
    note, _ = open_note(sign_note("hello\n", [signer]), [verifier])
    assert note.text == "hello\n"
    assert NoteSigner.from_skey(signer.skey).vkey == signer.vkey


def test_skey_with_trailing_newline_is_accepted() -> None:
    signer = NoteSigner.generate("example.com/log")
    assert NoteSigner.from_skey(signer.skey + "\n").vkey == signer.vkey


def test_skey_with_wrong_key_id_rejected_without_leaking() -> None:
    signer = NoteSigner.generate("example.com/log")
    parts = signer.skey.split("+")
    parts[3] = "00000000"
    with pytest.raises(ConfigError) as info:
        NoteSigner.from_skey("+".join(parts))
    assert parts[4] not in str(info.value)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: [*p[:4], p[4][:-4]],
        lambda p: [*p[:4], p[4] + "!"],
        lambda p: ["PRIVATE", "KEY", p[2], p[3], base64.b64encode(b"\x02" + bytes(32)).decode()],
        lambda p: p[:3],
        lambda p: ["PRIVATE", "KEYS", *p[2:]],
        lambda p: [p[0], p[1], p[2], p[3].upper(), p[4]],
    ],
    ids=["short-seed", "bad-base64", "unknown-type", "missing-parts", "bad-prefix", "upper-hex"],
)
def test_bad_skeys_rejected_without_leaking(mutate: object) -> None:
    signer = NoteSigner.generate("example.com/log")
    while signer.key_id.hex().isdigit():  # "upper-hex" needs a letter in the key ID
        signer = NoteSigner.generate("example.com/log")
    parts = signer.skey.split("+", 4)
    bad = "+".join(mutate(parts))  # type: ignore[operator]
    with pytest.raises(ConfigError) as info:
        NoteSigner.from_skey(bad)
    assert parts[4] not in str(info.value)
    assert parts[4][:-4] not in str(info.value)


def test_upper_case_vkey_id_rejected() -> None:
    vkey = FORMATS["test_keys"][0]["vkey"]
    name, hex_id, b64 = vkey.split("+", 2)
    with pytest.raises(MalformedError):
        parse_vkey(f"{name}+{hex_id.upper()}+{b64}")


def test_unknown_vkey_type_with_matching_id_rejected() -> None:
    material = b"\x02" + bytes(32)
    vkey = f"k+{key_id('k', 2, bytes(32)).hex()}+{base64.b64encode(material).decode()}"
    with pytest.raises(MalformedError, match="unknown key type 0x02"):
        parse_vkey(vkey)


def test_parse_vkey_dispatches_on_type() -> None:
    cosigner = CosignatureSigner.generate("w.example/w")
    assert isinstance(parse_vkey(cosigner.vkey), CosignatureVerifier)
    assert parse_vkey(cosigner.vkey).key_id == cosigner.key_id
    assert parse_vkey(SIGNER.verifier("x").vkey).key_type == KEY_TYPE_RFC6962


def test_verify_refuses_signature_by_other_key() -> None:
    signer = NoteSigner.generate("a")
    sig = signer.sign("t\n")
    with pytest.raises(UnknownKeyError):
        parse_vkey(NoteSigner.generate("a").vkey).verify("t\n", sig)


def test_ambiguous_verifiers_rejected() -> None:
    a = parse_vkey(FORMATS["test_keys"][0]["vkey"])
    twin = NoteVerifier(a.name, bytes(32))
    object.__setattr__(twin, "_key_id", a.key_id)  # force a key ID collision
    signed = sign_checkpoint(Checkpoint("Log", 1, ROOT), NoteSigner.generate("Log"))
    with pytest.raises(ConfigError, match="share name and id"):
        open_note(signed, [a, twin])


def test_sign_note_needs_signers_and_valid_text() -> None:
    signer = NoteSigner.generate("a")
    with pytest.raises(MalformedError):
        sign_note("t\n", [])
    with pytest.raises(MalformedError):
        sign_note("no newline", [signer])
    with pytest.raises(MalformedError):
        signer.sign("bell\x07\n")


# ----------------------------------------------------------------- secrets stay secret


def _secret_strings(skey: str) -> list[str]:
    b64 = skey.split("+", 4)[4]
    seed = base64.b64decode(b64)[1:]
    return [skey, b64, seed.hex(), base64.b64encode(seed).decode(), repr(seed)]


@pytest.mark.parametrize("cls", [NoteSigner, CosignatureSigner])
def test_signer_repr_hides_secrets(cls: type[NoteSigner] | type[CosignatureSigner]) -> None:
    signer = cls.generate("example.com/k")
    shown = repr(signer) + str(signer) + f"{signer}" + f"{signer!r}"
    assert "example.com/k" in shown
    for secret in _secret_strings(signer.skey):
        assert secret not in shown
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_tree_head_signer_repr_hides_secrets() -> None:
    pem = SIGNER.private_pem().decode()
    body = "".join(pem.splitlines()[1:-1])
    shown = repr(SIGNER) + str(SIGNER)
    assert body[:40] not in shown
    assert SIGNER.log_id.hex() in shown
    with pytest.raises(TypeError):
        pickle.dumps(SIGNER)


# ------------------------------------------------------------------------- key files


def test_write_private_file_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    old = os.umask(0)
    try:
        write_private_file(path, b"secret")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private_file(path) == b"secret"


def test_write_private_file_refuses_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    write_private_file(path, b"first")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_private_file(path, b"second")
    assert read_private_file(path) == b"first"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_read_private_file_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "log.key"
    write_private_file(path, b"secret")
    path.chmod(mode)
    with pytest.raises(ConfigError) as info:
        read_private_file(path)
    message = str(info.value)
    assert f"(mode {mode:04o})" in message
    assert f"run chmod 600 {path}" in message
    assert "secret" not in message


def test_read_private_file_message_matches_spec(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    write_private_file(path, b"k")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        read_private_file(path)
    assert str(info.value) == (
        f"private key {path} is readable by group or others (mode 0644); run chmod 600 {path}"
    )


def test_read_private_file_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_private_file(tmp_path / "nope.key")


def test_read_private_file_refuses_directory(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_private_file(d)


def test_write_private_file_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot create"):
        write_private_file(tmp_path / "missing" / "log.key", b"k")


def test_keys_survive_a_file_round_trip(tmp_path: Path) -> None:
    signer = NoteSigner.generate("example.com/log")
    write_private_file(tmp_path / "note.key", signer.skey.encode())
    write_private_file(tmp_path / "ct.key", SIGNER.private_pem())
    again = NoteSigner.from_skey(read_private_file(tmp_path / "note.key").decode())
    assert again.vkey == signer.vkey
    ct = TreeHeadSigner.from_pem(read_private_file(tmp_path / "ct.key"))
    assert ct.public_der() == SIGNER.public_der()
