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
  prefix of it, and that no payload appears twice. :class:`CrashReport` holds the counts,
  and for every lost entry (and every promise that landed after its deadline) which one,
  where and why, and at which check (:class:`LostEntry`, :class:`LateEntry`).

"Lost" means lost: a receipt whose index does not hold its leaf at a check, or a promise
whose leaf is still not in the tree at the final check (after a graceful stop, a restart and
``FINAL_WAIT``). A promise still missing when a check after a kill stops waiting
(``PROMISE_WAIT``) is only overdue: if it lands later it is reported as late, with its delay.

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

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.merkle import (
    MemoryHashes,
    leaf_hash,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from translog.core.signing import NoteVerifier
from translog.core.tiles import TILE_WIDTH, TileRef, decode_bundle
from translog.core.vkey import parse_vkey
from translog.formats.receipt import parse_receipt, verify_promise, verify_receipt

ORIGIN = "reliability.example/log"
READY_TIMEOUT = 30.0
PROMISE_WAIT = 12.0
"""Seconds a check after a kill waits for promised entries: the default merge delay (10 s)
plus slack. A promise still missing then is overdue, not lost (see :class:`CrashReport`)."""
FINAL_WAIT = 30.0
"""Seconds the final check (after a graceful stop and a restart) waits for promised entries
before it counts the missing ones as lost."""
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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wall_ms() -> int:
    """Wall-clock UTC ms (what a promise's deadline is written in)."""
    return time.time_ns() // 1_000_000


def utc(ms: int) -> str:
    """``HH:MM:SS.mmm`` UTC."""
    return time.strftime("%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}"


@dataclass
class Ack:
    """One acknowledged logical entry: a receipt (its index is known) or a promise."""

    payload: bytes
    leaf_hash: bytes
    index: int | None  # None for a promise (the index is not known yet)
    key: str = ""
    """The idempotency key every attempt of this entry used."""
    deadline_ms: int | None = None
    """A promise's signed deadline (UTC ms): the entry is in the tree by then."""
    acked_ms: int = 0
    """When the harness got the answer (UTC ms)."""
    run: int = 0
    """Which server run answered (1 = the first start)."""
    duplicate: bool = False
    """The answer said ``duplicate: true`` (the key named an earlier entry)."""

    @property
    def kind(self) -> str:
        return "promise" if self.index is None else "receipt"

    @property
    def ident(self) -> tuple[str, bytes, int | None]:
        return (self.key, self.leaf_hash, self.index)


@dataclass
class LostEntry:
    """An acknowledged entry the tree does not hold where its acknowledgement says."""

    kind: str
    """``receipt`` (an index was acknowledged) or ``promise`` (``?wait=0``)."""
    key: str
    leaf_hash: str
    """The acknowledged leaf hash (base64)."""
    index: int | None
    """The acknowledged index (receipts)."""
    check: str
    """The check that established the loss: ``after kill N`` or ``final``."""
    first_missing: str
    """The first check at which it was missing (for a promise, possibly an earlier one)."""
    tree_size: int
    tree_leaf_hash: str | None
    """What the tree holds at the acknowledged index (base64 leaf hash), None if beyond it."""
    tree_payload: str | None
    """The payload of that leaf (the harness's own payloads are printable)."""
    payload_at: list[tuple[int, str]]
    """Every index whose leaf carries this entry's payload, with its leaf hash."""
    acked_run: int
    duplicate: bool
    acked_ms: int = 0
    """When the harness got the acknowledgement (UTC ms)."""
    deadline_ms: int | None = None
    """A promise's signed deadline (UTC ms)."""
    server_log: list[str] = field(default_factory=list)
    """What the server logged about this leaf hash (e.g. a broken promise), if anything."""

    @property
    def reason(self) -> str:
        if self.index is None:
            where = "its leaf hash is not in the tree"
        elif self.tree_leaf_hash is None:
            where = f"index {self.index} is beyond the tree (size {self.tree_size})"
        else:
            where = (
                f"index {self.index} holds another leaf ({self.tree_leaf_hash}, "
                f"payload {self.tree_payload!r})"
            )
        if self.payload_at:
            elsewhere = ", ".join(f"index {i} (leaf hash {h})" for i, h in self.payload_at)
            return f"{where}; its payload is in the tree at {elsewhere}"
        return f"{where}; its payload is nowhere in the tree"

    def describe(self) -> str:
        ack = f"index {self.index}" if self.index is not None else "?wait=0"
        deadline = "" if self.deadline_ms is None else f", deadline {utc(self.deadline_ms)}"
        text = (
            f"LOST {self.kind} key={self.key} ({ack}, leaf hash {self.leaf_hash}, answered at "
            f"{utc(self.acked_ms)} by server run {self.acked_run}{deadline}"
            f"{', duplicate' if self.duplicate else ''}): {self.reason}; missing at "
            f"{self.first_missing}, lost as of {self.check} (tree size {self.tree_size})"
        )
        for line in self.server_log:
            text += f"\n    server: {line}"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "reason": self.reason}


@dataclass
class LateEntry:
    """A promise whose leaf the harness first saw in the tree after the promise's deadline."""

    key: str
    leaf_hash: str
    index: int
    deadline_ms: int
    seen_ms: int
    missing_at: str
    """The first check at which the harness found it missing (and started waiting)."""
    seen_at: str
    """The check at which it was seen."""

    @property
    def late_ms(self) -> int:
        """An upper bound on how late it merged: the harness sees a merge only once a
        checkpoint covering it is published (each second) and it polls (each 0.25 s)."""
        return self.seen_ms - self.deadline_ms

    def describe(self) -> str:
        return (
            f"LATE promise key={self.key} (leaf hash {self.leaf_hash}): at index {self.index}, "
            f"seen {self.late_ms} ms after its deadline; missing at {self.missing_at}, "
            f"seen at {self.seen_at}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "late_ms": self.late_ms}


@dataclass
class CheckResult:
    """One check of the followed tree against what was acknowledged."""

    check: str
    lost: list[LostEntry] = field(default_factory=list)
    """Losses established by this check (each entry is reported once, at the first check
    that establishes it)."""
    late: list[LateEntry] = field(default_factory=list)
    overdue: int = 0
    """Promises still missing when this (non-final) check stopped waiting: not lost yet."""
    duplicates: int = 0
    proofs: int = 0


@dataclass
class CrashReport:
    """What a crash run did and found.

    ``lost`` counts acknowledged entries the log does not hold where the acknowledgement
    says: a receipt whose index holds another leaf (or lies beyond the tree) at any check,
    or a promise whose leaf hash is still not in the tree at the final check, after a
    graceful stop (which sequences every promised entry), a restart and ``FINAL_WAIT``.
    A promise missing when a check after a kill stops waiting (``PROMISE_WAIT``) is only
    *overdue*; if it turns up later it is ``late``, not lost. ``lost_details`` and
    ``late_details`` say which entry, where and why (:class:`LostEntry`, :class:`LateEntry`).
    """

    kills: int = 0
    kill_times: list[str] = field(default_factory=list)
    """When each SIGKILL was sent (UTC), to place the details' times."""
    restarts: int = 0
    acked: int = 0
    acked_receipts: int = 0
    acked_promises: int = 0
    lost: int = 0
    lost_details: list[dict[str, Any]] = field(default_factory=list)
    late: int = 0
    late_details: list[dict[str, Any]] = field(default_factory=list)
    overdue: int = 0
    """Promise checks that ended with the promise still missing (each later late or lost)."""
    duplicates: int = 0
    duplicate_answers: int = 0
    """Entries answered ``duplicate: true`` to a retried key (the retry found the first)."""
    server_broken_promises: int = 0
    """``promise broken`` lines in the server's log (the log's own count of promises whose
    leaf did not land by its deadline: watched within a server run, not across a crash)."""
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

    def explain(self) -> str:
        """Every lost and late entry, one per line (for failure messages and soak output)."""
        lines = [_describe(d, LostEntry) for d in self.lost_details]
        lines += [_describe(d, LateEntry) for d in self.late_details]
        head = f"lost {self.lost}, late {self.late}"
        if not lines:
            return head
        kills = ", ".join(f"{i} at {t}" for i, t in enumerate(self.kill_times, 1))
        when = f" (kills: {kills})" if kills else ""
        return "\n".join([f"{head}{when}:", *lines])


def _describe(d: dict[str, Any], cls: type[LostEntry] | type[LateEntry]) -> str:
    fields = {k: v for k, v in d.items() if k not in ("reason", "late_ms")}
    return cls(**fields).describe()


class TreeChecker:
    """Follows the log through its read API across restarts, incrementally, and accounts
    for every acknowledged entry (see :class:`CrashReport` for what counts as lost)."""

    def __init__(self, log: LogDir) -> None:
        self.log = log
        self.tree = MemoryHashes()
        self.leaves: list[bytes] = []
        self.hashes: list[bytes] = []
        self.by_hash: dict[bytes, int] = {}
        self.first_seen: list[int] = []
        """UTC ms at which the harness first saw each leaf in a published checkpoint."""
        self.payload_at: dict[bytes, list[int]] = {}
        self.checkpoints: dict[int, bytes] = {}  # every checkpoint seen: size -> root
        self.checked: set[int] = set()
        self.awaited: dict[tuple[str, bytes, int | None], str] = {}
        """Promises found missing at some sync, with the first check that found them."""
        self.reported: set[tuple[str, bytes, int | None]] = set()
        """Entries already reported lost or late."""

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
        *,
        check: str = "check",
        final: bool = False,
    ) -> CheckResult:
        """Follow the published tree until every acknowledged entry is in it, or until
        ``promise_wait`` has passed; check everything on the way, and account.

        A receipt is given only once its entry is durable, so a receipt's entry must be in
        the first checkpoint published after a restart. A promise (``?wait=0``) is kept once
        the entry is in the tree within the merge delay; after a crash the restarted server
        re-sequences it first, so it may land a little after the first checkpoint. With
        ``final`` (after a graceful stop, which sequences every promised entry), a promise
        still missing after the wait is lost; before that it is only overdue.
        """
        deadline = time.monotonic() + promise_wait
        while True:
            cp = await self._sync(session, url)
            missing = self.missing(acked, check)
            if not any(a.index is None for a in missing) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        result = self.account(acked, check, final=final)
        result.duplicates = sum(len(v) - 1 for v in self.payload_at.values() if len(v) > 1)
        result.proofs = await self._check_proofs(session, url, acked, cp, rng)
        return result

    def present(self, a: Ack) -> int | None:
        """Where the followed tree holds ``a``'s leaf as acknowledged, else None."""
        index = a.index if a.index is not None else self.by_hash.get(a.leaf_hash)
        if index is None or index >= len(self.hashes):
            return None
        return index if self.hashes[index] == a.leaf_hash else None

    def missing(self, acked: list[Ack], check: str) -> list[Ack]:
        """Acknowledged entries not in the followed tree; promises among them are remembered
        as awaited from ``check`` on (the harness is now watching for them)."""
        out = [a for a in acked if self.present(a) is None]
        for a in out:
            if a.index is None:
                self.awaited.setdefault(a.ident, check)
        return out

    def account(self, acked: list[Ack], check: str, *, final: bool) -> CheckResult:
        """Classify every acknowledged entry against the followed tree (once per check).

        Lost: a receipt missing now, or (``final``) a promise missing now. Late: an awaited
        promise that is in the tree but was first seen after its deadline. Overdue: a promise
        still missing at a check that is not final.
        """
        result = CheckResult(check)
        for a in acked:
            if a.ident in self.reported:
                continue
            index = self.present(a)
            if index is None:
                if a.index is not None or final:
                    result.lost.append(self._lost(a, check))
                    self.reported.add(a.ident)
                else:
                    result.overdue += 1
                continue
            since = self.awaited.get(a.ident)
            if since is None or a.deadline_ms is None:
                continue
            seen = self.first_seen[index]
            if seen > a.deadline_ms:
                late = LateEntry(a.key, _b64(a.leaf_hash), index, a.deadline_ms, seen, since, check)
                result.late.append(late)
                self.reported.add(a.ident)
        return result

    def _lost(self, a: Ack, check: str) -> LostEntry:
        size = len(self.leaves)
        at: str | None = None
        payload: str | None = None
        if a.index is not None and a.index < size:
            leaf = self.leaves[a.index]
            at = _b64(self.hashes[a.index])
            payload = (decode_leaf(leaf).payload or b"").decode(errors="replace")
        elsewhere = [(i, _b64(self.hashes[i])) for i in self.payload_at.get(a.payload, [])]
        return LostEntry(
            kind=a.kind,
            key=a.key,
            leaf_hash=_b64(a.leaf_hash),
            index=a.index,
            check=check,
            first_missing=self.awaited.get(a.ident, check),
            tree_size=size,
            tree_leaf_hash=at,
            tree_payload=payload,
            payload_at=elsewhere,
            acked_run=a.run,
            duplicate=a.duplicate,
            acked_ms=a.acked_ms,
            deadline_ms=a.deadline_ms,
        )

    def add_leaves(self, leaves: list[bytes]) -> None:
        """Append leaves (the next ones of the published tree) to the followed tree."""
        now = wall_ms()
        for leaf in leaves:
            index = len(self.leaves)
            h = leaf_hash(leaf)
            self.tree.append(h)
            self.leaves.append(leaf)
            self.hashes.append(h)
            self.first_seen.append(now)
            self.by_hash.setdefault(h, index)
            payload = decode_leaf(leaf).payload or b""
            self.payload_at.setdefault(payload, []).append(index)

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
            first = tile * TILE_WIDTH
            for i in range(first, min(old, first + len(leaves))):
                assert leaves[i - first] == self.leaves[i], f"leaf {i} changed"
            self.add_leaves(leaves[max(0, old - first) :])
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
        present = [a for a in acked if a.index is not None and self.present(a) is not None]
        sample = rng.sample(present, min(len(present), 16))  # the others are accounted for
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
                result = await self.checker.catch_up(
                    session,
                    self.server.url,
                    list(self.acked),
                    self.rng,
                    FINAL_WAIT,
                    check="final",
                    final=True,
                )
                self._tally(result)
                self._progress("final", len(self.acked), result)
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
        self.report.server_broken_promises = len(self._broken_promise_lines())
        return self.report

    def _tally(self, result: CheckResult) -> None:
        """Add one check's findings to the report (each loss and lateness is new)."""
        broken = self._broken_promise_lines() if result.lost else []
        for lost in result.lost:
            lost.server_log = [line for line in broken if lost.leaf_hash in line]
            self.report.lost_details.append(lost.as_dict())
        self.report.late_details += [late.as_dict() for late in result.late]
        self.report.lost = len(self.report.lost_details)
        self.report.late = len(self.report.late_details)
        self.report.overdue += result.overdue
        self.report.duplicates = max(self.report.duplicates, result.duplicates)
        self.report.proofs_checked += result.proofs

    def _broken_promise_lines(self) -> list[str]:
        """The server's own ``promise broken`` log lines, over all its runs."""
        text = self.server.output("stderr")
        return [
            line.strip()[-400:]
            for line in text.splitlines()
            if "promise" in line and "broken" in line
        ]

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
        self.report.kill_times.append(utc(wall_ms()))
        snapshot = list(self.acked)  # everything acknowledged before the kill
        await loop.run_in_executor(None, self._fsck)
        await loop.run_in_executor(None, self.server.start)
        self.report.restarts += 1
        self._up.set()
        check = f"after kill {k + 1}"
        result = await self.checker.catch_up(
            session, self.server.url, snapshot, self.rng, check=check
        )
        self._tally(result)
        self._progress(f"kill {k + 1}", len(snapshot), result)

    def _progress(self, what: str, acked: int, result: CheckResult) -> None:
        if self.progress is None:
            return
        self.progress(
            f"{what}: acked {acked}, tree {self.checker.tree.size}, lost {len(result.lost)}, "
            f"overdue promises {result.overdue}, late {len(result.late)}, "
            f"duplicates {result.duplicates}, fsck failures {len(self.report.fsck_failures)}"
        )
        for entry in [*result.lost, *result.late]:
            self.progress(entry.describe())

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
        now, run = wall_ms(), self.server.starts
        if mode == "promise":
            verify_promise(body, vkey)
            leaf_h = base64.b64decode(body["leaf_hash"])
            dup = bool(body["duplicate"])
            self.report.duplicate_answers += dup
            key = items[0][0]
            self.acked.append(Ack(payloads[0], leaf_h, None, key, body["deadline"], now, run, dup))
            return
        receipt = parse_receipt(body)
        if mode == "batch":
            verify_receipt(receipt, vkey, payloads=payloads)
        else:
            verify_receipt(receipt, vkey, payloads[0])
        self.checker.see_checkpoint(receipt.checkpoint)
        for e, (key, payload) in zip(receipt.entries, items, strict=True):
            self.report.duplicate_answers += e.duplicate
            self.acked.append(Ack(payload, e.leaf_hash, e.index, key, None, now, run, e.duplicate))


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
        print(r.explain(), file=sys.stderr)
        os._exit(0 if not (r.lost or r.duplicates or r.errors or r.fsck_failures) else 1)
