"""Checkpoints and cosignatures: derived, transparency-dev/formats, Go and C2SP vectors."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.vectors import load_json
from translog.core.checkpoint import (
    Checkpoint,
    format_checkpoint,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from translog.core.note import (
    KEY_TYPE_COSIGNATURE,
    NoteSignature,
    decode_base64,
    key_id,
    parse_note,
)
from translog.core.signing import (
    CosignatureSigner,
    CosignatureVerifier,
    NoteSigner,
    NoteVerifier,
    cosignature_message,
    open_note,
    parse_cosignature_timestamp,
    sign_note,
)
from translog.core.vkey import parse_vkey
from translog.errors import (
    InvalidSignatureError,
    MalformedError,
    TranslogError,
    UnknownKeyError,
    VerificationError,
)

DERIVED = load_json("derived/reference_checkpoints.json")
FORMATS = load_json("transparency-dev-formats/vectors.json")
GO = load_json("golang-mod-sumdb/note_vectors.json")
C2SP = load_json("c2sp/signed_note_examples.json")

SUM = FORMATS["real_checkpoint_sum_golang_org"]
SUM_VKEY, SUM_ORIGIN = SUM["vkey"], SUM["origin"]
WITNESSES = FORMATS["witness_cosignatures_over_sum_golang_org_checkpoint"]
COSIG = FORMATS["cosignature_v1"]
POLICY = FORMATS["checkpoint_parse_policy_cases"]
TEST_KEYS = {k["name"]: k for k in FORMATS["test_keys"]}
ROOT = bytes(range(32))


# ------------------------------------------------------------------ derived checkpoints

_REF = DERIVED["checkpoints"]
_REF_IDS = [f"size{c['tree_size']}" for c in _REF]


@pytest.mark.parametrize("case", _REF, ids=_REF_IDS)
def test_reference_checkpoint_signs_byte_exact(case: dict[str, Any]) -> None:
    cp = Checkpoint(DERIVED["origin"], case["tree_size"], bytes.fromhex(case["root_hex"]))
    assert format_checkpoint(cp) == case["body"]
    signer = NoteSigner.from_skey(DERIVED["skey"])
    assert sign_checkpoint(cp, signer) == case["signed_note"].encode()


@pytest.mark.parametrize("case", _REF, ids=_REF_IDS)
def test_reference_checkpoint_opens(case: dict[str, Any]) -> None:
    cp, note, sigs = open_checkpoint(case["signed_note"], parse_vkey(DERIVED["vkey"]))
    assert (cp.origin, cp.size, cp.root_hash.hex()) == ("Log", case["tree_size"], case["root_hex"])
    assert note.text == case["body"]
    assert [s.name for s in sigs] == ["Log"]


@pytest.mark.parametrize("case", _REF, ids=_REF_IDS)
def test_reference_checkpoint_round_trips(case: dict[str, Any]) -> None:
    assert format_checkpoint(parse_checkpoint(case["body"])) == case["body"]


def test_reference_checkpoint_rejected_by_other_log_key() -> None:
    other = NoteSigner.generate("Log")
    with pytest.raises(UnknownKeyError, match="no signature by log key Log"):
        open_checkpoint(_REF[3]["signed_note"], parse_vkey(other.vkey))


def test_reference_checkpoint_with_tampered_size_fails() -> None:
    tampered = _REF[3]["signed_note"].replace("Log\n3\n", "Log\n4\n")
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(tampered, parse_vkey(DERIVED["vkey"]))


# ------------------------------------------------------- transparency-dev/formats policy


def _policy_note(case: dict[str, Any]) -> str:
    body: str = case.get("body_override", POLICY["body"])
    if not case["signers"]:
        return body + "\n"  # what Go's note.Sign writes with no signers: no signature lines
    signers = [NoteSigner.from_skey(TEST_KEYS[n]["skey"]) for n in case["signers"]]
    return sign_note(body, signers).decode()


_POLICY_ERRORS: dict[str, type[TranslogError]] = {
    "no sigs": MalformedError,
    "bad body good sigs": MalformedError,
    "just known (no log signature)": UnknownKeyError,
    "all sigs but wrong origin": VerificationError,
}


@pytest.mark.parametrize("case", POLICY["cases"], ids=[c["desc"] for c in POLICY["cases"]])
def test_checkpoint_policy_cases(case: dict[str, Any]) -> None:
    msg = _policy_note(case)
    log = parse_vkey(TEST_KEYS["Log"]["vkey"])
    others = [parse_vkey(TEST_KEYS[n]["vkey"]) for n in ("Known", "KnownAgain")]
    if case["wantErr"]:
        with pytest.raises(TranslogError) as info:
            open_checkpoint(msg, log, origin=case["origin"], others=others, strict_root=False)
        assert type(info.value) is _POLICY_ERRORS[case["desc"]]
    else:
        cp, _, sigs = open_checkpoint(
            msg, log, origin=case["origin"], others=others, strict_root=False
        )
        assert len(sigs) == case["wantSigs"]
        assert sigs[0].name == "Log"
        assert (cp.origin, cp.size, cp.root_hash) == ("TestParseCheckpoint", 42, b"abcdef")


@pytest.mark.parametrize(
    "case",
    [c for c in POLICY["cases"] if c["signers"]],
    ids=[c["desc"] for c in POLICY["cases"] if c["signers"]],
)
def test_checkpoint_policy_signature_counts(case: dict[str, Any]) -> None:
    verifiers = [parse_vkey(TEST_KEYS[n]["vkey"]) for n in ("Log", "Known", "KnownAgain")]
    _, verified = open_note(_policy_note(case), verifiers)
    assert len(verified) == case["wantSigs"]


def test_policy_body_is_rejected_with_strict_root() -> None:
    with pytest.raises(MalformedError, match="6 bytes"):
        parse_checkpoint(POLICY["body"])


# ---------------------------------------------------------------------- sum.golang.org


def test_sum_golang_org_checkpoint_verifies() -> None:
    cp, _, sigs = open_checkpoint(SUM["signed_note"], parse_vkey(SUM_VKEY), origin=SUM_ORIGIN)
    assert cp == Checkpoint(SUM["origin"], SUM["tree_size"], base64.b64decode(SUM["root_base64"]))
    assert [s.name for s in sigs] == ["sum.golang.org"]


@pytest.mark.parametrize(
    "origin",
    [None, "", "sum.golang.org", "go.sum database tree ", "Go.sum database tree", "go.sum"],
    ids=["default-key-name", "empty", "key-name", "trailing-space", "case", "prefix"],
)
def test_sum_golang_org_checkpoint_fails_for_other_origins(origin: str | None) -> None:
    with pytest.raises(VerificationError) as info:
        open_checkpoint(SUM["signed_note"], parse_vkey(SUM["vkey"]), origin=origin)
    assert type(info.value) is VerificationError
    assert "origin" in str(info.value)


def _with_lines(lines: list[str]) -> str:
    note: str = SUM["signed_note"]
    return note + "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("index", range(3), ids=["monkeys", "bananas", "witness"])
def test_witness_signature_lines_verify(index: int) -> None:
    vkey, line = WITNESSES["vkeys"][index], WITNESSES["lines"][index]
    _, _, sigs = open_checkpoint(
        _with_lines([line]),
        parse_vkey(SUM["vkey"]),
        origin=SUM["origin"],
        others=[parse_vkey(vkey)],
    )
    assert [s.name for s in sigs] == ["sum.golang.org", vkey.split("+")[0]]


def test_all_witness_lines_verify_and_unknown_lines_are_ignored() -> None:
    msg = _with_lines(WITNESSES["lines"] + WITNESSES["unknown_key_lines"])
    others = [parse_vkey(v) for v in WITNESSES["vkeys"]]
    _, note, sigs = open_checkpoint(msg, parse_vkey(SUM_VKEY), origin=SUM_ORIGIN, others=others)
    assert [s.name for s in sigs] == ["sum.golang.org", "monkeys", "bananas", "witness"]
    assert len(note.signatures) == 6


def test_log_signature_is_listed_first_even_when_not_first_in_note() -> None:
    note = parse_note(_with_lines(WITNESSES["lines"][:1]))
    log_sig, witness_sig = note.signatures
    reordered = note.text + "\n" + witness_sig.line + log_sig.line
    others = [parse_vkey(WITNESSES["vkeys"][0])]
    _, _, sigs = open_checkpoint(reordered, parse_vkey(SUM_VKEY), origin=SUM_ORIGIN, others=others)
    assert [s.name for s in sigs] == ["sum.golang.org", "monkeys"]


def test_tampered_witness_line_fails_when_its_key_is_known() -> None:
    line = WITNESSES["lines"][0]
    sig = parse_note(_with_lines([line])).signatures[1]
    bad = NoteSignature(sig.name, sig.key_id, bytes([sig.signature[0] ^ 1]) + sig.signature[1:])
    msg = SUM["signed_note"] + bad.line
    with pytest.raises(InvalidSignatureError, match="monkeys"):
        open_checkpoint(
            msg,
            parse_vkey(SUM["vkey"]),
            origin=SUM["origin"],
            others=[parse_vkey(WITNESSES["vkeys"][0])],
        )
    # ...and is ignored when it is not.
    open_checkpoint(msg, parse_vkey(SUM_VKEY), origin=SUM_ORIGIN)


def test_only_witness_signature_is_not_enough() -> None:
    note = parse_note(_with_lines(WITNESSES["lines"][:1]))
    msg = note.text + "\n" + note.signatures[1].line
    with pytest.raises(UnknownKeyError):
        open_checkpoint(
            msg,
            parse_vkey(SUM["vkey"]),
            origin=SUM["origin"],
            others=[parse_vkey(WITNESSES["vkeys"][0])],
        )


# --------------------------------------------------------------------- Go tree note


def test_go_tree_note_parses() -> None:
    tree = GO["tree_note"]
    cp = parse_checkpoint(tree["text"], origin="go.sum database tree")
    assert cp.size == tree["tree_size"]
    assert cp.root_hash == hashlib.sha256(b"\x00hello world").digest()
    assert format_checkpoint(cp) == tree["text"]


@pytest.mark.parametrize(
    "text", GO["tree_note"]["invalid_texts"], ids=["wrong-origin", "hex-size", "long-root"]
)
def test_go_tree_note_invalid_texts(text: str) -> None:
    with pytest.raises((MalformedError, VerificationError)) as info:
        parse_checkpoint(text, origin="go.sum database tree")
    wrong_origin = not text.startswith("go.sum database tree\n")
    assert isinstance(info.value, MalformedError) is not wrong_origin


# ----------------------------------------------------------------------- C2SP examples


def test_c2sp_checkpoint_example_parses() -> None:
    ex = C2SP["checkpoint_example_format_only"]
    cp = parse_checkpoint(parse_note(ex["signed_note"]).text)
    assert cp == Checkpoint(ex["origin"], ex["tree_size"], base64.b64decode(ex["root_base64"]))


def test_c2sp_cosigned_example_timestamp_and_message() -> None:
    ex = C2SP["cosigned_checkpoint_example_format_only"]
    note = parse_note(ex["signed_note"])
    assert parse_checkpoint(note.text).size == 20852163
    (cosig,) = [s for s in note.signatures if s.name == ex["cosignature_key_name"]]
    assert 4 + len(cosig.signature) == 76
    timestamp = parse_cosignature_timestamp(cosig.signature)
    assert timestamp == 1679315147
    expected = ex["cosignature_signed_message_for_timestamp_1679315147"].encode()
    assert cosignature_message(note.text, timestamp) == expected


# ------------------------------------------------------------------ cosignature/v1 cases


_TS_CASES = COSIG["timestamp_parse_cases"]


@pytest.mark.parametrize("case", _TS_CASES, ids=[c["desc"][:40] for c in _TS_CASES])
def test_cosignature_timestamp_parse_cases(case: dict[str, Any]) -> None:
    def parse() -> int:
        raw = decode_base64(case["sig_base64"])
        return parse_cosignature_timestamp(raw[4:])

    if case.get("wantErr"):
        with pytest.raises(MalformedError):
            parse()
    else:
        assert parse() == case["wantTimestamp"]


_VKEY_CASES = COSIG["vkey_cases"]


@pytest.mark.parametrize("case", _VKEY_CASES, ids=[c["vkey"][:24] for c in _VKEY_CASES])
def test_cosignature_vkey_cases(case: dict[str, Any]) -> None:
    if not case["valid"]:
        with pytest.raises(MalformedError):
            CosignatureVerifier.from_vkey(case["vkey"])
        return
    verifier = CosignatureVerifier.from_vkey(case["vkey"])
    name, _, b64 = case["vkey"].split("+", 2)
    public = base64.b64decode(b64)[1:]
    assert verifier.key_type == KEY_TYPE_COSIGNATURE
    assert verifier.key_id == key_id(name, KEY_TYPE_COSIGNATURE, public)
    assert verifier.vkey.split("+", 2)[2] == base64.b64encode(b"\x04" + public).decode()


def test_native_cosignature_vkey_parses_to_cosignature_verifier() -> None:
    native = next(c["vkey"] for c in _VKEY_CASES if c["valid"] and "0x04" in c["note"])
    verifier = parse_vkey(native)
    assert isinstance(verifier, CosignatureVerifier)
    assert verifier.vkey == native


# ------------------------------------------------------------------- our own cosigning

_LOG = NoteSigner.generate("example.com/log")
_WITNESS = CosignatureSigner.generate("witness.example/w1")
_CP = Checkpoint("example.com/log", 1234, ROOT)
_TS = 1_700_000_000


def _cosigned(cp: Checkpoint = _CP, ts: int = _TS) -> bytes:
    signed = sign_checkpoint(cp, _LOG)
    return signed + _WITNESS.cosign(format_checkpoint(cp), ts).line.encode()


def test_cosign_then_verify() -> None:
    witness = CosignatureVerifier.from_vkey(_WITNESS.vkey)
    cp, _, sigs = open_checkpoint(_cosigned(), parse_vkey(_LOG.vkey), others=[witness])
    assert cp == _CP
    assert [s.name for s in sigs] == ["example.com/log", "witness.example/w1"]
    assert witness.timestamp(sigs[1]) == _TS
    assert len(sigs[1].signature) == 72


def test_cosignature_over_other_text_fails() -> None:
    other = Checkpoint("example.com/log", 1235, ROOT)
    forged = (
        sign_checkpoint(other, _LOG) + _WITNESS.cosign(format_checkpoint(_CP), _TS).line.encode()
    )
    witness = CosignatureVerifier.from_vkey(_WITNESS.vkey)
    with pytest.raises(InvalidSignatureError, match=r"witness\.example/w1"):
        open_checkpoint(forged, parse_vkey(_LOG.vkey), others=[witness])


def test_cosignature_with_changed_timestamp_fails() -> None:
    sig = _WITNESS.cosign(format_checkpoint(_CP), _TS)
    bumped = NoteSignature(sig.name, sig.key_id, (_TS + 1).to_bytes(8, "big") + sig.signature[8:])
    msg = sign_checkpoint(_CP, _LOG) + bumped.line.encode()
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(
            msg, parse_vkey(_LOG.vkey), others=[CosignatureVerifier.from_vkey(_WITNESS.vkey)]
        )


def test_cosignature_is_ignored_by_a_plain_verifier_of_the_same_key() -> None:
    # The 0x04 key ID differs from the 0x01 one, so the lines never get confused.
    plain = NoteVerifier(_WITNESS.name, _WITNESS.public_key)
    assert plain.key_id != _WITNESS.key_id
    _, _, sigs = open_checkpoint(_cosigned(), parse_vkey(_LOG.vkey), others=[plain])
    assert [s.name for s in sigs] == ["example.com/log"]


def test_cosigner_skey_round_trip() -> None:
    again = CosignatureSigner.from_skey(_WITNESS.skey)
    assert again.vkey == _WITNESS.vkey
    assert _WITNESS.skey.split("+")[3] == _WITNESS.key_id.hex()
    assert base64.b64decode(_WITNESS.vkey.split("+", 2)[2])[0] == KEY_TYPE_COSIGNATURE


def test_cosigner_from_plain_skey_converts_key_id() -> None:
    note_key = NoteSigner.from_skey(TEST_KEYS["Known"]["skey"])
    cosigner = CosignatureSigner.from_skey(TEST_KEYS["Known"]["skey"])
    assert cosigner.public_key == note_key.public_key
    assert cosigner.key_id == key_id("Known", KEY_TYPE_COSIGNATURE, note_key.public_key)
    assert cosigner.key_id != note_key.key_id
    verifier = CosignatureVerifier.from_vkey(TEST_KEYS["Known"]["vkey"])
    sig = cosigner.cosign(format_checkpoint(_CP), _TS)
    verifier.verify(format_checkpoint(_CP), sig)
    with pytest.raises(UnknownKeyError):
        parse_vkey(TEST_KEYS["Known"]["vkey"]).verify(format_checkpoint(_CP), sig)


@pytest.mark.parametrize("ts", [-1, 1 << 63], ids=["negative", "2^63"])
def test_cosign_rejects_out_of_range_timestamps(ts: int) -> None:
    with pytest.raises(MalformedError):
        _WITNESS.cosign(format_checkpoint(_CP), ts)


def test_cosignature_timestamp_above_2_63_rejected() -> None:
    with pytest.raises(MalformedError, match="2\\^63"):
        parse_cosignature_timestamp(b"\x80" + bytes(71))


def test_cosign_refuses_non_checkpoint_text() -> None:
    with pytest.raises(MalformedError):
        _WITNESS.cosign("just one line\n", _TS)


# ---------------------------------------------------------------- malformed checkpoints

_GOOD_ROOT = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"o\n01\n{_GOOD_ROOT}\n", id="leading-zero"),
        pytest.param(f"o\n00\n{_GOOD_ROOT}\n", id="double-zero"),
        pytest.param(f"o\n-1\n{_GOOD_ROOT}\n", id="negative"),
        pytest.param(f"o\n+1\n{_GOOD_ROOT}\n", id="plus-sign"),
        pytest.param(f"o\n 1\n{_GOOD_ROOT}\n", id="space"),
        pytest.param(f"o\n1_000\n{_GOOD_ROOT}\n", id="underscore"),
        pytest.param(f"o\n\uff11\n{_GOOD_ROOT}\n", id="fullwidth-digit"),
        pytest.param(f"o\n\n{_GOOD_ROOT}\n", id="empty-size"),
        pytest.param(f"o\n{1 << 63}\n{_GOOD_ROOT}\n", id="size-2^63"),
        pytest.param(f"o\n{'9' * 30}\n{_GOOD_ROOT}\n", id="size-huge"),
        pytest.param(f"o\n1\n{_GOOD_ROOT}", id="missing-final-newline"),
        pytest.param("o\n1\n", id="missing-root"),
        pytest.param(f"\n1\n{_GOOD_ROOT}\n", id="empty-origin"),
        pytest.param(f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n", id="root-31-bytes"),
        pytest.param(f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n", id="root-33-bytes"),
        pytest.param(f"o\n1\n{_GOOD_ROOT[:-1]}\n", id="root-no-padding"),
        pytest.param(f"o\n1\n{_GOOD_ROOT[:-2]}9=\n", id="root-non-canonical"),
        pytest.param(f"o\n1\n{_GOOD_ROOT}\n\n", id="empty-extension-line"),
        pytest.param(f"o\n1\n{_GOOD_ROOT}\next\n\n", id="empty-extension-after-ext"),
        pytest.param(f"o\r\n1\n{_GOOD_ROOT}\n", id="carriage-return"),
    ],
)
def test_malformed_checkpoints_rejected(text: str) -> None:
    with pytest.raises(MalformedError):
        parse_checkpoint(text)


@pytest.mark.parametrize("size", [0, 1, 10, (1 << 63) - 1])
def test_size_bounds_accepted(size: int) -> None:
    cp = parse_checkpoint(f"o\n{size}\n{_GOOD_ROOT}\n")
    assert cp.size == size


def test_extensions_round_trip() -> None:
    cp = Checkpoint("example.com/log", 5, ROOT, ("ext one", "ext two"))
    text = format_checkpoint(cp)
    assert text.endswith("\next one\next two\n")
    assert parse_checkpoint(text) == cp


@pytest.mark.parametrize(
    "cp",
    [
        Checkpoint("", 1, ROOT),
        Checkpoint("a\nb", 1, ROOT),
        Checkpoint("o", -1, ROOT),
        Checkpoint("o", 1 << 63, ROOT),
        Checkpoint("o", 1, ROOT, ("",)),
        Checkpoint("o", 1, ROOT, ("a\nb",)),
    ],
    ids=["empty-origin", "newline-origin", "negative", "2^63", "empty-ext", "newline-ext"],
)
def test_format_rejects_unparseable_checkpoints(cp: Checkpoint) -> None:
    with pytest.raises(MalformedError):
        format_checkpoint(cp)


_origins = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(lambda s: "\n" not in s)


@given(
    origin=_origins,
    size=st.integers(min_value=0, max_value=(1 << 63) - 1),
    root=st.binary(min_size=32, max_size=32),
    exts=st.lists(_origins, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, exts: list[str]) -> None:
    cp = Checkpoint(origin, size, root, tuple(exts))
    assert parse_checkpoint(format_checkpoint(cp)) == cp
