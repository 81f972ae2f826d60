"""Faults beyond one process (issue 18), scenario 4: the witnesses.

One ``translog serve`` (no bucket: the witnesses are what is faulted) with a 2-of-3 policy
and ``require_quorum``, three real ``translog witness`` processes, each reached by the log
through its own :class:`~tests.reliability.faultproxy.FaultProxy`. A client submits with
idempotency keys and records every receipt (tests/reliability/cluster.py); every published
checkpoint (``GET /checkpoint``, polled) must carry at least two cosignatures that verify
with the witnesses' vkeys. Figures: docs/RELIABILITY.md §6.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.reliability.cluster import REPS, Client, Forks, get, metric, record_figures
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.harness import ORIGIN, LogDir, ServerProcess, cli, fsck_ok, make_log
from translog.config import WitnessesSection, format_config
from translog.core.checkpoint import Checkpoint, parse_checkpoint, sign_checkpoint
from translog.core.merkle import leaf_hash
from translog.core.note import parse_note
from translog.core.policy import WitnessPolicy, parse_policy
from translog.errors import TranslogError
from translog.log.datadir import open_data_dir
from translog.witness.protocol import format_add_checkpoint, parse_add_checkpoint

pytestmark = pytest.mark.system

TIMEOUT_MS = 1000
"""``witnesses.timeout_ms``: the bound on each add-checkpoint request."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WitnessProcess:
    """``translog witness`` on a fixed port (it comes back on the same one after a kill)."""

    def __init__(self, name: str, workdir: Path, vkey: str) -> None:
        self.name = name
        self.dir = workdir / name
        self.dir.mkdir()
        self.port = free_port()
        out = cli("keygen", "--witness", f"witness.example/{name}", "-o", str(self.dir / "w.key"))
        self.vkey = out.stdout.strip().splitlines()[-1]
        (self.dir / "witness.toml").write_text(
            f'[witness]\nkey = "w.key"\nstate = "state"\nlisten = "127.0.0.1:{self.port}"\n\n'
            f'[[log]]\norigin = "{ORIGIN}"\nvkey = "{vkey}"\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        ready = self.dir / "ready"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "translog", "witness", "-c", str(self.dir / "witness.toml")]
        with open(self.dir / "stderr", "ab") as err:
            self.proc = subprocess.Popen(
                [*argv, "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=err
            )
        self.starts += 1
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text().strip()):
            assert self.proc.poll() is None, (self.dir / "stderr").read_text()[-2000:]
            assert time.monotonic() < deadline, f"{self.name} not ready"
            time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


class FakeWitness:
    """A tiny HTTP server in the test: ``add-checkpoint`` answered with 500s or garbage."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> FakeWitness:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            self.requests += 1
            if self.answer == "5xx":
                return web.Response(status=503, text="witness overloaded")
            # 200 with bytes that are no cosignature: binary, then a wrong signature line.
            if self.requests % 2:
                return web.Response(body=b"\xff\x00garbage\n", content_type="text/plain")
            line = "\u2014 witness.example/w3 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
            return web.Response(text=line, content_type="text/plain")

        app = web.Application()
        app.router.add_post("/add-checkpoint", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@dataclass
class Published:
    """Every distinct checkpoint ``GET /checkpoint`` served, with who cosigned it."""

    policy: WitnessPolicy
    forks: Forks
    seen: dict[int, frozenset[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    size: int = 0
    changed_at: float = 0.0

    async def poll(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        status, body = await get(http, f"{url}/checkpoint", token)
        if status != 200:
            return
        note = parse_note(body)
        cp = parse_checkpoint(note.text)
        self.forks.see(cp.size, cp.root_hash, "/checkpoint")
        if cp.size in self.seen:
            return
        try:  # every cosignature by a policy witness must verify, and the quorum be met
            names = self.policy.verify(note.text, note.signatures)
        except TranslogError as e:  # recorded, asserted empty
            self.problems.append(f"size {cp.size}: {e}")
            names = set()
        self.seen[cp.size] = frozenset(names)
        if cp.size > self.size:
            self.size, self.changed_at = cp.size, time.monotonic()


async def watch(published: Published, url: str, token: str, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while not stop.is_set():
            await published.poll(http, url, token)
            await asyncio.sleep(0.05)


def setup_log(tmp: Path) -> tuple[LogDir, list[WitnessProcess], list[FaultProxy], WitnessPolicy]:
    """The log, three witnesses (started), a proxy each, and the 2-of-3 policy."""
    log = make_log(tmp / "log", config={"publisher.interval_ms": 200})
    cfg = open_data_dir(log.data).config
    section = WitnessesSection("witnesses.policy", require_quorum=True, timeout_ms=TIMEOUT_MS)
    (log.data / "translog.toml").write_text(format_config(replace(cfg, witnesses=section)))
    witnesses = [WitnessProcess(f"w{i}", tmp, log.vkey) for i in (1, 2, 3)]
    for w in witnesses:
        w.start()
    proxies = [FaultProxy(w.port).start() for w in witnesses]
    text = f"log {log.vkey}\n" + "".join(
        f"witness {w.name} {w.vkey} {p.url}\n" for w, p in zip(witnesses, proxies, strict=True)
    )
    text += "group q 2 w1 w2 w3\nquorum q\n"
    (log.data / "witnesses.policy").write_text(text)
    return log, witnesses, proxies, parse_policy(text)


def finish(
    server: ServerProcess,
    proxies: list[FaultProxy],
    witnesses: list[WitnessProcess],
    client: Client,
    forks: Forks,
) -> list[str]:
    """Stop everything; receipts into ``forks``; the acknowledged entries not in the tree."""
    assert server.stop() == 0
    for p in proxies:
        p.stop()
    for w in witnesses:
        w.kill_if_running()
    for r in client.receipts:
        forks.see(r.size, r.root, f"receipt of {r.key}")
    storage = open_data_dir(server.log.data).open_storage(readonly=True)
    try:
        leaves = storage.get_leaves(0, storage.size()) or []
    finally:
        storage.close()
    return [
        f"{r.key} at index {r.index}: {'beyond the tree' if r.index >= len(leaves) else 'other'}"
        for r in client.receipts
        if r.index >= len(leaves) or leaf_hash(leaves[r.index]) != r.leaf_hash
    ]


async def advances(published: Published, timeout: float, what: str) -> float:
    """Wait until a checkpoint newer than now is published; return how long it took."""
    start, t0 = published.size, time.monotonic()
    while published.size <= start:
        assert time.monotonic() - t0 < timeout, f"no checkpoint published {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_witness_faults_one_down_slow_5xx_garbage_two_down(tmp_path: Path) -> None:
    """One of three down, slow, 5xx or garbage: published with 2 of 3; two down: withheld."""
    log, witnesses, proxies, policy = setup_log(tmp_path)
    server = ServerProcess(log, tmp_path, "log")
    fakes = [await FakeWitness("5xx").start(), await FakeWitness("garbage").start()]
    forks = Forks()
    published = Published(policy, forks)
    stop = asyncio.Event()
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    client = Client(log, lambda: [("log", server.url)])
    withheld: list[float] = []
    try:
        server.start()
        poller = asyncio.create_task(watch(published, server.url, log.token, stop))
        client.start()
        await advances(published, 10, "at start")
        assert len(published.seen[published.size]) >= 2
        w3, p3 = witnesses[2], proxies[2]
        async with aiohttp.ClientSession() as http:
            for _ in range(REPS):
                # One of three: killed, slow beyond / under the timeout, 5xx, garbage.
                faults: list[tuple[str, Any, Any]] = [
                    ("killed", w3.kill, w3.start),
                    ("slow", lambda: p3.set("delay", 1.5 * TIMEOUT_MS / 1000), None),
                    ("slow under", lambda: p3.set("delay", 0.3 * TIMEOUT_MS / 1000), None),
                ]
                for fake in fakes:
                    faults.append((fake.answer, _retarget(p3, fake.port), _retarget(p3, w3.port)))
                for what, inject, heal in faults:
                    inject()
                    figures["faults"] += 1
                    sizes_before = set(published.seen)
                    for _ in range(3):
                        await advances(published, 10, f"with w3 {what}")
                    new = {s: n for s, n in published.seen.items() if s not in sizes_before}
                    assert all(len(n) >= 2 for n in new.values()), (what, new)
                    if what in ("killed", "slow", "5xx", "garbage"):
                        assert not any("w3" in n for n in new.values()), (what, new)
                    p3.set("pass")
                    if heal is not None:
                        await asyncio.to_thread(heal)
                # Two of three down: withheld (counted), receipts still come, then it resumes.
                before = await metric(
                    http, server.url, "translog_checkpoints_withheld_total", log.token
                )
                acked = len(client.receipts)
                witnesses[1].kill()
                w3.kill()
                figures["faults"] += 2
                await asyncio.sleep(1.5)
                frozen = published.size
                await asyncio.sleep(1.5)
                assert published.size == frozen, "published without a quorum"
                after = await metric(
                    http, server.url, "translog_checkpoints_withheld_total", log.token
                )
                assert before is not None and after is not None and after >= before + 3, (
                    before,
                    after,
                )
                withheld.append(after - before)
                assert len(client.receipts) > acked + 20, client.statuses
                for w in witnesses[1:]:
                    await asyncio.to_thread(w.start)
                back = time.monotonic()
                await advances(published, 15, "after the witnesses came back")
                figures["recover_s"].append(round(time.monotonic() - back, 2))
                assert len(published.seen[published.size]) >= 2
    finally:
        await client.stop()
        stop.set()
        for fake in fakes:
            await fake.stop()
    await poller
    lost = finish(server, proxies, witnesses, client, forks)
    record_figures(
        "witness faults (one of three down/slow/5xx/garbage; two down)",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "forks": forks.forks(),
            "statuses": client.statuses,
            "published": len(published.seen),
            "withheld": sum(withheld),
        },
    )
    assert published.problems == []
    assert forks.forks() == []
    assert lost == []
    ok, out = fsck_ok(log)
    assert ok, out


def _retarget(proxy: FaultProxy, port: int) -> Any:
    """Point ``proxy`` at another port; open connections (keep-alive) are ended."""

    def apply() -> None:
        proxy.target = ("127.0.0.1", port)
        proxy.set("drop")
        proxy.set("pass")

    return apply


async def test_witness_killed_between_fsync_and_reply_never_cosigns_a_rollback(
    tmp_path: Path,
) -> None:
    """w1 persists a checkpoint and answers; the answer is swallowed and w1 is SIGKILLed.

    Restarted, it must hold that checkpoint and refuse an older one, a same-size checkpoint
    with another root (both signed with the log's key), and an ``old`` below its size.
    """
    log, witnesses, proxies, policy = setup_log(tmp_path)
    server = ServerProcess(log, tmp_path, "log")
    signer = open_data_dir(log.data).signer
    forks = Forks()
    published = Published(policy, forks)
    stop = asyncio.Event()
    client = Client(log, lambda: [("log", server.url)])
    w1, p1 = witnesses[0], proxies[0]
    figures: dict[str, Any] = {"repetitions": REPS, "faults": 0, "recover_s": [], "lag_s": []}
    refusals: dict[str, int] = {}
    try:
        server.start()
        poller = asyncio.create_task(watch(published, server.url, log.token, stop))
        client.start()
        await advances(published, 10, "at start")
        async with aiohttp.ClientSession() as http:
            for _ in range(REPS):
                p1.sent.clear()
                p1.swallowed.clear()
                p1.set("swallow")
                t0 = time.monotonic()
                while not p1.swallowed:  # w1 committed (fsync) and replied; nobody heard it
                    assert time.monotonic() - t0 < 10, "w1 never answered"
                    await asyncio.sleep(0.005)
                w1.kill()
                figures["faults"] += 1
                request = b"".join(p1.sent)
                assert b" 200 " in p1.swallowed[0].split(b"\r\n", 1)[0], p1.swallowed[0][:200]
                held = parse_add_checkpoint(request.split(b"\r\n\r\n", 1)[1])
                held_cp = parse_checkpoint(parse_note(held.checkpoint).text)
                p1.set("drop")  # the log cannot reach w1 while the test probes it
                await advances(published, 10, "with w1 killed")  # w2 + w3
                await asyncio.to_thread(w1.start)
                restarted = time.monotonic()
                older = sign_checkpoint(Checkpoint(ORIGIN, held_cp.size - 1, b"\1" * 32), signer)
                other = sign_checkpoint(Checkpoint(ORIGIN, held_cp.size, b"\2" * 32), signer)
                probes = {
                    "older, old 0": format_add_checkpoint(0, (), older),
                    "older, old above it": format_add_checkpoint(held_cp.size - 2, (), older),
                    "same size, other root": format_add_checkpoint(held_cp.size, (), other),
                    "old below its size": format_add_checkpoint(held_cp.size - 1, (), other),
                }
                for what, body in probes.items():
                    async with http.post(f"{w1.url}/add-checkpoint", data=body) as resp:
                        status, answer = resp.status, await resp.read()
                    assert status in (409, 422), (what, status, answer)
                    refusals[f"{what} {status}"] = refusals.get(f"{what} {status}", 0) + 1
                    if status == 409:  # the body is w1's size: the checkpoint it persisted
                        assert answer == f"{held_cp.size}\n".encode(), (what, answer)
                p1.set("pass")
                # The log learns w1's size from its 409 and gets it to cosign again.
                t0 = time.monotonic()
                while "w1" not in published.seen.get(published.size, frozenset()):
                    assert time.monotonic() - t0 < 15, "w1 never cosigned again"
                    await asyncio.sleep(0.05)
                figures["recover_s"].append(round(time.monotonic() - restarted, 2))
    finally:
        await client.stop()
        stop.set()
    await poller
    lost = finish(server, proxies, witnesses, client, forks)
    record_figures(
        "witness killed between its fsync and its reply",
        {
            **figures,
            "acknowledged": len(client.receipts),
            "lost": lost,
            "forks": forks.forks(),
            "refusals": refusals,
            "withheld": 0,
        },
    )
    assert published.problems == []
    assert forks.forks() == []
    assert lost == []
