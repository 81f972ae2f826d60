#!/usr/bin/env python3
"""Regenerate tests/vectors/*.json: translog's own formats, deterministically.

Everything here is derived from fixed inputs and the published transparency-dev test key
``Log`` (also used by tests/testdata/derived), and Ed25519 is deterministic, so every run
writes the same bytes. ``tests/unit/test_vectors.py`` fails when the checked-in files differ
from what this script produces, and verifies each vector with the library.

Usage: python scripts/gen_vectors.py [--check]
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash, prove_inclusion
from translog.core.signing import NoteSigner
from translog.formats.proof import TlogProof, format_proof
from translog.formats.receipt import (
    ReceiptEntry,
    build_receipt,
    format_promise,
    sign_promise,
)
from translog.formats.receipt_json import format_receipt

OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors"
SKEY = "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ"
VKEY = "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs"
T0 = 1_764_150_000_000  # 2025-11-26T09:40:00Z in ms


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def salt_for(i: int) -> bytes:
    return bytes([i]) * 32


def leaves() -> list[dict[str, Any]]:
    """Leaf v1 vectors: both kinds, edge sizes."""
    cases: list[dict[str, Any]] = []
    for i, payload in enumerate([b"", b"hello", b'{"action":"user.login"}', b"\xff" * 300]):
        leaf = inline_leaf(T0 + i, payload)
        cases.append(
            {
                "desc": f"inline {len(payload)} bytes",
                "kind": 0,
                "timestamp": T0 + i,
                "payload_b64": b64(payload),
                "leaf_hex": leaf.hex(),
                "leaf_hash_hex": leaf_hash(leaf).hex(),
            }
        )
    for i, payload in enumerate([b"", b"secret", b'{"action":"role.grant"}']):
        salt = salt_for(i + 1)
        leaf = committed_leaf(T0 + 10 + i, payload, salt)
        cases.append(
            {
                "desc": f"committed {len(payload)} bytes",
                "kind": 1,
                "timestamp": T0 + 10 + i,
                "payload_b64": b64(payload),
                "salt_hex": salt.hex(),
                "leaf_hex": leaf.hex(),
                "leaf_hash_hex": leaf_hash(leaf).hex(),
            }
        )
    return cases


def log_objects() -> dict[str, Any]:
    """A 7-entry log signed with the test key: checkpoint, receipts, promise, proof file."""
    signer = NoteSigner.from_skey(SKEY)
    payloads = [b"event %d" % i for i in range(7)]
    leaf_list = [committed_leaf(T0 + i, p, salt_for(i)) for i, p in enumerate(payloads)]
    tree = MemoryHashes(leaf_hash(x) for x in leaf_list)
    note = sign_checkpoint(Checkpoint("Log", 7, tree.root()), signer)
    entries = [
        ReceiptEntry(i, x, leaf_hash(x), T0 + i, salt_for(i)) for i, x in enumerate(leaf_list)
    ]
    single = format_receipt(build_receipt(note, 7, entries[3:4], tree, batch=False))
    batch = format_receipt(build_receipt(note, 7, entries[2:6], tree, batch=True))
    promise = format_promise(sign_promise(signer, leaf_list[6], salt_for(6), 10_000))
    proof = format_proof(TlogProof(3, prove_inclusion(3, 7, tree), note, leaf_list[3]))
    return {
        "vkey": VKEY,
        "payloads_b64": [b64(p) for p in payloads],
        "checkpoint": note.decode(),
        "receipt_single": single,
        "receipt_batch": batch,
        "promise": promise,
        "tlog_proof": proof.decode(),
    }


def render() -> dict[str, str]:
    """File name → exact file contents."""
    header = {"generated_by": "scripts/gen_vectors.py", "test_key": "transparency-dev Log"}
    return {
        "leaves.json": json.dumps({**header, "cases": leaves()}, indent=1) + "\n",
        "log.json": json.dumps({**header, **log_objects()}, indent=1) + "\n",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale vectors: {', '.join(stale)}; run make vectors", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
