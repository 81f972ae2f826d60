"""Reliability harness shared by the bounded tests (``make test``) and ``scripts/soak.py``.

* :func:`make_log` creates a data directory with ``translog init`` and a submit+read token
  (subprocesses, as an operator would), and :func:`set_config` edits its ``translog.toml``.
* :class:`ServerProcess` runs ``translog serve`` as a subprocess, waits for its ready file,
  and kills or stops it; it reads the server's RSS from ``/proc``.
* :class:`CrashHarness` drives concurrent submissions (single ``/add`` with an
  ``Idempotency-Key``, ``/add-batch`` with a key per entry, and ``?wait=0`` promises), retries
  every unacknowledged request with the *same* keys after connection errors and pushback, and
  SIGKILLs the server at random moments. After each kill it runs ``translog fsck`` on the
  dead server's data, restarts the server and checks, through the read API only, that every
  acknowledged entry is at its index with a valid inclusion proof from the server, that the
  tree (downloaded incrementally as entry bundles) has the root of the signed checkpoint,
  that every checkpoint seen so far (receipts and ``/checkpoint``, across restarts) is a
  prefix of it, and that no payload appears twice. :class:`CrashReport` holds the counts.

Payloads are inline (``kind=inline``), unique per logical entry, so the tree itself says
which payload went where: a second copy of a payload is a duplicate, an acknowledged payload
missing from its index is lost.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from translog.checkpoint import Checkpoint, open_checkpoint
from translog.leaf import decode_leaf
from translog.merkle import MemoryHashes, leaf_hash, tree_hash, verify_consistency, verify_inclusion
from translog.receipt import parse_receipt, verify_promise, verify_receipt
from translog.signing import NoteVerifier, parse_vkey
from translog.tiles import TILE_WIDTH, TileRef, decode_bundle

ORIGIN = "reliability.example/log"
READY_TIMEOUT = 30.0
PROMISE_WAIT = 12.0
"""Seconds a promised entry may take to appear: the default merge delay (10 s) plus slack."""
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m translog ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "translog", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        cwd=REPO,
    )


@dataclass
class LogDir:
    """A data directory made by ``translog init``, with a submit+read token."""

    data: Path
    vkey: str
    token: str

    @property
    def verifier(self) -> NoteVerifier:
        return parse_vkey(self.vkey)


def make_log(data: Path, *, rate: float = 0.0, config: dict[str, Any] | None = None) -> LogDir:
    """``translog init`` + ``translog token create --scope submit --scope read``."""
    out = cli("init", "--data", str(data), "--origin", ORIGIN).stdout
    vkey = out.strip().splitlines()[-1]
    argv = ["token", "create", "--data", str(data), "--name", "harness"]
    argv += ["--scope", "submit", "--scope", "read", "--rate", str(rate)]
    token = cli(*argv).stdout.strip()
    for key, value in (config or {}).items():
        set_config(data, key, value)
    return LogDir(data, vkey, token)


def set_config(data: Path, dotted: str, value: Any) -> None:
    """Set ``section.key`` in DATA/translog.toml (the file lists every key)."""
    section, key = dotted.split(".")
    path = data / "translog.toml"
    text = path.read_text()
    rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    pattern = re.compile(rf"(\[{section}\][^\[]*?^){key} = .*$", re.M | re.S)
    new, n = pattern.subn(lambda m: f"{m.group(1)}{key} = {rendered}", text)
    if n == 0:  # a key format_config does not write (added later): append it to its section
        new, n = re.subn(rf"^\[{section}\]$", f"[{section}]\n{key} = {rendered}", text, flags=re.M)
    assert n == 1, f"no [{section}] in {path}"
    path.write_text(new)


class ServerProcess:
    """One ``translog serve`` subprocess at a time over a data directory."""

    def __init__(self, log: LogDir, workdir: Path, name: str = "serve") -> None:
        self.log = log
        self.workdir = workdir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        self.scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ready_file(self) -> Path:
        return self.workdir / f"{self.name}.ready"

    def log_path(self, stream: str) -> Path:
        return self.workdir / f"{self.name}.{stream}"

    def output(self, stream: str = "stderr") -> str:
        path = self.log_path(stream)
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, *, listen: str = "127.0.0.1:0", expect_failure: bool = False) -> int:
        """Start and wait until ready; return the port (or the exit code if it failed and
        ``expect_failure``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "translog", "serve", "--data", str(self.log.data)]
        argv += ["--listen", listen, "--ready-file", str(self.ready_file)]
        # Appending keeps the logs of every run (the secrets check reads them all).
        with (
            open(self.log_path("stdout"), "ab") as out,
            open(self.log_path("stderr"), "ab") as err,
        ):
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready_file.exists():
            code = self.proc.poll()
            if code is not None:
                if expect_failure:
                    return code
                raise RuntimeError(f"serve exited with {code}: {self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve not ready in {READY_TIMEOUT} s: {self.output()[-3000:]}")
            time.sleep(0.02)
        if expect_failure:
            raise RuntimeError("serve started although it was expected to fail")
        self.port = int(self.ready_file.read_text())
        return self.port

    def kill(self) -> None:
        """SIGKILL and reap."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def rss_bytes(self) -> int:
        """Resident set size of the server process (VmRSS)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def fsck_ok(log: LogDir) -> tuple[bool, str]:
    """Run ``translog fsck`` on a stopped server's data; (passed, output)."""
    result = cli("fsck", "--data", str(log.data), "-q", check=False)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


