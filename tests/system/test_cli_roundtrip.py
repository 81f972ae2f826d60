"""The client commands against a real ``translog serve`` subprocess, each run as a subprocess.

One server (``translog init`` + ``token create`` + ``serve --listen 127.0.0.1:0``) serves the
module. Every command runs as ``python -m translog ...``, exactly as an operator or auditor
would run it; the offline ``verify`` is given only files and the vkey.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.signing import NoteSigner
from translog.formats.verify import iso_ms
from translog.keyfile import read_private_file

pytestmark = pytest.mark.system

ORIGIN = "cli.example/audit"
READY_TIMEOUT = 20.0


def translog(
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m translog ARGS`` to completion (text output)."""
    return subprocess.run(
        [sys.executable, "-m", "translog", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr}"
    return proc


@dataclass
class Served:
    """A running log: where it is, its vkey file and tokens."""

    url: str
    data: Path
    vkey: str
    vkey_file: Path
    token: str
    read_token: str
    work: Path

    def log_args(self) -> list[str]:
        return ["--url", self.url, "--vkey-file", str(self.vkey_file)]

    def published_size(self) -> int:
        with urllib.request.urlopen(f"{self.url}/checkpoint", timeout=5) as resp:
            return int(resp.read().split(b"\n")[1])

    def wait_published(self, size: int) -> None:
        deadline = time.monotonic() + 10
        while self.published_size() < size:
            assert time.monotonic() < deadline, f"size {size} not published in 10 s"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("cli")
    data = work / "data"
    vkey = ok(translog("init", "--data", str(data), "--origin", ORIGIN)).stdout.split("\n")[-2]
    token = ok(translog("token", "create", "--data", str(data), "--name", "ci")).stdout.strip()
    read = ["--scope", "read"]
    read_token = ok(translog("token", "create", "--data", str(data), "--name", "r", *read))
    vkey_file = work / "log.vkey"
    vkey_file.write_text(vkey + "\n")
    ready = work / "ready"
    argv = [sys.executable, "-m", "translog", "serve", "--data", str(data)]
    argv += ["--listen", "127.0.0.1:0", "--ready-file", str(ready)]
    with open(work / "serve.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            assert proc.poll() is None, (work / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve not ready"
            time.sleep(0.02)
        url = f"http://127.0.0.1:{int(ready.read_text())}"
        yield Served(url, data, vkey, vkey_file, token, read_token.stdout.strip(), work)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def submit(
    served: Served, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"TRANSLOG_TOKEN": served.token}
    return ok(translog("submit", *served.log_args(), *args, stdin=stdin, env=env))


def verify(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return translog("verify", *args, "--vkey", served.vkey)


# -- submit and verify -----------------------------------------------------------------------


def test_submit_a_file_and_verify_the_receipt_offline(served: Served, tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(b'{"action":"user.login","actor":"alice"}')
    receipt = tmp_path / "receipt.json"
    submit(served, str(event), "-o", str(receipt))
    body = json.loads(receipt.read_text())
    assert body["format"] == "translog-receipt/v1" and "salt" in body
    out = ok(verify(served, str(receipt), "--payload", str(event))).stdout
    assert out.startswith(f"ok: receipt for log {ORIGIN}\n")
    assert "payloads verified: 1" in out
    # From stdin, inline, to stdout.
    stdout = submit(served, "--kind", "inline", "-", stdin=b'{"action":"deploy"}').stdout
    assert json.loads(stdout)["leaf"]
    # Tampered: a precise reason and exit 3.
    receipt.write_text(receipt.read_text().replace('"duplicate": false', '"duplicate": 0'))
    bad = verify(served, str(receipt))
    assert bad.returncode == 3
    assert "verification failed: malformed input: receipt.duplicate: expected true or false" in (
        bad.stderr
    )
    wrong = verify(served, str(tmp_path / "receipt.json"), "--payload", str(receipt))
    assert wrong.returncode == 3


def test_submit_ndjson_in_batches_with_progress(served: Served, tmp_path: Path) -> None:
    events = tmp_path / "events.ndjson"
    events.write_text("".join(json.dumps({"n": i, "action": "read"}) + "\n" for i in range(10)))
    receipts = tmp_path / "receipts.ndjson"
    proc = submit(served, "--ndjson", "--batch-size", "4", str(events), "-o", str(receipts))
    assert "submit: 10/10 (100.0%)" in proc.stderr
    lines = receipts.read_text().splitlines()
    assert [len(json.loads(x)["entries"]) for x in lines] == [4, 4, 2]
    out = ok(verify(served, str(receipts), "--payload", str(events))).stdout
    assert out.startswith("ok: receipts for log") and "payloads verified: 10" in out
    # A batch the log refuses: the receipts of the batches before it are kept.
    big = json.dumps({"blob": "x" * 70_000})
    events.write_text(f'{{"n": 1}}\n{{"n": 2}}\n{big}\n')
    args = [*served.log_args(), "--ndjson", "--kind", "inline", "--batch-size", "2"]
    env = {"TRANSLOG_TOKEN": served.token}
    proc = translog("submit", *args, str(events), "-o", str(receipts), env=env)
    assert proc.returncode == 1, proc.stderr
    assert f"the first 2 of 3 entries were submitted; their receipts are in {receipts}" in (
        proc.stderr
    )
    assert len(receipts.read_text().splitlines()) == 1
    bad_input = tmp_path / "bad.ndjson"
    bad_input.write_text('{"ok": 1}\nnot json\n')
    proc = translog("submit", *served.log_args(), "--ndjson", str(bad_input))
    assert proc.returncode == 1 and "line 2: not JSON" in proc.stderr


# -- prove ----------------------------------------------------------------------------------


def test_prove_by_index_and_by_leaf_hash(served: Served, tmp_path: Path) -> None:
    payload = tmp_path / "event.json"
    payload.write_bytes(b'{"action":"role.grant","role":"admin"}')
    receipt = json.loads(submit(served, str(payload)).stdout)
    index = receipt["index"]
    proof = tmp_path / "e.tlog-proof"
    # Without a read token the payload is withheld, and the proof still verifies.
    args = [*served.log_args(), "--index", str(index), "-o", str(proof)]
    out = ok(translog("prove", *args)).stdout
    assert f"entry {index} (committed" in out and "payload withheld" in out
    entry = json.loads((tmp_path / "e.entry.json").read_text())
    assert entry["payload_status"] == "withheld" and "salt" not in entry
    assert proof.read_text().startswith(f"c2sp.org/tlog-proof@v1\nextra {receipt['leaf']}\n")
    ok(verify(served, str(proof)))
    # With one, by leaf hash: payload and salt come along and verify.
    entry_file = tmp_path / "entry.json"
    args = [*served.log_args(), "--leaf-hash", receipt["leaf_hash"], "-o", str(proof)]
    ok(translog("prove", *args, "--read-token", served.read_token, "--entry-out", str(entry_file)))
    assert json.loads(entry_file.read_text())["payload_status"] == "present"
    out = ok(verify(served, str(proof), "--entry", str(entry_file))).stdout
    assert f"entries: {index} (1)" in out and "payloads verified: 1" in out
    # Tampered proof file: another leaf in the extra line.
    leaf = bytearray(base64.b64decode(receipt["leaf"]))
    leaf[-1] ^= 1
    forged = base64.b64encode(bytes(leaf)).decode()
    proof.write_text(proof.read_text().replace(receipt["leaf"], forged))
    bad = verify(served, str(proof))
    assert bad.returncode == 3
    assert f"proof file: inclusion proof for index {index} does not match" in bad.stderr
    args = [*served.log_args(), "--timeout", "1", "--index", "999999", "-o", str(proof)]
    missing = translog("prove", *args)
    assert missing.returncode == 1 and "entry 999999 is not in the latest checkpoint" in (
        missing.stderr
    )


# -- checkpoints and consistency -------------------------------------------------------------


def test_checkpoint_twice_with_state_then_consistency(served: Served, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = ok(translog("checkpoint", *served.log_args(), "--state", str(state)))
    old = tmp_path / "old.checkpoint"
    old.write_text(first.stdout)
    assert first.stdout.startswith(f"{ORIGIN}\n") and "verified checkpoint: size" in first.stderr
    old_size = int(first.stdout.split("\n")[1])
    submit(served, "-", stdin=b'{"action":"config.change"}')
    served.wait_published(old_size + 1)
    second = ok(translog("checkpoint", *served.log_args(), "--state", str(state)))
    assert int(second.stdout.split("\n")[1]) > old_size
    assert f"checked against state file {state}" in second.stderr
    out = ok(translog("consistency", *served.log_args(), str(old))).stdout
    assert out.startswith(f"consistent: checkpoint size {old_size} is a prefix of the current")


def _forge(served: Served, size: int, root: bytes) -> bytes:
    signer = NoteSigner.from_skey(read_private_file(served.data / "keys" / "log.key").decode())
    return sign_checkpoint(Checkpoint(ORIGIN, size, root), signer)


def test_a_forged_larger_checkpoint_in_the_state_exits_4_with_evidence(
    served: Served, tmp_path: Path
) -> None:
    note = _forge(served, 10_000, b"\x07" * 32)
    state = tmp_path / "state.json"
    entry = {"size": 10_000, "root_hash": base64.b64encode(b"\x07" * 32).decode()}
    state.write_text(json.dumps({"logs": {ORIGIN: {**entry, "note": note.decode()}}}))
    evidence_dir = tmp_path / "evidence"
    args = [*served.log_args(), "--state", str(state), "--evidence-dir", str(evidence_dir)]
    proc = translog("checkpoint", *args)
    assert proc.returncode == 4
    assert "translog: inconsistency detected: rollback: the log presents tree size" in proc.stderr
    [path] = evidence_dir.glob("translog-evidence-cli.example_audit-*.json")
    evidence = json.loads(path.read_text())
    assert evidence["format"] == "translog-evidence/v1"
    assert evidence["older"] == note.decode() and evidence["newer"].startswith(f"{ORIGIN}\n")
    assert f"evidence written to {path}" in proc.stderr
    assert '"format": "translog-evidence/v1"' in proc.stderr


def test_consistency_with_a_forked_checkpoint_exits_4(served: Served, tmp_path: Path) -> None:
    size = served.published_size()
    old = tmp_path / "forked.checkpoint"
    old.write_bytes(_forge(served, size, b"\x05" * 32))
    proc = translog("consistency", *served.log_args(), str(old), cwd=tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert f"two different roots for tree size {size}" in proc.stderr
    assert len(list(tmp_path.glob("translog-evidence-*.json"))) == 1


# -- export ----------------------------------------------------------------------------------


def test_export_a_period_and_verify_the_bundle(served: Served, tmp_path: Path) -> None:
    before = ok(translog("checkpoint", *served.log_args())).stdout
    earlier = tmp_path / "earlier.checkpoint"
    earlier.write_text(before)
    events = tmp_path / "period.ndjson"
    events.write_text("".join(json.dumps({"period": i}) + "\n" for i in range(6)))
    receipts = submit(served, "--ndjson", str(events)).stdout.splitlines()
    entries = json.loads(receipts[0])["entries"]
    first, last = entries[0], entries[-1]
    served.wait_published(last["index"] + 1)
    bundle = tmp_path / "period.bundle.json.gz"
    period = ["--from", iso_ms(first["timestamp"]), "--to", str(last["timestamp"])]
    args = [*served.log_args(), *period, "-o", str(bundle), "--checkpoint", str(earlier)]
    proc = ok(translog("export", *args, "--read-token", served.read_token))
    assert proc.stdout.startswith(f"wrote {bundle}: entries [") and "6 committed" in proc.stdout
    assert "export: leaves:" in proc.stderr
    out = ok(verify(served, str(bundle))).stdout
    assert out.startswith(f"ok: bundle for log {ORIGIN}\n")
    assert "complete: entries [" in out and "payloads verified 6 (0 inline)" in out
    assert f"checkpoints: sizes {int(before.split(chr(10))[1])}, " in out
    # Without the read token committed payloads are withheld; the bundle still verifies.
    plain = tmp_path / "plain.bundle.json"
    ok(translog("export", *served.log_args(), *period, "-o", str(plain)))
    obj = json.loads(plain.read_text())
    assert {e["payload_status"] for e in obj["entries"]} == {"withheld"}
    assert "withheld 6" in ok(verify(served, str(plain))).stdout
    # Leaving an entry out is caught.
    del obj["entries"][2]
    obj["index_range"]["end"] -= 1
    plain.write_text(json.dumps(obj))
    bad = verify(served, str(plain))
    assert bad.returncode == 3 and "bundle.entries[2].index is" in bad.stderr
    bad_time = translog("export", *served.log_args(), "--from", "yesterday", "--to", "0", "-o", "x")
    assert bad_time.returncode == 1 and "--from: 'yesterday' is not RFC 3339" in bad_time.stderr
