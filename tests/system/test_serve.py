"""``translog serve`` as a subprocess: crash (SIGKILL) and restart, graceful SIGTERM, key modes.

The log is created with ``translog init`` and ``translog token create`` run as subprocesses.
The tests wait for the ready file (which holds the bound port) instead of sleeping, and keep
every acknowledged receipt or promise. After a crash the restarted server must still hold
each acknowledged entry at its index, provably, in a tree consistent with every checkpoint it
signed before the crash; after SIGTERM it must exit 0 with a final checkpoint covering
everything acknowledged. Stored state is checked through the read API while the server runs
and, once it is down, by opening the LMDB environment read-only and by ``translog fsck``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import (
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from translog.core.vkey import parse_vkey
from translog.formats.receipt import parse_receipt, verify_promise, verify_receipt
from translog.storage.lmdb import LMDBStorage

pytestmark = pytest.mark.system

ORIGIN = "system.example/log"
READY_TIMEOUT = 20.0


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m translog ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "translog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


@dataclass
class Log:
    """A data directory made by ``translog init``, with a submit token."""

    data: Path
    vkey: str
    token: str


@pytest.fixture
def log(tmp_path: Path) -> Log:
    data = tmp_path / "data"
    out = cli("init", "--data", str(data), "--origin", ORIGIN).stdout
    vkey = out.strip().splitlines()[-1]
    token = cli("token", "create", "--data", str(data), "--name", "system").stdout.strip()
    return Log(data, vkey, token)


@dataclass
class Server:
    """One ``translog serve`` process."""

    log: Log
    workdir: Path
    name: str
    workers: int = 0
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def ready_file(self) -> Path:
        return self.workdir / f"{self.name}.ready"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self, stream: str) -> str:
        return (self.workdir / f"{self.name}.{stream}").read_text(errors="replace")

    async def start(self) -> None:
        argv = [sys.executable, "-m", "translog", "serve", "--data", str(self.log.data)]
        argv += ["--listen", "127.0.0.1:0", "--ready-file", str(self.ready_file)]
        argv += ["--workers", str(self.workers)]
        with (
            open(self.workdir / f"{self.name}.stdout", "wb") as out,
            open(self.workdir / f"{self.name}.stderr", "wb") as err,
        ):
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}: {self.output('stderr')}")
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in {READY_TIMEOUT} s: {self.output('stderr')}")
            await asyncio.sleep(0.02)
        self.port = int(self.ready_file.read_text())

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    started: list[Server] = []

    def make(log: Log, name: str, workers: int = 0) -> Server:
        server = Server(log, tmp_path, name, workers)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill_if_running()


@dataclass
class Acked:
    """Everything the server acknowledged: receipts (with their payloads) and promises."""

    receipts: list[tuple[dict[str, Any], list[bytes]]] = field(default_factory=list)
    promises: list[dict[str, Any]] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(len(p) for _, p in self.receipts) + len(self.promises)


async def submitter(
    session: aiohttp.ClientSession, server: Server, worker: int, acked: Acked, stop: asyncio.Event
) -> None:
    """Submit until stopped or the server goes away; record every complete 2xx answer."""
    headers = {"Authorization": f"Bearer {server.log.token}"}
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if worker == 0:
                payloads = [b"batch %d.%d" % (n, i) for i in range(1000)]
                body = "\n".join(json.dumps(base64.b64encode(p).decode()) for p in payloads)
                h = {**headers, "Content-Type": "application/x-ndjson"}
                async with session.post(f"{server.url}/add-batch", data=body, headers=h) as r:
                    if r.status == 200:
                        acked.receipts.append((await r.json(), payloads))
            elif worker == 1:
                payload = b"promise %d" % n
                async with session.post(
                    f"{server.url}/add?wait=0", data=payload, headers=headers
                ) as r:
                    if r.status == 202:
                        acked.promises.append(await r.json())
            else:
                payload = b"worker %d entry %d" % (worker, n)
                h = {**headers, "Idempotency-Key": f"w{worker}-{n // 2}"} if n % 5 == 0 else headers
                async with session.post(f"{server.url}/add", data=payload, headers=h) as r:
                    if r.status == 200:
                        body = await r.json()
                        acked.receipts.append((body, [] if body["duplicate"] else [payload]))
        except (TimeoutError, aiohttp.ClientError):
            return


async def load(server: Server, until: Any, workers: int = 8) -> Acked:
    """Run submitters until ``until(acked)`` returns, then stop them; return what was acked."""
    acked = Acked()
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(submitter(session, server, w, acked, stop)) for w in range(workers)
        ]
        await until(acked)
        stop.set()
        await asyncio.gather(*tasks)
    return acked


async def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def check_offline(log: Log, acked: Acked) -> None:
    """Every acknowledged receipt and promise verifies with only the vkey."""
    for body, payloads in acked.receipts:
        if "entries" in body:
            verify_receipt(body, log.vkey, payloads=payloads)
        else:
            verify_receipt(body, log.vkey, payloads[0] if payloads else None)
    for promise in acked.promises:
        verify_promise(promise, log.vkey)


def check_stored(log: Log, acked: Acked, *, crashed: bool = False) -> tuple[int, int]:
    """Open LMDB read-only: every acked entry sits at its index, provably, in a tree consistent
    with every acked checkpoint; the final checkpoint covers the whole tree.

    Promises (``wait=0``) are given only once the accepted leaf is recorded durably, and a
    restart re-sequences every recorded one, so no promise may be lost, crash or not.
    Returns (tree size, promises lost), and the caller requires 0 lost.
    """
    storage = LMDBStorage(log.data / "lmdb", readonly=True)
    try:
        size = storage.size()
        root = tree_hash(size, storage)
        verifier = parse_vkey(log.vkey)
        checkpoints: dict[int, bytes] = {}
        for body, _ in acked.receipts:
            receipt = parse_receipt(body)
            cp, _, _ = open_checkpoint(receipt.checkpoint, verifier)
            assert checkpoints.setdefault(cp.size, cp.root_hash) == cp.root_hash, "fork"
            for e in receipt.entries:
                assert storage.get_entries(e.index, e.index + 1)[0].leaf == e.leaf
                verify_inclusion(
                    e.leaf_hash, e.index, size, prove_inclusion(e.index, size, storage), root
                )
        for old_size, old_root in checkpoints.items():
            proof = prove_consistency(old_size, size, storage)
            verify_consistency(old_size, size, old_root, root, proof)
        lost = 0
        for promise in acked.promises:
            if storage.find_leaf_hash(base64.b64decode(promise["leaf_hash"])) is None:
                lost += 1
        latest = storage.latest_checkpoint()
        assert latest is not None
        final, _, _ = open_checkpoint(latest.note, verifier)
        assert final.size == size and final.root_hash == root
        return size, lost
    finally:
        storage.close()


async def check_online(server: Server, acked: Acked) -> None:
    """Through the read API: the published checkpoint extends every acked checkpoint."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.url}/checkpoint") as r:
            assert r.status == 200
            cp, _, _ = open_checkpoint(await r.read(), parse_vkey(server.log.vkey))
        for body, _ in acked.receipts[:: max(1, len(acked.receipts) // 20)]:
            receipt = parse_receipt(body)
            old, _, _ = open_checkpoint(receipt.checkpoint, parse_vkey(server.log.vkey))
            query = f"first={old.size}&second={cp.size}"
            async with session.get(f"{server.url}/ct/v1/get-sth-consistency?{query}") as r:
                assert r.status == 200, await r.text()
                proof = [base64.b64decode(h) for h in (await r.json())["consistency"]]
            verify_consistency(old.size, cp.size, old.root_hash, cp.root_hash, proof)
            e = receipt.entries[0]
            query = f"leaf_index={e.index}&tree_size={cp.size}"
            async with session.get(f"{server.url}/ct/v1/get-entry-and-proof?{query}") as r:
                got = await r.json()
            assert base64.b64decode(got["leaf_input"]) == e.leaf
            path = [base64.b64decode(h) for h in got["audit_path"]]
            verify_inclusion(e.leaf_hash, e.index, cp.size, path, cp.root_hash)


def children(pid: int) -> set[int]:
    """Live processes whose parent is ``pid`` (from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.parametrize("workers", [0, 2])
async def test_sigkill_then_restart_keeps_every_acknowledged_entry(
    log: Log, servers: Any, workers: int
) -> None:
    first = servers(log, "first", workers)
    await first.start()
    assert f"translog serving {ORIGIN} at {first.url}" in first.output("stdout")
    assert first.proc is not None
    helpers = children(first.proc.pid)
    assert len(helpers) == workers

    async def kill_mid_stream(acked: Acked) -> None:
        await wait_for(lambda: acked.entries >= 2500 and len(acked.promises) >= 5)
        assert first.proc is not None
        first.proc.kill()  # SIGKILL while requests are in flight
        first.proc.wait(timeout=10)

    acked = await load(first, kill_mid_stream)
    assert first.proc is not None and first.proc.returncode == -signal.SIGKILL
    # Workers notice at once that the log process is gone and exit.
    await wait_for(lambda: not any(alive(pid) for pid in helpers), timeout=10)
    check_offline(log, acked)

    second = servers(log, "second", workers)
    await second.start()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {log.token}"}
        async with session.post(
            f"{second.url}/add?wait=published", data=b"after", headers=headers
        ) as r:
            assert r.status == 200
            after = await r.json()
    acked.receipts.append((after, [b"after"]))
    assert after["index"] >= max(parse_receipt(b).entries[-1].index for b, _ in acked.receipts[:-1])
    await check_online(second, acked)
    assert second.stop(signal.SIGTERM) == 0

    size, lost = check_stored(log, acked, crashed=True)
    assert lost == 0, f"{lost} of {len(acked.promises)} promises were broken by the crash"
    assert size >= acked.entries - sum(1 for _, p in acked.receipts if not p)
    fsck = cli("fsck", "--data", str(log.data), "-q", check=False)
    assert fsck.returncode == 0, fsck.stderr
    assert log.token not in first.output("stderr") + second.output("stderr")


@pytest.mark.parametrize("workers", [0, 2])
async def test_sigterm_drains_and_publishes_a_final_checkpoint(
    log: Log, servers: Any, workers: int
) -> None:
    server = servers(log, "term", workers)
    await server.start()
    codes: list[int] = []

    async def terminate_mid_stream(acked: Acked) -> None:
        await wait_for(lambda: acked.entries >= 1500 and len(acked.promises) >= 5)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        codes.append(await asyncio.get_running_loop().run_in_executor(None, server.proc.wait, 30))

    acked = await load(server, terminate_mid_stream)
    assert codes == [0], server.output("stderr")
    assert not server.ready_file.exists(), "the ready file is removed once serving stops"
    check_offline(log, acked)
    size, _ = check_stored(log, acked)  # every promise was kept; final checkpoint = size
    assert size >= 1500
    stderr = server.output("stderr")
    assert "SIGTERM: draining accepted entries" in stderr
    assert f"stopped; final checkpoint size {size}" in stderr
    access = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert access and {"method", "path", "status", "duration_ms"} <= set(access[0])
    assert log.token not in stderr


async def test_sigterm_on_an_idle_server_exits_0(log: Log, servers: Any) -> None:
    server = servers(log, "idle")
    await server.start()
    assert server.stop(signal.SIGINT) == 0
    await server.start()
    assert server.stop(signal.SIGTERM) == 0
    storage = LMDBStorage(log.data / "lmdb", readonly=True)
    try:
        latest = storage.latest_checkpoint()
        assert latest is not None and latest.size == 0
    finally:
        storage.close()


@pytest.mark.parametrize("key", ["log.key", "ct.key"])
def test_a_readable_private_key_stops_serve(log: Log, tmp_path: Path, key: str) -> None:
    os.chmod(log.data / "keys" / key, 0o644)
    ready = tmp_path / "ready"
    argv = ["serve", "--data", str(log.data), "--listen", "127.0.0.1:0", "--ready-file", str(ready)]
    result = cli(*argv, check=False)
    assert result.returncode == 1
    assert f"chmod 600 {log.data / 'keys' / key}" in result.stderr
    assert not ready.exists()


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_busy_port_is_an_error(log: Log, tmp_path: Path, workers: str) -> None:
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        argv = ["--listen", f"127.0.0.1:{port}", "--workers", workers]
        result = cli("serve", "--data", str(log.data), *argv, check=False)
    assert result.returncode == 1
    assert f"couldn't listen on 127.0.0.1:{port}" in result.stderr