# ----------------------------------------------------------------------------- the checker


@dataclass
class Ack:
    """One acknowledged logical entry."""

    payload: bytes
    leaf_hash: bytes
    index: int | None  # None for a promise (the index is not known yet)


@dataclass
class CrashReport:
    """What a crash run did and found."""

    kills: int = 0
    restarts: int = 0
    acked: int = 0
    acked_receipts: int = 0
    acked_promises: int = 0
    lost: int = 0
    duplicates: int = 0
    duplicate_answers: int = 0
    """Entries answered ``duplicate: true`` to a retried key (the retry found the first)."""
    retries: int = 0
    tree_size: int = 0
    checkpoints_checked: int = 0
    proofs_checked: int = 0
    fsck_runs: int = 0
    fsck_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


class TreeChecker:
    """Follows the log through its read API across restarts, incrementally."""

    def __init__(self, log: LogDir) -> None:
        self.log = log
        self.tree = MemoryHashes()
        self.leaves: list[bytes] = []
        self.by_hash: dict[bytes, int] = {}
        self.payload_count: dict[bytes, int] = {}
        self.checkpoints: dict[int, bytes] = {}  # every checkpoint seen: size -> root
        self.checked: set[int] = set()

    def see_checkpoint(self, note: bytes) -> Checkpoint:
        cp, _, _ = open_checkpoint(note, self.log.verifier)
        if self.checkpoints.setdefault(cp.size, cp.root_hash) != cp.root_hash:
            raise AssertionError(f"two checkpoints of size {cp.size} with different roots: fork")
        return cp

    async def catch_up(
        self,
        session: aiohttp.ClientSession,
        url: str,
        acked: list[Ack],
        rng: random.Random,
        promise_wait: float = PROMISE_WAIT,
    ) -> tuple[int, int, int]:
        """Follow the published tree until every acknowledged entry is in it, or until a
        promise's merge delay has passed; check everything on the way.

        A receipt is given only once its entry is durable, so a receipt's entry must be in
        the first checkpoint published after a restart. A promise (``?wait=0``) is kept once
        the entry is in the tree within the merge delay; after a crash the restarted server
        re-sequences it first, so it may land a little after the first checkpoint.
        Returns (lost, duplicates, proofs checked).
        """
        deadline = time.monotonic() + promise_wait
        while True:
            cp = await self._sync(session, url)
            lost_receipts, lost_promises = self._missing(acked)
            if not lost_promises or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        duplicates = sum(n - 1 for n in self.payload_count.values() if n > 1)
        proofs = await self._check_proofs(session, url, acked, cp, rng)
        return lost_receipts + lost_promises, duplicates, proofs

    def _missing(self, acked: list[Ack]) -> tuple[int, int]:
        """(receipts, promises) acknowledged but not in the followed tree."""
        receipts = promises = 0
        for a in acked:
            index = a.index if a.index is not None else self.by_hash.get(a.leaf_hash)
            found = index is not None and index < len(self.leaves)
            if not found or leaf_hash(self.leaves[index]) != a.leaf_hash:  # type: ignore[index]
                if a.index is None:
                    promises += 1
                else:
                    receipts += 1
        return receipts, promises

    async def _sync(self, session: aiohttp.ClientSession, url: str) -> Checkpoint:
        """Fetch the published checkpoint and the new part of the tree; check the prefix."""
        async with session.get(f"{url}/checkpoint") as r:
            assert r.status == 200, f"/checkpoint: {r.status} {await r.text()}"
            cp = self.see_checkpoint(await r.read())
        old = self.tree.size
        assert cp.size >= old, f"the published tree shrank from {old} to {cp.size}"
        if 0 < old < cp.size:
            query = f"first={old}&second={cp.size}"
            async with session.get(f"{url}/ct/v1/get-sth-consistency?{query}") as r:
                assert r.status == 200, await r.text()
                proof = [base64.b64decode(h) for h in (await r.json())["consistency"]]
            verify_consistency(old, cp.size, self.tree.root(), cp.root_hash, proof)
        for tile in range(old // TILE_WIDTH, (cp.size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, cp.size - tile * TILE_WIDTH)
            ref = TileRef(0, tile, width, entries=True)
            async with session.get(f"{url}/{ref.path}") as r:
                assert r.status == 200, f"{ref.path}: {r.status}"
                leaves = decode_bundle(await r.read())
            for i, leaf in enumerate(leaves):
                index = tile * TILE_WIDTH + i
                if index < old:
                    assert leaf == self.leaves[index], f"leaf {index} changed"
                    continue
                h = leaf_hash(leaf)
                self.tree.append(h)
                self.leaves.append(leaf)
                self.by_hash.setdefault(h, index)
                payload = decode_leaf(leaf).payload or b""
                self.payload_count[payload] = self.payload_count.get(payload, 0) + 1
        assert self.tree.root() == cp.root_hash, "downloaded tree does not match the checkpoint"
        for size, root in self.checkpoints.items():
            if size not in self.checked and size <= self.tree.size:
                assert tree_hash(size, self.tree) == root, f"checkpoint {size} is not a prefix"
                self.checked.add(size)
        return cp

    async def _check_proofs(
        self,
        session: aiohttp.ClientSession,
        url: str,
        acked: list[Ack],
        cp: Checkpoint,
        rng: random.Random,
    ) -> int:
        """The server's own inclusion proofs, for a sample of acknowledged entries."""
        present = [
            a
            for a in acked
            if a.index is not None
            and a.index < len(self.leaves)
            and leaf_hash(self.leaves[a.index]) == a.leaf_hash
        ]  # the others are counted as lost already
        sample = rng.sample(present, min(len(present), 16))
        for a in sample:
            assert a.index is not None
            query = f"leaf_index={a.index}&tree_size={cp.size}"
            async with session.get(f"{url}/ct/v1/get-entry-and-proof?{query}") as r:
                assert r.status == 200, await r.text()
                got = await r.json()
            path = [base64.b64decode(h) for h in got["audit_path"]]
            assert leaf_hash(base64.b64decode(got["leaf_input"])) == a.leaf_hash
            verify_inclusion(a.leaf_hash, a.index, cp.size, path, cp.root_hash)
        return len(sample)


# ----------------------------------------------------------------------------- the driver


class CrashHarness:
    """Concurrent idempotent submitters plus a killer; see the module docstring."""

    RETRY_STATUSES = (429, 503)

    def __init__(
        self,
        log: LogDir,
        workdir: Path,
        *,
        workers: int = 6,
        batch_size: int = 40,
        seed: int = 1,
        kill_after: tuple[float, float] = (0.2, 1.0),
        progress: Any = None,
    ) -> None:
        self.log = log
        self.server = ServerProcess(log, workdir, "crash")
        self.workers = workers
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.kill_after = kill_after
        self.progress = progress
        self.acked: list[Ack] = []
        self.report = CrashReport()
        self.checker = TreeChecker(log)
        self._stop = asyncio.Event()
        self._up = asyncio.Event()

    async def run(self, kills: int) -> CrashReport:
        started = time.monotonic()
        self.server.start()
        self._up.set()
        timeout = aiohttp.ClientTimeout(total=20, sock_connect=2)
        connector = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                tasks = [asyncio.create_task(self._worker(session, w)) for w in range(self.workers)]
                try:
                    for k in range(kills):
                        await self._kill_and_check(session, k)
                finally:
                    self._stop.set()
                    await asyncio.gather(*tasks, return_exceptions=True)
                # A final round once the load stopped: a graceful stop (which sequences every
                # promise and publishes a final checkpoint), fsck, a restart, and every
                # acknowledged entry checked once more.
                code = self.server.stop(signal.SIGTERM)
                if code != 0:
                    self.report.errors.append(f"SIGTERM exit code {code}")
                self._fsck()
                self.server.start()
                lost, dups, proofs = await self.checker.catch_up(
                    session, self.server.url, list(self.acked), self.rng
                )
                self._tally(lost, dups, proofs)
            code = self.server.stop(signal.SIGTERM)
            if code != 0:
                self.report.errors.append(f"final SIGTERM exit code {code}")
        finally:
            self.server.kill_if_running()
        self.report.seconds = round(time.monotonic() - started, 1)
        self.report.tree_size = self.checker.tree.size
        self.report.acked = len(self.acked)
        self.report.acked_promises = sum(a.index is None for a in self.acked)
        self.report.acked_receipts = self.report.acked - self.report.acked_promises
        self.report.checkpoints_checked = len(self.checker.checked)
        return self.report

    def _tally(self, lost: int, dups: int, proofs: int) -> None:
        self.report.lost = max(self.report.lost, lost)
        self.report.duplicates = max(self.report.duplicates, dups)
        self.report.proofs_checked += proofs

    def _fsck(self) -> None:
        ok, out = fsck_ok(self.log)
        self.report.fsck_runs += 1
        if not ok:
            self.report.fsck_failures.append(out[-500:])

    async def _kill_and_check(self, session: aiohttp.ClientSession, k: int) -> None:
        lo, hi = self.kill_after
        # Wait for some acknowledged work since the last restart, then a random moment more.
        floor = len(self.acked) + 20
        deadline = time.monotonic() + 30
        while len(self.acked) < floor and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(self.rng.uniform(lo, hi))
        self._up.clear()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.server.kill)
        self.report.kills += 1
        snapshot = list(self.acked)  # everything acknowledged before the kill
        await loop.run_in_executor(None, self._fsck)
        await loop.run_in_executor(None, self.server.start)
        self.report.restarts += 1
        self._up.set()
        lost, dups, proofs = await self.checker.catch_up(
            session, self.server.url, snapshot, self.rng
        )
        self._tally(lost, dups, proofs)
        if self.progress is not None:
            self.progress(
                f"kill {k + 1}: acked {len(snapshot)}, tree {self.checker.tree.size}, "
                f"lost {lost}, duplicates {dups}, fsck failures {len(self.report.fsck_failures)}"
            )

    async def _worker(self, session: aiohttp.ClientSession, w: int) -> None:
        rng = random.Random(self.rng.random())
        n = 0
        while not self._stop.is_set():
            mode = rng.choices(("single", "batch", "promise"), (6, 2, 2))[0]
            count = self.batch_size if mode == "batch" else 1
            items = [(f"w{w}-{n + i}", b"reliability w%d e%d" % (w, n + i)) for i in range(count)]
            n += count
            try:
                await self._submit_until_acked(session, mode, items)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.report.errors.append(f"worker {w}: {e!r}"[:300])
                return

    async def _submit_until_acked(
        self, session: aiohttp.ClientSession, mode: str, items: list[tuple[str, bytes]]
    ) -> None:
        headers = {"Authorization": f"Bearer {self.log.token}"}
        if mode == "batch":
            path = "/add-batch?kind=inline"
            body = json.dumps(
                [
                    {"payload_b64": base64.b64encode(p).decode(), "idempotency_key": k}
                    for k, p in items
                ]
            ).encode()
            headers["Content-Type"] = "application/json"
        else:
            path = "/add?kind=inline" + ("&wait=0" if mode == "promise" else "")
            body = items[0][1]
            headers["Idempotency-Key"] = items[0][0]
        first = True
        while not self._stop.is_set():
            if not first:
                self.report.retries += 1
                await asyncio.sleep(0.05)
            first = False
            await self._up.wait()
            try:
                async with session.post(self.server.url + path, data=body, headers=headers) as r:
                    status = r.status
                    answer = await r.read()
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                continue
            if status in self.RETRY_STATUSES:
                continue
            if status not in (200, 202):
                raise AssertionError(f"{path}: unexpected {status}: {answer[:300]!r}")
            self._record(mode, items, json.loads(answer))
            return

    def _record(self, mode: str, items: list[tuple[str, bytes]], body: dict[str, Any]) -> None:
        vkey = self.log.vkey
        payloads = [p for _, p in items]
        if mode == "promise":
            verify_promise(body, vkey)
            leaf_h = base64.b64decode(body["leaf_hash"])
            self.report.duplicate_answers += bool(body["duplicate"])
            self.acked.append(Ack(payloads[0], leaf_h, None))
            return
        receipt = parse_receipt(body)
        if mode == "batch":
            verify_receipt(receipt, vkey, payloads=payloads)
        else:
            verify_receipt(receipt, vkey, payloads[0])
        self.checker.see_checkpoint(receipt.checkpoint)
        for e, payload in zip(receipt.entries, payloads, strict=True):
            self.report.duplicate_answers += e.duplicate
            self.acked.append(Ack(payload, e.leaf_hash, e.index))


