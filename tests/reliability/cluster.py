"""The distributed fault harness: writers on one RGW bucket, a recording client, checks.

Used by ``tests/reliability/test_faults.py`` (bounded, ``make test``) and, with
``TRANSLOG_FAULT_REPS`` set by ``make soak``, for the long runs; figures are appended as JSON
lines to ``TRANSLOG_FAULT_OUT`` when it is set.

* :func:`make_writer_dirs` makes a log (``translog init``, a token) and copies its config,
  keys and tokens to more data directories, as a standby on another machine would have them;
  each writer reaches RGW through its own :class:`~tests.reliability.faultproxy.FaultProxy`.
* :class:`Client` submits unique inline payloads with an ``Idempotency-Key`` each, retries
  with the same key on any failure, and records every acknowledgement (:class:`Receipt`) and
  every refusal's status.
* :class:`BucketWatcher` reads the bucket directly (not through a proxy) as a public reader
  would, every 100 ms: each new checkpoint must verify, every tile and entry bundle it needs
  must be there, and the entries must hash to its root (:meth:`BucketWatcher.verify`).
* :class:`Forks` collects every (size, root) seen anywhere and names any size with two roots.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from tests.reliability.faultproxy import FaultProxy
from tests.reliability.harness import REPO, LogDir, ServerProcess, cli, make_log
from translog.config import ObjectStoreSection, format_config
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import MemoryHashes, leaf_hash
from translog.core.tiles import TILE_WIDTH, TileRef, decode_bundle
from translog.formats.receipt import parse_receipt, verify_receipt
from translog.log.datadir import open_data_dir
from translog.publish import layout

REPS = int(os.environ.get("TRANSLOG_FAULT_REPS", "1"))
"""Repetitions per scenario: 1 in ``make test``; ``make soak`` sets more."""


def record_figures(scenario: str, figures: dict[str, Any]) -> None:
    """Append one scenario's figures to ``TRANSLOG_FAULT_OUT`` (JSON lines), and print them."""
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=True)
    print(line)
    out = os.environ.get("TRANSLOG_FAULT_OUT")
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


@dataclass
class Writers:
    """A log, its bucket, and the data directories of its writers (one proxy each)."""

    log: LogDir
    bucket: str
    public_url: str
    dirs: list[Path]
    proxies: list[FaultProxy]
    env: dict[str, str]

    def server(self, i: int, workdir: Path, extra_env: dict[str, str] | None = None) -> Server:
        data = self.dirs[i]
        return Server(
            replace(self.log, data=data), workdir, f"w{i}", {**self.env, **(extra_env or {})}
        )

    def close(self) -> None:
        for p in self.proxies:
            p.stop()


