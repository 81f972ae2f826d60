"""Offline verification: ``verify_file`` for every kind of file, and ``translog verify`` with
the network unavailable (sockets disabled) and the network stack absent (no aiohttp, no lmdb).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from translog.cli import command as cli
from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash, prove_inclusion
from translog.core.policy import parse_policy
from translog.core.range_proof import prove_range
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.errors import (
    ConfigError,
    InvalidProofError,
    MalformedError,
    UnknownKeyError,
    VerificationError,
)
from translog.formats.bundle import build_bundle, proof_range
from translog.formats.bundle_json import encode_bundle
from translog.formats.proof import TlogProof, format_proof
from translog.formats.receipt import (
    ReceiptEntry,
    build_receipt,
    format_promise,
    sign_promise,
)
from translog.formats.receipt_json import format_receipt
from translog.formats.verify import detect_kind, format_entry, ndjson_lines, verify_file

ORIGIN = "offline.example/log"
SIGNER = NoteSigner.generate(ORIGIN)
VKEY = SIGNER.vkey
SALT = bytes(range(32))
PAYLOADS = [json.dumps({"n": i}).encode() for i in range(10)]
TS = 1_800_000_000_000


def _leaf(i: int) -> bytes:
    if i % 3 == 0:
        return inline_leaf(TS + i, PAYLOADS[i])
    return committed_leaf(TS + i, PAYLOADS[i], SALT)


LEAVES = [_leaf(i) for i in range(len(PAYLOADS))]
TREE = MemoryHashes(leaf_hash(x) for x in LEAVES)
SIZE = len(LEAVES)
CHECKPOINT = sign_checkpoint(Checkpoint(ORIGIN, SIZE, TREE.root()), SIGNER)


def _entry(i: int) -> ReceiptEntry:
    salt = None if i % 3 == 0 else SALT
    return ReceiptEntry(i, LEAVES[i], leaf_hash(LEAVES[i]), TS + i, salt)


def receipt_bytes(*indexes: int, batch: bool = False) -> bytes:
    entries = [_entry(i) for i in indexes]
    receipt = build_receipt(CHECKPOINT, SIZE, entries, TREE, batch=batch)
    return json.dumps(format_receipt(receipt)).encode()


def proof_bytes(index: int) -> bytes:
    path = prove_inclusion(index, SIZE, TREE)
    return format_proof(TlogProof(index, path, CHECKPOINT, extra=LEAVES[index]))


def bundle_bytes(*, compress: bool = False) -> bytes:
    start, end = 2, 7
    lo, hi = proof_range(start, end, SIZE)
    bundle = build_bundle(
        origin=ORIGIN,
        from_ms=TS + start,
        to_ms=TS + end - 1,
        start=start,
        end=end,
        leaves=LEAVES[lo:hi],
        payloads={i: (PAYLOADS[i], SALT) for i in range(SIZE) if i % 3},
        checkpoints=[CHECKPOINT],
        consistency_proofs=[],
        range_nodes=prove_range(lo, hi, SIZE, TREE),
        generated_at_ms=0,
        generator="test",
    )
    return encode_bundle(bundle, compress=compress)


def entry_bytes(index: int, **changes: Any) -> bytes:
    obj = format_entry(
        ORIGIN, index, LEAVES[index], payload=PAYLOADS[index], salt=SALT, payload_status="present"
    )
    obj.update(changes)
    return json.dumps(obj).encode()


PROMISE = json.dumps(format_promise(sign_promise(SIGNER, LEAVES[4], SALT, 60_000))).encode()


# -- verify_file, kind by kind ----------------------------------------------------------------


def test_kinds_are_detected() -> None:
    assert detect_kind(receipt_bytes(4)) == "receipt"
    assert detect_kind(receipt_bytes(1, 2, batch=True)) == "receipt"
    assert detect_kind(receipt_bytes(4) + b"\n" + receipt_bytes(5)) == "receipts"
    assert detect_kind(PROMISE) == "promise"
    assert detect_kind(proof_bytes(4)) == "proof"
    assert detect_kind(bundle_bytes()) == "bundle"
    assert detect_kind(bundle_bytes(compress=True)) == "bundle"
    assert detect_kind(CHECKPOINT) == "checkpoint"
    assert detect_kind(entry_bytes(4)) == "entry"
    with pytest.raises(MalformedError, match="unknown file format 'x/v1'"):
        detect_kind(b'{"format": "x/v1"}')


def test_single_receipt_with_payload() -> None:
    result = verify_file(receipt_bytes(4), VKEY, payload=PAYLOADS[4])
    assert (result.kind, result.indexes, result.size) == ("receipt", (4,), SIZE)
    assert result.payloads_checked == 1
    assert result.lines()[0] == f"ok: receipt for log {ORIGIN}"
    with pytest.raises(VerificationError, match=r"receipt: payload .* do not match"):
        verify_file(receipt_bytes(4), VKEY, payload=b"other")


def test_batch_receipt_with_ndjson_payloads() -> None:
    payload_file = b"\n".join(PAYLOADS[1:5]) + b"\n\n"
    result = verify_file(receipt_bytes(1, 2, 3, 4, batch=True), VKEY, payload=payload_file)
    assert (result.kind, result.indexes, result.payloads_checked) == (
        "batch receipt",
        (1, 2, 3, 4),
        4,
    )
    assert "entries: 1-4 (4)" in "\n".join(result.lines())
    swapped = b"\n".join([PAYLOADS[2], PAYLOADS[1], PAYLOADS[3], PAYLOADS[4]])
    with pytest.raises(VerificationError, match=r"receipt\.entries\[0\]: payload"):
        verify_file(receipt_bytes(1, 2, 3, 4, batch=True), VKEY, payload=swapped)


def test_ndjson_receipts_match_payload_lines_in_order() -> None:
    data = receipt_bytes(1, 2, batch=True) + b"\n" + receipt_bytes(3) + b"\n"
    result = verify_file(data, VKEY, payload=b"\n".join(PAYLOADS[1:4]))
    assert (result.kind, result.indexes, result.payloads_checked) == ("receipts", (1, 2, 3), 3)
    with pytest.raises(VerificationError, match="the payload file has 2 lines for 3 receipt"):
        verify_file(data, VKEY, payload=b"\n".join(PAYLOADS[1:3]))
    bad = (
        receipt_bytes(1, 2, batch=True)
        + b"\n"
        + receipt_bytes(3).replace(b'"index": 3', b'"index": 4')
    )
    with pytest.raises(VerificationError, match="receipts line 2: receipt"):
        verify_file(bad, VKEY)


def test_ndjson_lines() -> None:
    assert ndjson_lines(b'{"a":1}\r\n\n  \n[2]\n') == [b'{"a":1}', b"[2]"]
    with pytest.raises(MalformedError, match="input line 2: not JSON"):
        ndjson_lines(b"{}\nnope\n")


def test_promise() -> None:
    result = verify_file(PROMISE, VKEY, payload=PAYLOADS[4])
    assert result.kind == "promise" and result.size is None and result.payloads_checked == 1
    with pytest.raises(VerificationError, match="promise: payload"):
        verify_file(PROMISE, VKEY, payload=b"x")
    bad = PROMISE.replace(b'"deadline": ', b'"deadline": 1')
    with pytest.raises(VerificationError, match="promise note deadline"):
        verify_file(bad, VKEY)


def test_proof_file_with_entry_file() -> None:
    result = verify_file(proof_bytes(4), VKEY, entry=entry_bytes(4))
    assert (result.kind, result.indexes, result.payloads_checked) == ("proof", (4,), 1)
    assert verify_file(proof_bytes(3), VKEY, payload=PAYLOADS[3]).payloads_checked == 1
    with pytest.raises(VerificationError, match="give the entry file with its salt"):
        verify_file(proof_bytes(4), VKEY, payload=PAYLOADS[4])
    with pytest.raises(VerificationError, match=r"entry\.index differs"):
        verify_file(proof_bytes(4), VKEY, entry=entry_bytes(5))
    with pytest.raises(VerificationError, match=r"proof file \(index 4\): payload"):
        verify_file(proof_bytes(4), VKEY, entry=entry_bytes(4, payload="eA=="))
    with pytest.raises(VerificationError, match="an entry file proves nothing alone"):
        verify_file(entry_bytes(4), VKEY)


def test_checkpoint() -> None:
    result = verify_file(CHECKPOINT, VKEY)
    assert (result.kind, result.size, result.root_hash) == ("checkpoint", SIZE, TREE.root())
    with pytest.raises(VerificationError, match="not a receipt, promise, bundle"):
        verify_file(b"hello\n", VKEY)


def test_bundle_plain_and_gzip() -> None:
    for data in (bundle_bytes(), bundle_bytes(compress=True)):
        result = verify_file(data, VKEY)
        assert result.kind == "bundle" and result.bundle is not None
        assert (result.bundle.start, result.bundle.end, result.bundle.payloads) == (2, 7, 5)
    text = "\n".join(verify_file(bundle_bytes(), VKEY).lines())
    assert "complete: entries [2, 7) are every entry of the period in the tree of size 10" in text
    assert "closed: a later entry is past the period" in text
    with pytest.raises(VerificationError, match="a payload cannot be checked against a bundle"):
        verify_file(bundle_bytes(), VKEY, payload=b"x")


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        (receipt_bytes(4).replace(b'"index": 4', b'"index": 5'), InvalidProofError,
         r"receipt\.inclusion_proof: inclusion proof for index 5 does not match"),
        (receipt_bytes(4).replace(b'"timestamp": ', b'"timestamp": 1'), VerificationError,
         r"receipt\.timestamp \d+ differs from the leaf's"),
        (receipt_bytes(4).replace(b"\\n10\\n", b"\\n11\\n"), VerificationError,
         r"receipt\.checkpoint: .*signature"),
        (receipt_bytes(4).replace(b'"salt": "', b'"salt": "x'), VerificationError,
         r"malformed input: receipt\.salt"),
        (proof_bytes(4).replace(b"index 4", b"index 5"), InvalidProofError,
         r"proof file: inclusion proof for index 5 does not match the root of size 10"),
        (proof_bytes(4).replace(b"extra AQ", b"extra AA"), VerificationError,
         r"proof file: inclusion proof for index 4 does not match"),
        (proof_bytes(4).replace(b"c2sp.org/tlog-proof@v1\n", b"c2sp.org/tlog-proof@v1\n\n"),
         VerificationError, r"malformed input: proof file: missing the index line"),
        (bundle_bytes().replace(f'"to": {TS + 6}'.encode(), b'"to": 5'), VerificationError,
         r"malformed input: bundle\.claims: from \d+ is after to"),
        (bundle_bytes().replace(b'"start": 2', b'"start": 1', 1), VerificationError,
         r"bundle\.entries: index_range \[1, 7\) needs 6 entries, got 5"),
        (CHECKPOINT.replace(ORIGIN.encode(), b"other.example/log"), UnknownKeyError,
         r"checkpoint: checkpoint has no signature by log key"),
    ],
    ids=[
        "receipt-index", "receipt-timestamp", "receipt-checkpoint", "receipt-salt",
        "proof-index", "proof-leaf", "proof-format", "bundle-period", "bundle-range",
        "checkpoint-origin",
    ],
)  # fmt: skip
def test_tampered_files_fail_precisely(data: bytes, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        verify_file(data, VKEY)


def test_witness_policy_is_applied_never_skipped() -> None:
    witness = CosignatureSigner.generate("w.example")
    policy = parse_policy(f"log {VKEY}\nwitness w {witness.vkey}\nquorum w\n")
    with pytest.raises(VerificationError, match=r"receipt\.checkpoint: witness policy not"):
        verify_file(receipt_bytes(4), VKEY, policy=policy)
    with pytest.raises(VerificationError, match="a promise carries no checkpoint"):
        verify_file(PROMISE, VKEY, policy=policy)
    cosigned = sign_checkpoint(Checkpoint(ORIGIN, SIZE, TREE.root()), SIGNER, witness)
    assert verify_file(cosigned, VKEY, policy=policy).cosigners == {"w"}
    other = parse_policy(f"log {NoteSigner.generate('x.example').vkey}\nquorum none\n")
    with pytest.raises(ConfigError, match="does not list log"):
        verify_file(cosigned, VKEY, policy=other)


# -- translog verify: sockets disabled, network stack absent ----------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("offline verification tried to open a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {
        "receipt.json": receipt_bytes(4),
        "e4.tlog-proof": proof_bytes(4),
        "e4.entry.json": entry_bytes(4),
        "period.bundle.json.gz": bundle_bytes(compress=True),
        "payload.bin": PAYLOADS[4],
        "vkey": (VKEY + "\n").encode(),
    }
    for name, data in out.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in out}


def test_sockets_are_really_disabled(no_network: None) -> None:
    with pytest.raises(AssertionError, match="tried to open a socket"):
        socket.create_connection(("127.0.0.1", 9))


@pytest.mark.parametrize(
    "argv",
    [
        ["receipt.json", "--payload", "payload.bin"],
        ["e4.tlog-proof", "--entry", "e4.entry.json"],
        ["period.bundle.json.gz"],
    ],
    ids=["receipt", "proof", "bundle"],
)
def test_cli_verify_offline(
    argv: list[str],
    files: dict[str, Path],
    no_network: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(files[a]) if a in files else a for a in argv]
    assert cli.main(["verify", *args, "--vkey-file", str(files["vkey"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ") and ORIGIN in out


def test_cli_verify_tampered_exits_3_with_the_reason(
    files: dict[str, Path], no_network: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = files["receipt.json"]
    path.write_bytes(path.read_bytes().replace(b'"index": 4', b'"index": 5'))
    assert cli.main(["verify", str(path), "--vkey", VKEY]) == 3
    err = capsys.readouterr().err
    assert "translog: verification failed: receipt.inclusion_proof: inclusion proof" in err


def test_cli_verify_exit_codes(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    receipt = str(files["receipt.json"])
    assert cli.main(["verify", receipt, "--vkey", "nonsense"]) == 1
    assert cli.main(["verify", str(files["vkey"].with_name("missing")), "--vkey", VKEY]) == 1
    assert "couldn't read file" in capsys.readouterr().err
    assert cli.main(["verify", receipt]) == 2  # no vkey
    assert cli.main(["verify", receipt, "--vkey", VKEY, "--payload", str(files["vkey"])]) == 3


def test_offline_modules_import_no_network_stack() -> None:
    code = (
        "import translog.formats.verify, translog.formats.bundle_verify, sys; "
        "print([m for m in ('aiohttp','lmdb') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_verify_runs_without_aiohttp_and_lmdb_installed(files: dict[str, Path]) -> None:
    # None in sys.modules makes any import of these packages fail, as if not installed.
    code = (
        "import sys\n"
        "sys.modules['aiohttp'] = None\n"
        "sys.modules['lmdb'] = None\n"
        "from translog.cli.command import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    for name in ("receipt.json", "e4.tlog-proof", "period.bundle.json.gz"):
        argv = ["verify", str(files[name]), "--vkey", VKEY]
        out = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("ok: ")