def run_crash(
    workdir: Path, kills: int, *, seed: int = 1, progress: Any = None, **kwargs: Any
) -> CrashReport:
    """Create a log in ``workdir`` and run :class:`CrashHarness` for ``kills`` kills."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = make_log(workdir / "data")
    harness = CrashHarness(log, workdir, seed=seed, progress=progress, **kwargs)
    report = asyncio.run(harness.run(kills))
    secrets = [log.token, *_private_key_material(log.data)]
    logs = harness.server.output("stderr") + harness.server.output("stdout")
    if any(s in logs for s in secrets):
        report.errors.append("a secret appears in the server's logs")
    return report


def _private_key_material(data: Path) -> list[str]:
    """Strings a leaked private key would show: the note skey and the PEM body lines."""
    out = [(data / "keys" / "log.key").read_text().strip()]
    pem = (data / "keys" / "ct.key").read_text().splitlines()
    out += [line for line in pem if line and not line.startswith("-----")]
    return out


if __name__ == "__main__":  # pragma: no cover - manual use: python -m tests.reliability.harness
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as tmp:
        r = run_crash(Path(tmp), n, progress=lambda m: print(m, file=sys.stderr))
        print(json.dumps(r.as_dict(), indent=1))
        os._exit(0 if not (r.lost or r.duplicates or r.errors or r.fsck_failures) else 1)