class Server(ServerProcess):
    """``translog serve`` with an environment (credentials, test hooks); may stand by."""

    def __init__(self, log: LogDir, workdir: Path, name: str, env: dict[str, str]) -> None:
        super().__init__(log, workdir, name)
        self.env = env

    def launch(self) -> None:
        """Start without waiting for the ready file (a standby writes it after takeover)."""
        import subprocess
        import sys

        self.ready_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "translog", "serve", "--data", str(self.log.data)]
        argv += ["--listen", "127.0.0.1:0", "--ready-file", str(self.ready_file)]
        with (
            open(self.log_path("stdout"), "ab") as out,
            open(self.log_path("stderr"), "ab") as err,
        ):
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env=self.env)
        self.starts += 1

    def ready(self) -> bool:
        if self.port:
            return True
        if self.ready_file.exists() and self.ready_file.read_text().strip():
            self.port = int(self.ready_file.read_text())
            return True
        assert self.proc is not None
        code = self.proc.poll()
        assert code is None, f"{self.name} exited with {code}: {self.output()[-3000:]}"
        return False

    async def wait_ready(self, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        while not self.ready():
            assert time.monotonic() - t0 < timeout, (
                f"{self.name} not ready: {self.output()[-2000:]}"
            )
            await asyncio.sleep(0.02)
        return time.monotonic() - t0


def make_writer_dirs(
    rgw: Any,
    tmp: Path,
    n: int,
    *,
    ttl_ms: int = 3000,
    renew_ms: int = 1000,
    max_lag_ms: int = 1000,
    interval_ms: int = 100,
    config: dict[str, Any] | None = None,
) -> Writers:
    """A log on a fresh bucket and ``n`` data directories for it, each behind its own proxy."""
    bucket = rgw.bucket(public_prefix="pub")
    log = make_log(tmp / "w0", config=config)
    port = int(rgw.endpoint.rsplit(":", 1)[1])
    proxies = [FaultProxy(port).start() for _ in range(n)]
    dirs = [log.data]
    for i in range(1, n):
        d = tmp / f"w{i}"
        d.mkdir()
        for name in ("translog.toml", "tokens.json"):
            shutil.copy(log.data / name, d / name)
        shutil.copytree(log.data / "keys", d / "keys")
        dirs.append(d)
    for d, proxy in zip(dirs, proxies, strict=True):
        cfg = open_data_dir(d).config
        cfg = replace(
            cfg,
            publisher=replace(cfg.publisher, interval_ms=interval_ms),
            objstore=ObjectStoreSection(
                url=f"s3://{bucket}/pub",
                private_url=f"s3://{bucket}/private",
                endpoint=proxy.url,
                lease_ttl_ms=ttl_ms,
                lease_renew_ms=renew_ms,
                max_lag_ms=max_lag_ms,
            ),
        )
        (d / "translog.toml").write_text(format_config(cfg))
    env = {**os.environ, **rgw.env()}
    return Writers(log, bucket, f"{rgw.endpoint}/{bucket}/pub", dirs, proxies, env)


# ------------------------------------------------------------------------------ the client


@dataclass
class Receipt:
    key: str
    payload: bytes
    index: int
    leaf_hash: bytes
    size: int
    root: bytes
    server: str
    at: float
    wait: str
    timestamp_ms: int


@dataclass
class Client:
    """Workers submitting ``/add?kind=inline`` with idempotency keys to ``targets()``."""

    log: LogDir
    targets: Any
    """A callable returning the list of (name, base URL) to try, in turn."""
    waits: tuple[str, ...] = ("durable",)
    """``wait=`` per worker, in turn (``published``: the receipt's checkpoint is in the store)."""
    workers: int = 4
    receipts: list[Receipt] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    retry_after: set[str] = field(default_factory=set)
    acks_by: dict[str, list[float]] = field(default_factory=dict)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    prefix: str = "c"

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._tasks = [asyncio.create_task(self._worker(w)) for w in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def _worker(self, w: int) -> None:
        n = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{w}-{n}"
            await self._until_acked(key, f"fault {key}".encode(), self.waits[w % len(self.waits)])
            n += 1

    async def _until_acked(self, key: str, payload: bytes, wait: str) -> None:
        headers = {"Authorization": f"Bearer {self.log.token}", "Idempotency-Key": key}
        turn = 0
        while not self._stop.is_set():
            targets = self.targets()
            name, url = targets[turn % len(targets)] if targets else ("", "")
            turn += 1
            if not url:
                await asyncio.sleep(0.05)
                continue
            try:
                async with self._session.post(
                    f"{url}/add?kind=inline&wait={wait}", data=payload, headers=headers
                ) as r:
                    status, body = r.status, await r.read()
                    if "Retry-After" in r.headers:
                        self.retry_after.add(f"{name} {status}")
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                self.count(f"{name} connection error")
                await asyncio.sleep(0.05)
                continue
            self.count(f"{name} {status}")
            if status != 200:
                await asyncio.sleep(0.05)
                continue
            receipt = parse_receipt(json.loads(body))
            verify_receipt(receipt, self.log.vkey, payload)
            cp, _, _ = open_checkpoint(receipt.checkpoint, self.log.verifier)
            e = receipt.entries[0]
            now = time.monotonic()
            self.receipts.append(
                Receipt(
                    key,
                    payload,
                    e.index,
                    e.leaf_hash,
                    cp.size,
                    cp.root_hash,
                    name,
                    now,
                    wait,
                    e.timestamp_ms,
                )
            )
            self.acks_by.setdefault(name, []).append(now)
            return


# ----------------------------------------------------------------------------- the checks


class Forks:
    """Every (size, root) seen, and where: two roots for one size is a fork."""

    def __init__(self) -> None:
        self.roots: dict[int, dict[bytes, str]] = {}

    def see(self, size: int, root: bytes, where: str) -> None:
        self.roots.setdefault(size, {}).setdefault(root, where)

    def forks(self) -> list[str]:
        return [
            f"size {size}: "
            + ", ".join(f"{base64.b64encode(r).decode()[:12]}… ({w})" for r, w in s.items())
            for size, s in sorted(self.roots.items())
            if len(s) > 1
        ]


class BucketWatcher:
    """A public reader of the bucket: every checkpoint it holds must be verifiable."""

    def __init__(self, log: LogDir, public_url: str, forks: Forks) -> None:
        self.log = log
        self.url = public_url
        self.forks = forks
        self.tree = MemoryHashes()
        self.leaves: list[bytes] = []
        self.sizes: list[tuple[float, int]] = []
        self.problems: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._last = b""

    @property
    def size(self) -> int:
        return self.tree.size

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.poll()
        await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except (aiohttp.ClientError, TimeoutError) as e:
                self.problems.append(f"reading the bucket: {e!r}")
            await asyncio.sleep(0.1)

    async def _get(self, path: str) -> bytes | None:
        async with self._session.get(f"{self.url}/{path}") as r:
            if r.status == 404:
                return None
            assert r.status == 200, f"{path}: {r.status}"
            return await r.read()

    async def poll(self) -> None:
        note = await self._get(layout.CHECKPOINT_KEY)
        if note is None or note == self._last:
            return
        cp, _, _ = open_checkpoint(note, self.log.verifier)
        self.forks.see(cp.size, cp.root_hash, "bucket")
        self.sizes.append((time.monotonic(), cp.size))
        if cp.size < self.tree.size:
            self.problems.append(
                f"the bucket's checkpoint went back from {self.tree.size} to {cp.size}"
            )
        else:
            await self.verify(cp.size, cp.root_hash)
        # Only now: a poll cancelled inside verify() (stop() cancels the background one)
        # leaves this checkpoint to the final poll, rather than marking it as seen.
        self._last = note

    async def verify(self, size: int, root: bytes) -> None:
        """Every tile and bundle the checkpoint needs is there; the entries hash to its root."""
        old = self.tree.size
        for ref in layout.tiles_between(old, size):
            if await self._get(ref.path) is None:
                self.problems.append(f"checkpoint {size}: hash tile {ref.path} is missing")
        leaves = self.leaves[: old - old % TILE_WIDTH]
        for tile in range(old // TILE_WIDTH, (size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, size - tile * TILE_WIDTH)
            ref = TileRef(0, tile, width, entries=True)
            body = await self._get(ref.path)
            if body is None:
                self.problems.append(f"checkpoint {size}: entry bundle {ref.path} is missing")
                return
            leaves += decode_bundle(body)
        tree = MemoryHashes()
        for leaf in leaves:
            tree.append(leaf_hash(leaf))
        if tree.root() != root:
            self.problems.append(f"checkpoint {size}: the bucket's entries do not hash to its root")
            return
        self.tree, self.leaves = tree, leaves

    def lost(self, receipts: list[Receipt]) -> list[str]:
        """Receipts whose entry is not at its index in the bucket's tree, each with why."""
        out = []
        for r in receipts:
            if r.index < len(self.leaves) and leaf_hash(self.leaves[r.index]) == r.leaf_hash:
                continue
            where = "beyond the tree" if r.index >= len(self.leaves) else "another leaf there"
            out.append(
                f"{r.key} acknowledged by {r.server} at index {r.index} (checkpoint {r.size}): "
                f"{where} (bucket size {len(self.leaves)})"
            )
        return out


def audit(log: LogDir, url: str) -> tuple[bool, str]:
    """``translog audit URL`` (recompute the whole log once); (passed, output)."""
    out = cli("audit", url, "--vkey", log.vkey, "-q", "--timeout", "10", check=False, timeout=120)
    return out.returncode == 0, (out.stdout + out.stderr).strip()[-2000:]


async def get(session: aiohttp.ClientSession, url: str, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(url, headers=headers) as r:
            return r.status, await r.read()
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
        return 0, repr(e).encode()


async def metric(session: aiohttp.ClientSession, url: str, name: str, token: str) -> float | None:
    status, body = await get(session, f"{url}/metrics", token)
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def watch_checkpoints(
    servers: list[Any], forks: Forks, stop: asyncio.Event, token: str
) -> None:
    """Poll ``/checkpoint`` of every ready server into ``forks`` until ``stop``."""
    from translog.core.checkpoint import parse_checkpoint
    from translog.core.note import parse_note

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not stop.is_set():
            for s in servers:
                if not s.port:
                    continue
                status, body = await get(http, f"{s.url}/checkpoint", token)
                if status == 200:
                    cp = parse_checkpoint(parse_note(body).text)
                    forks.see(cp.size, cp.root_hash, f"/checkpoint of {s.name}")
            await asyncio.sleep(0.1)
