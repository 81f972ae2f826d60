"""The one receipt encoder, and receipts derived from one range proof (the fast path).

The JSON must be byte for byte the compact JSON of the documented layout (``_reference``
below, written from docs/FORMATS.md, independently of the encoder), whichever path built it;
the derived proofs must be the ones storage gives, and a range proof that does not lead to
the signed root must never become a receipt.
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash, prove_inclusion
from translog.core.range_proof import prove_range
from translog.core.signing import NoteSigner
from translog.errors import StorageCorruptError
from translog.formats.batch import parse_batch, plain_ndjson
from translog.formats.receipt import Receipt, ReceiptEntry, build_receipt, verify_receipt
from translog.formats.receipt_json import (
    RunHashes,
    batch_receipt_json,
    format_receipt,
    quote_checkpoint,
    receipt_json,
    single_receipt_json,
)
from translog.http.multiprocess.fastpath import Prepared

from ..conftest import ORIGIN

_COMPACT = json.JSONEncoder(separators=(",", ":"))
TS = 1_700_000_000_000


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _reference_entry(e: ReceiptEntry) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "index": e.index,
        "leaf": _b64(e.leaf),
        "leaf_hash": _b64(e.leaf_hash),
        "timestamp": e.timestamp_ms,
    }
    if e.salt is not None:
        obj["salt"] = _b64(e.salt)
    obj["duplicate"] = e.duplicate
    if e.inclusion_proof is not None:
        obj["inclusion_proof"] = [_b64(h) for h in e.inclusion_proof]
    return obj


def _reference(receipt: Receipt) -> bytes:
    """The compact JSON of a receipt, built field by field as FORMATS.md lays it out."""
    cp = receipt.checkpoint.decode()
    rp = receipt.range_proof
    if rp is None:
        obj = {"format": "translog-receipt/v1", **_reference_entry(receipt.entries[0])}
        obj["checkpoint"] = cp
    else:
        obj = {
            "format": "translog-receipt/v1",
            "checkpoint": cp,
            "entries": [_reference_entry(e) for e in receipt.entries],
            "range_proof": {
                "start": rp.start,
                "end": rp.end,
                "nodes": [_b64(h) for h in rp.nodes],
            },
        }
    return _COMPACT.encode(obj).encode()


def _tree(n: int) -> tuple[MemoryHashes, list[bytes], list[bytes | None]]:
    rng = random.Random(n)
    tree = MemoryHashes()
    leaves: list[bytes] = []
    salts: list[bytes | None] = []
    for i in range(n):
        if i % 3:
            salt = rng.randbytes(32)
            leaf = committed_leaf(TS, b"p%d" % i, salt)
        else:
            salt, leaf = None, inline_leaf(TS, f"é {i}".encode())
        leaves.append(leaf)
        salts.append(salt)
        tree.append(leaf_hash(leaf))
    return tree, leaves, salts


@pytest.mark.parametrize(
    ("start", "end", "size"), [(0, 1, 1), (5, 6, 6), (3, 17, 21), (0, 64, 64), (100, 229, 300)]
)
def test_receipts_match_the_documented_layout_byte_for_byte(
    signer: NoteSigner, start: int, end: int, size: int
) -> None:
    tree, leaves, salts = _tree(size)
    cp = Checkpoint(ORIGIN, size, tree.root())
    note = sign_checkpoint(cp, signer)
    hashes = b"".join(leaf_hash(leaf) for leaf in leaves[start:end])
    run = RunHashes(start, end, size, hashes, prove_range(start, end, size, tree), cp.root_hash)
    quoted = quote_checkpoint(note)
    for index in (start, (start + end) // 2, end - 1):
        assert run.inclusion_proof(index) == list(prove_inclusion(index, size, tree))
        entry = ReceiptEntry(index, leaves[index], leaf_hash(leaves[index]), TS, salts[index])
        receipt = build_receipt(note, size, [entry], tree, batch=False)
        expected = _reference(receipt)
        assert receipt_json(receipt) == expected
        assert format_receipt(receipt) == json.loads(expected)
        got = single_receipt_json(
            quoted,
            index,
            leaves[index],
            entry.leaf_hash,
            TS,
            salts[index],
            run.inclusion_proof_json(index),
        )
        assert got == expected
        verify_receipt(json.loads(got), signer.vkey)
    # A batch request's sub-run, and the whole run.
    for lo, hi in ((start, end), (start + (end - start) // 3, end)):
        entries = [
            ReceiptEntry(i, leaves[i], leaf_hash(leaves[i]), TS, salts[i]) for i in range(lo, hi)
        ]
        receipt = build_receipt(note, size, entries, tree, batch=True)
        expected = _reference(receipt)
        assert receipt_json(receipt) == expected
        got = batch_receipt_json(
            quoted,
            lo,
            leaves[lo:hi],
            hashes,
            TS,
            salts[lo:hi],
            run.range_proof(lo, hi),
            (lo - start) * 32,
        )
        assert got == expected
        verify_receipt(json.loads(got), signer.vkey)


def test_duplicates_and_entries_outside_the_run_encode_as_documented(signer: NoteSigner) -> None:
    tree, leaves, salts = _tree(30)
    note = sign_checkpoint(Checkpoint(ORIGIN, 30, tree.root()), signer)

    def entry(i: int, duplicate: bool = False) -> ReceiptEntry:
        return ReceiptEntry(i, leaves[i], leaf_hash(leaves[i]), TS, salts[i], duplicate)

    # A retried key answers an older entry (outside the run), marked duplicate.
    entries = [entry(20), entry(3, duplicate=True), entry(21), entry(22), entry(7, True)]
    receipt = build_receipt(note, 30, entries, tree, batch=True)
    got = receipt_json(receipt)
    assert got == _reference(receipt)
    assert b'"duplicate":true,"inclusion_proof":[' in got
    verify_receipt(json.loads(got), signer.vkey)
    single = build_receipt(note, 30, [entry(4, duplicate=True)], tree, batch=False)
    assert receipt_json(single) == _reference(single)
    verify_receipt(json.loads(receipt_json(single)), signer.vkey)


def test_a_proof_that_misses_the_root_never_becomes_a_receipt() -> None:
    tree, leaves, _ = _tree(40)
    hashes = b"".join(leaf_hash(leaf) for leaf in leaves[10:20])
    proof = list(prove_range(10, 20, 40, tree))
    RunHashes(10, 20, 40, hashes, proof, tree.root())
    bad = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    with pytest.raises(StorageCorruptError, match="does not give the checkpoint root"):
        RunHashes(10, 20, 40, hashes, bad, tree.root())
    with pytest.raises(StorageCorruptError, match="too short"):
        RunHashes(10, 20, 40, hashes, proof[:-1], tree.root())
    with pytest.raises(StorageCorruptError, match="does not give"):
        RunHashes(10, 20, 40, hashes, [*proof, proof[0]], tree.root())
    with pytest.raises(StorageCorruptError, match="does not fit"):
        RunHashes(10, 20, 40, hashes[:-32], proof, tree.root())


def test_worker_leaves_hash_as_the_log_would_and_move_to_a_later_time() -> None:
    prepared = Prepared([b"committed", b"inline"], [True, False])
    ts, salt = prepared.timestamp_ms, prepared.salts[0]
    assert salt is not None and prepared.salts[1] is None
    assert prepared.leaves == [committed_leaf(ts, b"committed", salt), inline_leaf(ts, b"inline")]
    assert prepared.hashes == b"".join(leaf_hash(leaf) for leaf in prepared.leaves)
    assert prepared.bodies == [b"committed", None]
    assert prepared.leaves_at(ts) is prepared.leaves
    assert prepared.leaves_at(ts + 7) == [
        committed_leaf(ts + 7, b"committed", salt),
        inline_leaf(ts + 7, b"inline"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'"QQ=="\n"QUJD"',
        b'"QQ=="\n\n"QUI="\n',
        b'"QQ=="\r\n"QUJD"',  # a CR: the full parser strips it
        b' "QQ=="',
        b'"QQ"',
        b'"QQ=="\n"',
        b'"Q\\u0051=="',
        b'{"payload_b64": "QQ=="}',
        b'"QQ==QQ=="',
        b'"A==="',
        b'""',
        b"",
        b"\n\n",
    ],
)
def test_plain_ndjson_takes_only_what_the_full_parser_takes_alike(body: bytes) -> None:
    from translog.errors import TranslogError

    fast = plain_ndjson(body, 10)
    try:
        full: list[bytes] | None = parse_batch(body, "application/x-ndjson", 10).payloads
    except TranslogError:
        full = None
    if fast is not None:
        assert fast == full  # never accepts what the full parser refuses, never differs
    assert plain_ndjson(b'"QQ=="\n' * 11, 10) is None  # over the limit: the full parser says so
    assert plain_ndjson(b'"QQ=="\n"QUI="\n', 10) == [b"A", b"AB"]
    # A blank line inside the body: the full parser, so that errors name the right line.
    assert plain_ndjson(b'"QQ=="\n\n"QUI="\n', 10) is None
    batch = parse_batch(b'"QQ=="\n\n"QUI="\n', "application/x-ndjson", 10)
    assert batch.payloads == [b"A", b"AB"]
    assert [batch.where(i) for i in range(2)] == ["line 1", "line 3"]
