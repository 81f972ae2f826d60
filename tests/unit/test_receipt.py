"""Receipts and promises: format, strict parse, offline verification, and every tampered field.

Receipts are built here from a MemoryHashes tree and a freshly signed checkpoint, without a
log or a server, so each test controls every byte.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from translog.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import (
    InvalidProofError,
    InvalidSignatureError,
    MalformedError,
    UnknownKeyError,
    VerificationError,
)
from translog.formats.receipt import (
    FORMAT,
    PROMISE_FORMAT,
    Receipt,
    ReceiptEntry,
    build_receipt,
    format_promise,
    longest_run,
    parse_promise,
    parse_receipt,
    promise_text,
    sign_promise,
    verify_promise,
    verify_receipt,
)
from translog.formats.receipt_json import format_receipt

ORIGIN = "receipt.example/log"
SIGNER = NoteSigner.generate(ORIGIN)
VKEY = SIGNER.vkey
OTHER = NoteSigner.generate(ORIGIN)
SALT = bytes(range(32))
PAYLOADS = [b"payload %d" % i for i in range(12)]


def _leaf(i: int) -> bytes:
    ts = 1_700_000_000_000 + i
    if i % 3 == 0:
        return inline_leaf(ts, PAYLOADS[i])
    return committed_leaf(ts, PAYLOADS[i], SALT)


LEAVES = [_leaf(i) for i in range(len(PAYLOADS))]
TREE = MemoryHashes(leaf_hash(leaf) for leaf in LEAVES)
SIZE = len(LEAVES)
NOTE = sign_checkpoint(Checkpoint(ORIGIN, SIZE, TREE.root()), SIGNER)


def entry(i: int, duplicate: bool = False) -> ReceiptEntry:
    leaf = LEAVES[i]
    return ReceiptEntry(
        i, leaf, leaf_hash(leaf), 1_700_000_000_000 + i, None if i % 3 == 0 else SALT, duplicate
    )


def single(i: int = 5) -> dict[str, Any]:
    return format_receipt(build_receipt(NOTE, SIZE, [entry(i)], TREE, batch=False))


def batch() -> dict[str, Any]:
    """Entries 4..9 (the run) plus an old duplicate of entry 1 (outside it)."""
    entries = [entry(i) for i in range(4, 10)] + [entry(1, duplicate=True)]
    return format_receipt(build_receipt(NOTE, SIZE, entries, TREE, batch=True))


def b64flip(text: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# -- format and parse ------------------------------------------------------------------------


def test_single_receipt_layout() -> None:
    r = single(5)
    assert list(r) == [
        "format",
        "index",
        "leaf",
        "leaf_hash",
        "timestamp",
        "salt",
        "duplicate",
        "inclusion_proof",
        "checkpoint",
    ]
    assert r["format"] == FORMAT and r["index"] == 5 and r["checkpoint"] == NOTE.decode()
    assert "salt" not in single(3), "inline leaves carry no salt"


def test_batch_receipt_layout() -> None:
    r = batch()
    assert list(r) == ["format", "checkpoint", "entries", "range_proof"]
    assert r["range_proof"]["start"] == 4 and r["range_proof"]["end"] == 10
    assert ["inclusion_proof" in e for e in r["entries"]] == [False] * 6 + [True]


@pytest.mark.parametrize("make", [single, batch])
def test_round_trip_through_json(make: Any) -> None:
    obj = json.loads(json.dumps(make()))
    parsed = parse_receipt(obj)
    assert isinstance(parsed, Receipt)
    assert format_receipt(parsed) == obj
    verify_receipt(parsed, VKEY)


def test_longest_run() -> None:
    assert longest_run([7]) == (7, 8)
    assert longest_run([5, 1, 2, 3, 9, 10]) == (1, 4)
    assert longest_run([4, 4, 5, 0]) == (4, 6)
    assert longest_run([2, 0]) == (0, 1), "first run on ties"
    with pytest.raises(MalformedError, match="at least one entry"):
        longest_run([])


def test_build_single_rejects_several_entries() -> None:
    with pytest.raises(MalformedError, match="one entry, got 2"):
        build_receipt(NOTE, SIZE, [entry(1), entry(2)], TREE, batch=False)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("leaf"), "receipt.leaf: missing"),
        (lambda r: r.update(extra=1), "receipt.extra: unknown field"),
        (lambda r: r.update(format="translog-receipt/v2"), "receipt.format: expected"),
        (lambda r: r.update(index=-1), r"receipt.index: expected an integer in \[0, 2\^63\)"),
        (lambda r: r.update(index=True), "receipt.index: expected an integer"),
        (lambda r: r.update(index=2**63), "receipt.index: expected an integer"),
        (lambda r: r.update(timestamp="1"), "receipt.timestamp: expected an integer"),
        (lambda r: r.update(duplicate=0), "receipt.duplicate: expected true or false"),
        (lambda r: r.update(leaf=7), "receipt.leaf: expected a base64 string"),
        (lambda r: r.update(leaf="AQ"), "receipt.leaf: invalid base64"),
        (lambda r: r.update(leaf_hash="AAA="), "receipt.leaf_hash: expected 32 bytes, got 2"),
        (
            lambda r: r.update(salt=base64.b64encode(b"s" * 31).decode()),
            "receipt.salt: expected 32 bytes",
        ),
        (lambda r: r.update(inclusion_proof="x"), "receipt.inclusion_proof: expected a list"),
        (
            lambda r: r["inclusion_proof"].__setitem__(1, "AAAA"),
            r"receipt.inclusion_proof\[1\]: expected 32 bytes, got 3",
        ),
        (lambda r: r.update(checkpoint=None), "receipt.checkpoint: expected a string"),
    ],
)
def test_parse_single_names_the_bad_field(mutate: Any, message: str) -> None:
    r = single(5)
    mutate(r)
    with pytest.raises(MalformedError, match=message):
        parse_receipt(r)


def test_parse_rejects_non_canonical_base64() -> None:
    r = single(5)
    leaf_hash_text = r["leaf_hash"]
    # Flip unused low bits of the last base64 digit: same bytes, different spelling.
    last = leaf_hash_text[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    r["leaf_hash"] = leaf_hash_text[:-2] + alphabet[alphabet.index(last) ^ 1] + "="
    with pytest.raises(MalformedError, match=r"receipt.leaf_hash: non-canonical base64"):
        parse_receipt(r)


def test_parse_rejects_non_objects() -> None:
    for value in ([], "receipt", None, 3):
        with pytest.raises(MalformedError, match="receipt: expected a JSON object"):
            parse_receipt(value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.pop("range_proof"), "receipt.range_proof: missing"),
        (lambda r: r.update(entries=[]), "receipt.entries: expected a non-empty list"),
        (
            lambda r: r["range_proof"].update(start=10),
            r"receipt.range_proof: empty range \[10, 10\)",
        ),
        (lambda r: r["range_proof"].update(extra=1), "receipt.range_proof.extra: unknown field"),
        (
            lambda r: r["range_proof"].update(nodes=["x"]),
            r"receipt.range_proof.nodes\[0\]: invalid base64",
        ),
        (lambda r: r["entries"].pop(2), "receipt.range_proof: no entry for index 6"),
        (lambda r: r["entries"][0].update(extra=1), r"receipt.entries\[0\].extra: unknown field"),
        (
            lambda r: r["entries"][6].pop("inclusion_proof"),
            r"receipt.entries\[6\].inclusion_proof: missing for an entry outside "
            r"range_proof \[4, 10\)",
        ),
        (
            lambda r: r["entries"][1].update(inclusion_proof=[]),
            r"receipt.entries\[1\].inclusion_proof: not allowed for an entry inside",
        ),
        (
            lambda r: r["entries"].__setitem__(3, "x"),
            r"receipt.entries\[3\]: expected a JSON object",
        ),
    ],
)
def test_parse_batch_names_the_bad_field(mutate: Any, message: str) -> None:
    r = batch()
    mutate(r)
    with pytest.raises(MalformedError, match=message):
        parse_receipt(r)


# -- verification ----------------------------------------------------------------------------


def test_valid_receipts_verify_with_payloads() -> None:
    verify_receipt(single(5), VKEY, PAYLOADS[5])
    verify_receipt(single(3), VKEY, PAYLOADS[3])
    payloads = [PAYLOADS[i] for i in range(4, 10)] + [PAYLOADS[1]]
    verify_receipt(batch(), VKEY, payloads=payloads)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda r: r.update(index=4),
            InvalidProofError,
            "receipt.inclusion_proof: inclusion proof for index 4 does not match",
        ),
        (
            lambda r: r.update(index=SIZE),
            InvalidProofError,
            f"receipt.index {SIZE} is beyond the checkpoint size {SIZE}",
        ),
        (
            lambda r: r.update(leaf=b64flip(r["leaf"], 20)),
            VerificationError,
            "receipt.leaf_hash does not match the leaf",
        ),
        (
            lambda r: r.update(leaf_hash=b64flip(r["leaf_hash"])),
            VerificationError,
            "receipt.leaf_hash does not match the leaf",
        ),
        (
            lambda r: r.update(timestamp=r["timestamp"] + 1),
            VerificationError,
            "receipt.timestamp 1700000000006 differs from the leaf's 1700000000005",
        ),
        (
            lambda r: r["inclusion_proof"].__setitem__(0, b64flip(r["inclusion_proof"][0])),
            InvalidProofError,
            "receipt.inclusion_proof: inclusion proof for index 5 does not match",
        ),
        (
            lambda r: r["inclusion_proof"].pop(),
            InvalidProofError,
            "receipt.inclusion_proof: inclusion proof has wrong length: expected 4, got 3",
        ),
        (
            lambda r: r.update(
                checkpoint=r["checkpoint"].replace(f"\n{SIZE}\n", f"\n{SIZE + 1}\n")
            ),
            InvalidSignatureError,
            "invalid signature",
        ),
        (
            lambda r: r.update(
                checkpoint=sign_checkpoint(Checkpoint(ORIGIN, SIZE, bytes(32)), SIGNER).decode()
            ),
            InvalidProofError,
            "does not match the root",
        ),
        (
            lambda r: r.update(
                checkpoint=sign_checkpoint(Checkpoint(ORIGIN, SIZE, TREE.root()), OTHER).decode()
            ),
            UnknownKeyError,
            "no signature by log key",
        ),
    ],
)
def test_every_tampered_single_field_fails(
    mutate: Any, error: type[Exception], message: str
) -> None:
    r = single(5)
    verify_receipt(copy.deepcopy(r), VKEY)
    mutate(r)
    with pytest.raises(error, match=message):
        verify_receipt(r, VKEY)


def test_a_leaf_that_does_not_decode_fails() -> None:
    bad = b"\x02" + LEAVES[5][1:]
    r = single(5)
    r["leaf"] = base64.b64encode(bad).decode()
    r["leaf_hash"] = base64.b64encode(leaf_hash(bad)).decode()
    with pytest.raises(MalformedError, match=r"receipt.leaf: unknown leaf version 2"):
        verify_receipt(r, VKEY)


def test_salt_on_an_inline_leaf_fails() -> None:
    r = single(3)
    r["salt"] = base64.b64encode(SALT).decode()
    with pytest.raises(VerificationError, match=r"receipt.salt is given but the leaf is inline"):
        verify_receipt(r, VKEY)


def test_tampered_salt_or_payload_fails_the_payload_check() -> None:
    r = single(5)
    r["salt"] = b64flip(r["salt"])
    verify_receipt(r, VKEY)  # the salt is the submitter's secret: only a payload check sees it
    with pytest.raises(
        VerificationError, match=r"receipt: payload .* do not match the leaf commitment"
    ):
        verify_receipt(r, VKEY, PAYLOADS[5])
    with pytest.raises(VerificationError, match="do not match"):
        verify_receipt(single(5), VKEY, b"another payload")
    with pytest.raises(VerificationError, match="payload does not match the inline leaf"):
        verify_receipt(single(3), VKEY, b"another payload")


def test_wrong_vkey_or_origin_fails() -> None:
    with pytest.raises(UnknownKeyError):
        verify_receipt(single(), OTHER.vkey)
    elsewhere = NoteSigner.generate("elsewhere.example/log")
    with pytest.raises(UnknownKeyError):
        verify_receipt(single(), elsewhere.vkey)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda r: r["range_proof"]["nodes"].__setitem__(
                0, b64flip(r["range_proof"]["nodes"][0])
            ),
            InvalidProofError,
            r"receipt.range_proof: range proof for \[4, 10\) does not match",
        ),
        (
            lambda r: r["range_proof"]["nodes"].pop(),
            InvalidProofError,
            "receipt.range_proof: range proof has wrong length",
        ),
        (
            lambda r: r["entries"][2].update(leaf_hash=b64flip(r["entries"][2]["leaf_hash"])),
            VerificationError,
            r"receipt.entries\[2\].leaf_hash does not match the leaf",
        ),
        (
            lambda r: r["entries"][2].update(timestamp=1),
            VerificationError,
            r"receipt.entries\[2\].timestamp 1 differs",
        ),
        (
            lambda r: r["entries"][6]["inclusion_proof"].__setitem__(
                0, b64flip(r["entries"][6]["inclusion_proof"][0])
            ),
            InvalidProofError,
            r"receipt.entries\[6\].inclusion_proof: inclusion proof for index 1",
        ),
        (
            lambda r: r["entries"][6].update(index=2),
            InvalidProofError,
            r"receipt.entries\[6\].inclusion_proof",
        ),
        (
            lambda r: r["entries"].append({**r["entries"][0], "index": 5}),
            VerificationError,
            r"receipt.entries\[7\]: index 5 appears with two different leaves",
        ),
        (
            lambda r: (
                [e.update(index=e["index"] + 1) for e in r["entries"][:6]]
                and r["range_proof"].update(start=5, end=11)
            ),
            InvalidProofError,
            "receipt.range_proof",
        ),
    ],
)
def test_every_tampered_batch_field_fails(
    mutate: Any, error: type[Exception], message: str
) -> None:
    r = batch()
    mutate(r)
    with pytest.raises(error, match=message):
        verify_receipt(r, VKEY)


def test_batch_payload_checks_name_the_entry() -> None:
    payloads = [PAYLOADS[i] for i in range(4, 10)] + [b"wrong"]
    with pytest.raises(VerificationError, match=r"receipt.entries\[6\]: payload"):
        verify_receipt(batch(), VKEY, payloads=payloads)
    with pytest.raises(MalformedError, match="2 payloads given for a receipt of 7 entries"):
        verify_receipt(batch(), VKEY, payloads=[b"a", b"b"])


def test_a_repeated_index_inside_the_run_is_fine_when_leaves_agree() -> None:
    entries = [entry(4), entry(5), entry(5, duplicate=True)]
    r = format_receipt(build_receipt(NOTE, SIZE, entries, TREE, batch=True))
    assert r["range_proof"]["start"] == 4 and r["range_proof"]["end"] == 6
    verify_receipt(r, VKEY, payloads=[PAYLOADS[4], PAYLOADS[5], PAYLOADS[5]])


# -- promises --------------------------------------------------------------------------------


def promise(i: int = 5, delay: int = 10_000) -> dict[str, Any]:
    salt = None if i % 3 == 0 else SALT
    return format_promise(sign_promise(SIGNER, LEAVES[i], salt, delay))


def test_promise_layout_and_text() -> None:
    p = promise(5)
    assert list(p) == [
        "format",
        "leaf",
        "leaf_hash",
        "timestamp",
        "salt",
        "deadline",
        "duplicate",
        "promise",
    ]
    assert p["format"] == PROMISE_FORMAT
    assert p["deadline"] == p["timestamp"] + 10_000
    text = p["promise"].split("\n\n")[0] + "\n"
    assert text == (
        f"translog-promise/v1\n{ORIGIN}\n1700000000005\n{p['leaf_hash']}\n1700000010005\n"
    )
    assert text == promise_text(ORIGIN, 1_700_000_000_005, leaf_hash(LEAVES[5]), 1_700_000_010_005)
    assert "salt" not in promise(3)


def test_promise_round_trip_and_verify() -> None:
    p = json.loads(json.dumps(promise(5)))
    assert format_promise(parse_promise(p)) == p
    verify_promise(p, VKEY)
    verify_promise(parse_promise(p), VKEY)


def test_a_promise_is_never_a_checkpoint() -> None:
    note = promise()["promise"]
    with pytest.raises(VerificationError, match="checkpoint origin is 'translog-promise/v1'"):
        open_checkpoint(note, parse_vkey(VKEY))
    with pytest.raises(MalformedError, match="checkpoint size"):
        parse_checkpoint(note.split("\n\n")[0] + "\n")


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda p: p.update(leaf=b64flip(p["leaf"], 20)),
            VerificationError,
            "promise.leaf_hash does not match the leaf",
        ),
        (
            lambda p: p.update(leaf_hash=b64flip(p["leaf_hash"])),
            VerificationError,
            "promise.leaf_hash does not match the leaf",
        ),
        (
            lambda p: p.update(timestamp=p["timestamp"] - 1),
            VerificationError,
            "promise.timestamp 1700000000004 differs",
        ),
        (
            lambda p: p.update(deadline=p["deadline"] + 1),
            VerificationError,
            "promise note deadline is '1700000010005', expected '1700000010006'",
        ),
        (
            lambda p: p.update(deadline=1),
            VerificationError,
            "promise.deadline 1 is before its timestamp",
        ),
        (
            lambda p: p.update(promise=p["promise"].replace("1700000010005", "1700000099999")),
            InvalidSignatureError,
            "invalid signature",
        ),
        (
            lambda p: p.update(
                promise=format_promise(sign_promise(OTHER, LEAVES[5], SALT, 10_000))["promise"]
            ),
            UnknownKeyError,
            "note has no verifiable signatures",
        ),
        (
            lambda p: p.update(
                promise=format_promise(sign_promise(SIGNER, LEAVES[4], SALT, 10_000))["promise"]
            ),
            VerificationError,
            "promise note timestamp is '1700000000004'",
        ),
        (
            lambda p: p.update(format="translog-receipt/v1"),
            MalformedError,
            "promise.format: expected 'translog-promise/v1'",
        ),
        (lambda p: p.pop("deadline"), MalformedError, "promise.deadline: missing"),
        (
            lambda p: p.update(duplicate="no"),
            MalformedError,
            "promise.duplicate: expected true or false",
        ),
        (lambda p: p.update(extra=1), MalformedError, "promise.extra: unknown field"),
    ],
)
def test_every_tampered_promise_field_fails(
    mutate: Any, error: type[Exception], message: str
) -> None:
    p = promise(5)
    mutate(p)
    with pytest.raises(error, match=message):
        verify_promise(p, VKEY)


def test_promise_for_another_origin_fails() -> None:
    other_log = NoteSigner.generate("other.example/log")
    p = format_promise(sign_promise(other_log, LEAVES[5], SALT, 10_000))
    with pytest.raises(UnknownKeyError):
        verify_promise(p, VKEY)
    verify_promise(p, other_log.vkey)
