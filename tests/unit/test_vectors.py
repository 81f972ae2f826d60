"""translog's own vectors (tests/vectors): up to date with the generator, and they verify.

The leaf checks re-derive every byte by hand from FORMATS.md §2 rather than through the
library, so a change to the leaf encoder cannot silently change the vectors and the tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from translog.core.checkpoint import open_checkpoint
from translog.core.vkey import parse_vkey
from translog.formats.proof import parse_proof, verify_proof
from translog.formats.receipt import parse_receipt, verify_promise, verify_receipt

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def test_checked_in_vectors_match_the_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_vectors.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", load("leaves.json")["cases"], ids=lambda c: c["desc"])
def test_leaf_bytes_from_the_spec(case: dict[str, Any]) -> None:
    payload = base64.b64decode(case["payload_b64"])
    head = struct.pack(">BQB", 1, case["timestamp"], case["kind"])
    if case["kind"] == 0:
        expected = head + payload
    else:
        expected = head + hashlib.sha256(bytes.fromhex(case["salt_hex"]) + payload).digest()
    assert bytes.fromhex(case["leaf_hex"]) == expected
    assert hashlib.sha256(b"\x00" + expected).hexdigest() == case["leaf_hash_hex"]


def test_log_objects_verify() -> None:
    log = load("log.json")
    vkey = log["vkey"]
    payloads = [base64.b64decode(p) for p in log["payloads_b64"]]
    cp, _, _ = open_checkpoint(log["checkpoint"].encode(), parse_vkey(vkey), origin="Log")
    assert cp.size == 7
    verify_receipt(parse_receipt(log["receipt_single"]), vkey, payloads[3])
    verify_receipt(parse_receipt(log["receipt_batch"]), vkey, payloads=payloads[2:6])
    verify_promise(log["promise"], vkey)
    proof = parse_proof(log["tlog_proof"].encode())
    assert verify_proof(proof, parse_vkey(vkey), origin="Log") == cp
