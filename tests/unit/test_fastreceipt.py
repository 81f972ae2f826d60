"""Receipts derived from one range proof (the multi-process fast path) are the usual receipts.

The JSON must be byte for byte what ``format_receipt`` gives for the same entries, the derived
proofs must be the ones storage gives, and a range proof that does not lead to the signed
root must never become a receipt.
"""

from __future__ import annotations

import json
import random

import pytest

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash, prove_inclusion
from translog.core.range_proof import prove_range
from translog.core.signing import NoteSigner
from translog.errors import StorageCorruptError
from translog.formats.fastreceipt import (
    RunHashes,
    batch_receipt_json,
    quote_checkpoint,
    single_receipt_json,
)
from translog.formats.receipt import ReceiptEntry, build_receipt, format_receipt, verify_receipt

from ..conftest import ORIGIN

_COMPACT = json.JSONEncoder(separators=(",", ":"))
TS = 1_700_000_000_000


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
def test_receipts_match_format_receipt_byte_for_byte(
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
        expected = _COMPACT.encode(
            format_receipt(build_receipt(note, size, [entry], tree, batch=False))
        ).encode()
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
        expected = _COMPACT.encode(
            format_receipt(build_receipt(note, size, entries, tree, batch=True))
        ).encode()
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
    from translog.http.multiprocess.worker import Prepared

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
    from translog.http.multiprocess.worker import plain_ndjson
    from translog.http.submit import parse_batch

    fast = plain_ndjson(body, 10)
    try:
        full: list[bytes] | None = [
            it.payload for it in parse_batch(body, "application/x-ndjson", 10)
        ]
    except TranslogError:
        full = None
    if fast is not None:
        assert fast == full  # never accepts what the full parser refuses, never differs
    assert plain_ndjson(b'"QQ=="\n' * 11, 10) is None  # over the limit: the full parser says so
    assert plain_ndjson(b'"QQ=="\n\n"QUI="\n', 10) == [b"A", b"AB"]
