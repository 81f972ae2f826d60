"""``SyncLogClient`` against a real ``translog serve`` subprocess, with a persistent state file.

The log is made with ``translog init`` and ``translog token create``; the server is started
with ``--listen 127.0.0.1:0 --ready-file`` and the test waits for the ready file. The round trip
submits an entry and a batch, reads the checkpoint and an entry, and writes a proof file that is
then verified offline. After a restart the same state file must accept the log again (it is
consistent with what was verified before), and ``translog serve`` must exit 0 on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from translog.client import SyncLogClient
from translog.core.vkey import parse_vkey
from translog.formats.proof import format_proof, parse_proof, verify_proof
from translog.formats.receipt import verify_receipt

pytestmark = pytest.mark.system

ORIGIN = "client-system.example/log"
READY_TIMEOUT = 20.0


def cli(*args: str) -> str:
    """Run ``python -m translog ARGS``; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "translog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


class Serve:
    """One ``translog serve`` process over a data directory."""

    def __init__(self, data: Path, workdir: Path) -> None:
        self.data = data
        self.ready = workdir / "serve.ready"
        self.stderr = workdir / "serve.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "translog", "serve", "--data", str(self.data)]
        argv += ["--listen", "127.0.0.1:0", "--ready-file", str(self.ready)]
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}: {self.stderr.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in {READY_TIMEOUT} s: {self.stderr.read_text()}")
            time.sleep(0.02)
        self.port = int(self.ready.read_text())

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def log_dir(tmp_path: Path) -> tuple[Path, str, str]:
    """(data directory, vkey, token with submit and read scopes)."""
    data = tmp_path / "data"
    vkey = cli("init", "--data", str(data), "--origin", ORIGIN).strip().splitlines()[-1]
    token = cli(
        "token", "create", "--data", str(data), "--name", "client", "--scope", "submit",
        "--scope", "read",
    ).strip()  # fmt: skip
    return data, vkey, token


@pytest.fixture
def serve(tmp_path: Path, log_dir: tuple[Path, str, str]) -> Iterator[Serve]:
    server = Serve(log_dir[0], tmp_path)
    yield server
    server.kill_if_running()


def test_sync_client_round_trip_against_translog_serve(
    tmp_path: Path, log_dir: tuple[Path, str, str], serve: Serve
) -> None:
    _, vkey, token = log_dir
    state = tmp_path / "state.json"
    serve.start()
    with SyncLogClient(
        serve.url, vkey, token=token, read_token=token, state_path=state, timeout=10
    ) as client:
        single = client.submit(b"system test: single entry")
        batch = client.submit_batch([f"system test: batch {i}".encode() for i in range(10)])
        proof = client.prove(batch.entries[-1].index)  # waits for the 1 s publisher
        cp = client.checkpoint()
        entry = client.entry(single.entries[0].index)
    verify_receipt(single, vkey, b"system test: single entry")
    assert [e.index for e in batch.entries] == list(range(1, 11))
    assert cp.size == 11 and entry["payload"] == b"system test: single entry"

    proof_file = tmp_path / "entry-10.tlog-proof"
    proof_file.write_bytes(format_proof(proof))
    verified = verify_proof(parse_proof(proof_file.read_bytes()), parse_vkey(vkey))
    assert verified.size >= 11 and parse_proof(proof_file.read_bytes()).index == 10
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] == 11

    assert serve.stop() == 0
    serve.start()  # a restarted log is still consistent with the stored checkpoint
    with SyncLogClient(serve.url, vkey, token=token, state_path=state, timeout=10) as client:
        again = client.submit(b"after restart")
        assert client.checkpoint().size >= 11
    assert again.entries[0].index == 11
    assert serve.stop() == 0
