"""Signed notes: Go x/mod sumdb/note vectors, C2SP examples and round-trip properties."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vectors import load_json
from translog.core.note import (
    KEY_TYPE_ED25519,
    MAX_NOTE_SIZE,
    Note,
    NoteSignature,
    decode_base64,
    format_note,
    key_id,
    parse_note,
    validate_key_name,
)
from translog.core.signing import (
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    open_note,
    sign_note,
)
from translog.core.vkey import parse_vkey
from translog.errors import (
    InvalidSignatureError,
    MalformedError,
    TooLargeError,
    TranslogError,
    UnknownKeyError,
)

GO = load_json("golang-mod-sumdb/note_vectors.json")
C2SP = load_json("c2sp/signed_note_examples.json")
PETER = GO["keys"]["PeterNeumann"]
ENOCH = GO["keys"]["EnochRoot"]
TEXT = GO["sign"]["text"]
SIGNED = GO["sign"]["expected_signed_note"]
PETER_LINE = SIGNED[len(TEXT) + 1 :]

ERRORS: dict[str, type[TranslogError]] = {
    "error: malformed note": MalformedError,
    "error: note has no verifiable signatures": UnknownKeyError,
    "error: invalid signature for key PeterNeumann+c74f20a3": InvalidSignatureError,
}


# ------------------------------------------------------------------ Go note_vectors.json


def test_sign_vector_is_byte_exact() -> None:
    signer = NoteSigner.from_skey(GO["sign"]["skey"])
    assert sign_note(TEXT, [signer]) == SIGNED.encode()


def test_skey_derives_the_published_vkey() -> None:
    signer = NoteSigner.from_skey(PETER["skey"])
    assert signer.vkey == PETER["vkey"]
    assert signer.skey == PETER["skey"]
    assert signer.key_id == bytes.fromhex("c74f20a3")


def test_key_id_matches_published_vkeys() -> None:
    for key in (PETER, ENOCH):
        name, hex_id, b64 = key["vkey"].split("+", 2)
        raw = base64.b64decode(b64)
        assert key_id(name, raw[0], raw[1:]).hex() == hex_id


@pytest.mark.parametrize("case", GO["open"], ids=[c["desc"] for c in GO["open"]])
def test_open_vectors(case: dict[str, Any]) -> None:
    verifiers = [parse_vkey(v) for v in case["trusted_vkeys"]]
    if case["expect"] != "ok":
        with pytest.raises(ERRORS[case["expect"]]) as info:
            open_note(case["msg"], verifiers)
        assert type(info.value) is ERRORS[case["expect"]]
        if "invalid signature" in case["expect"]:
            assert str(info.value) == case["expect"].removeprefix("error: ")
        return
    note, verified = open_note(case["msg"], verifiers)
    assert [s.name for s in verified] == case["verified"]
    seen = {(s.name, s.key_id) for s in verified}
    assert [s.name for s in note.signatures if (s.name, s.key_id) not in seen] == case["unverified"]


def test_open_accepts_bytes_and_str_alike() -> None:
    verifiers = [parse_vkey(PETER["vkey"])]
    assert open_note(SIGNED, verifiers) == open_note(SIGNED.encode(), verifiers)


def test_leading_0xff_byte_is_malformed() -> None:
    with pytest.raises(MalformedError, match="utf-8"):
        open_note(b"\xff" + SIGNED.encode(), [parse_vkey(PETER["vkey"])])


@pytest.mark.parametrize("case", GO["invalid_vkeys"], ids=[c["why"] for c in GO["invalid_vkeys"]])
def test_invalid_vkeys_rejected(case: dict[str, str]) -> None:
    with pytest.raises(MalformedError):
        parse_vkey(case["vkey"])


def _mutations(key: str) -> list[str]:
    """Every proper substring and every single-character increment of ``key``."""
    subs = {key[i:j] for i in range(len(key)) for j in range(i, len(key) + 1)} - {key}
    bumps = {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    return sorted(subs | bumps)


@pytest.mark.parametrize("vkey", [PETER["vkey"], ENOCH["vkey"]], ids=["PeterNeumann", "EnochRoot"])
def test_vkey_rule_every_substring_and_increment_rejected(vkey: str) -> None:
    assert parse_vkey(vkey).vkey == vkey
    accepted = []
    for bad in _mutations(vkey):
        for parse in (parse_vkey, CosignatureVerifier.from_vkey):
            try:
                parse(bad)
            except MalformedError:
                continue
            accepted.append(bad)
    assert accepted == []


def test_skey_rule_every_substring_and_increment_rejected() -> None:
    skey = PETER["skey"]
    accepted = []
    for bad in _mutations(skey):
        try:
            NoteSigner.from_skey(bad)
        except TranslogError:
            continue
        accepted.append(bad)
    assert accepted == []


def test_open_rejects_name_with_space_even_with_final_newline() -> None:
    # The Go vector for this case also lacks the final newline, so it fails for that reason.
    msg = TEXT + "\n" + PETER_LINE.replace("PeterNeumann", "Bad Name")
    with pytest.raises(MalformedError):
        parse_note(msg)


# ------------------------------------------------------------------------- C2SP examples


def test_c2sp_verifiable_example_verifies() -> None:
    ex = C2SP["signed_note_example_verifiable"]
    note, verified = open_note(ex["signed_note"], [parse_vkey(ex["vkey"])])
    assert note.text == "This is an example message.\n"
    assert [s.name for s in verified] == ["example.com/foo"]


def test_c2sp_verifiable_example_fails_when_text_changes() -> None:
    ex = C2SP["signed_note_example_verifiable"]
    tampered = ex["signed_note"].replace("example message", "example massage")
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [parse_vkey(ex["vkey"])])


@pytest.mark.parametrize(
    "key",
    ["signed_note_example_format_only", "checkpoint_example_format_only"],
)
def test_c2sp_format_only_examples_parse_and_round_trip(key: str) -> None:
    ex = C2SP[key]
    note = parse_note(ex["signed_note"])
    assert format_note(note) == ex["signed_note"].encode()
    assert len(note.signatures) == 1
    assert ex["signed_note"].startswith(note.text + "\n\u2014 ")


def test_c2sp_poem_splits_at_last_blank_line() -> None:
    ex = C2SP["signed_note_example_format_only"]
    note = parse_note(ex["signed_note"])
    assert note.text == (
        "Ognuno sta solo sul cuor della terra\n"
        "trafitto da un raggio di sole:\n"
        "\n"
        "ed è subito sera.\n"
    )
    assert note.signatures[0].name == ex["key_name"]
    assert len(note.signatures[0].signature) == 64


# --------------------------------------------------------------------- parser strictness


def _sig(name: str = "k", sig: bytes = b"s" * 64) -> NoteSignature:
    return NoteSignature(name, b"\x00\x01\x02\x03", sig)


@pytest.mark.parametrize("count", [1, 16, 100])
def test_up_to_100_signatures_parse(count: int) -> None:
    lines = "".join(_sig(f"k{i}").line for i in range(count))
    assert len(parse_note("t\n\n" + lines).signatures) == count


def test_101_distinct_signatures_rejected() -> None:
    lines = "".join(_sig(f"k{i}").line for i in range(101))
    with pytest.raises(MalformedError, match="101"):
        parse_note("t\n\n" + lines)


def test_note_over_one_mib_rejected() -> None:
    text = "a" * (MAX_NOTE_SIZE - 10) + "\n"
    with pytest.raises(TooLargeError):
        parse_note(text + "\n" + _sig().line)


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param("t\n\n\u2014 k AAAAAA==\n", id="decoded-4-bytes"),
        pytest.param("t\n\n\u2014 k AAAAAAB=\n", id="non-canonical-base64"),
        pytest.param("t\n\n\u2014 k AAAAAAA\n", id="missing-padding"),
        pytest.param("t\n\n\u2014 k AAAAAAA==\n", id="extra-padding"),
        pytest.param("t\n\n\u2014 k-AAAAAAA=\n", id="no-space"),
        pytest.param("t\n\n\u2014 k \n", id="empty-base64"),
        pytest.param("t\n\n\u2014  AAAAAAA=\n", id="empty-name"),
        pytest.param("t\n\n\u2014 a+b AAAAAAA=\n", id="plus-in-name"),
        pytest.param("t\n\n\u2014 a\u00a0b AAAAAAA=\n", id="nbsp-in-name"),
        pytest.param("t\n\n\u2014 a\u3000b AAAAAAA=\n", id="ideographic-space-in-name"),
        pytest.param("t\n\n- k AAAAAAA=\n", id="hyphen-not-em-dash"),
        pytest.param("t\n\n\u2014k AAAAAAA=\n", id="no-space-after-dash"),
        pytest.param("t\r\n\n\u2014 k AAAAAAA=\n", id="carriage-return"),
        pytest.param("t\t\n\n\u2014 k AAAAAAA=\n", id="tab"),
        pytest.param("t\n\n\u2014 k AAAAAAA=\n\n", id="trailing-blank-line"),
        pytest.param("t\n\n\u2014 k AAAAAAA=\n\u2014 k AAAAAAA=", id="last-line-unterminated"),
    ],
)
def test_parser_strictness(msg: str) -> None:
    with pytest.raises(MalformedError):
        parse_note(msg)


def test_shortest_signature_parses() -> None:
    note = parse_note("t\n\n\u2014 k AAAAAAA=\n")
    assert note.signatures[0].key_id == bytes(4)
    assert note.signatures[0].signature == b"\x00"


def test_text_may_contain_blank_lines_and_signature_like_lines() -> None:
    text = "a\n\n\u2014 k AAAAAAA=\n\n"
    note = Note(text, (_sig(),))
    assert parse_note(format_note(note)) == note


@pytest.mark.parametrize(
    "name", ["", "a b", "a+b", "a\tb", "a\u2028b", "a\u00a0b", "a\x85b", "a\x01b"]
)
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(MalformedError):
        validate_key_name(name)


@pytest.mark.parametrize("name", ["a", "example.com/log", "go.sum-db", "ünïcödé", "a\u200bb"])
def test_valid_key_names(name: str) -> None:
    validate_key_name(name)


def test_format_note_rejects_unparseable_notes() -> None:
    for note in (Note("no newline", (_sig(),)), Note("t\n", ()), Note("\x00\n", (_sig(),))):
        with pytest.raises(MalformedError):
            format_note(note)


def test_decode_base64_never_echoes_input() -> None:
    secret = "SECRETSECRET!"
    with pytest.raises(MalformedError) as info:
        decode_base64(secret)
    assert secret not in str(info.value)


# ----------------------------------------------------------------------- open semantics


def test_same_name_other_key_id_is_ignored() -> None:
    other = NoteSigner.generate("PeterNeumann")
    msg = sign_note(TEXT, [other]) + PETER_LINE.encode()
    note, verified = open_note(msg, [parse_vkey(PETER["vkey"])])
    assert [s.key_id.hex() for s in verified] == ["c74f20a3"]
    assert len(note.signatures) == 2


def test_same_key_id_other_name_is_ignored() -> None:
    forged = PETER_LINE.replace("PeterNeumann", "PeterNeumann2")
    with pytest.raises(UnknownKeyError):
        open_note(TEXT + "\n" + forged, [parse_vkey(PETER["vkey"])])


def test_repeated_signature_is_reported_once() -> None:
    note, verified = open_note(SIGNED + PETER_LINE, [parse_vkey(PETER["vkey"])])
    assert len(note.signatures) == 2
    assert [s.name for s in verified] == ["PeterNeumann"]


def test_bad_second_signature_by_known_key_rejects_note() -> None:
    # Go skips a second signature by the same key; we check every known signature.
    raw = base64.b64decode(PETER_LINE.split(" ")[2])
    bad = NoteSignature("PeterNeumann", raw[:4], bytes(64))
    with pytest.raises(InvalidSignatureError):
        open_note(SIGNED + bad.line, [parse_vkey(PETER["vkey"])])


def test_ed25519_verifier_rejects_wrong_length_signature() -> None:
    raw = base64.b64decode(PETER_LINE.split(" ")[2])
    short = NoteSignature("PeterNeumann", raw[:4], raw[4:-1])
    with pytest.raises(InvalidSignatureError):
        open_note(TEXT + "\n" + short.line, [parse_vkey(PETER["vkey"])])


def test_signature_line_format() -> None:
    sig = parse_note(SIGNED).signatures[0]
    assert sig.line == PETER_LINE
    assert sig.key_id_hex == "c74f20a3"
    assert len(sig.signature) == 64


# ------------------------------------------------------------------------- properties

_TEXT_CHARS = st.characters(blacklist_categories=("Cs", "Cc")) | st.just("\n")
_NAME_CHARS = st.characters(
    blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="+"
)
_texts = st.text(_TEXT_CHARS, max_size=200).map(lambda t: t + "\n")
_names = st.text(_NAME_CHARS, min_size=1, max_size=30)
_signatures = st.builds(
    NoteSignature, _names, st.binary(min_size=4, max_size=4), st.binary(min_size=1, max_size=80)
)


@given(text=_texts, sigs=st.lists(_signatures, min_size=1, max_size=20))
def test_parse_format_round_trip(text: str, sigs: list[NoteSignature]) -> None:
    note = Note(text, tuple(sigs))
    assert parse_note(format_note(note)) == note


_SIGNER = NoteSigner.generate("prop.example/key")
_VERIFIER: NoteVerifier = parse_vkey(_SIGNER.vkey)


@given(text=_texts)
def test_sign_open_round_trip(text: str) -> None:
    note, verified = open_note(sign_note(text, [_SIGNER]), [_VERIFIER])
    assert note.text == text
    assert verified[0].key_id == _SIGNER.key_id
    assert _VERIFIER.key_type == KEY_TYPE_ED25519
