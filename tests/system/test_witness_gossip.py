"""System test: 1 log, 3 witnesses and 2 gossiping monitors, all ``translog`` subprocesses.

* Honest run under load: every published checkpoint carries a quorum of cosignatures (a
  nested policy: w3 and one of w1/w2), the monitors (which require the policy) and the
  witnesses gossip, and nobody raises an alert or writes a misbehaviour file. A witness killed
  with SIGKILL mid-load restarts from its LMDB state, never cosigns a rollback (409 names its
  size; 400 for an old size above the checkpoint), and cosigns again.
* Split view: a log operator runs two backends with the same key from a common prefix and
  shows one to monitor A and the other to monitor B. Gossip catches it within a few
  publication intervals, and ``translog verify-misbehaviour`` proves it offline.

Set ``TRANSLOG_SYSTEM_OUT=DIR`` to keep the transcripts (cosigned checkpoint, misbehaviour
file, verify output) for the docs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from translog.core.note import parse_note
from translog.core.policy import parse_policy
from translog.formats.receipt import parse_receipt
from translog.witness.protocol import format_add_checkpoint

pytestmark = pytest.mark.system

ORIGIN = "gossip-system.example/log"
INTERVAL_MS = 300
READY_TIMEOUT = 30.0


def translog(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "translog", *args], capture_output=True, text=True, timeout=60
    )
    if check and done.returncode != 0:
        pytest.fail(f"translog {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A ``translog`` subprocess that reports readiness through a ready file."""

    def __init__(self, name: str, workdir: Path, argv: list[str], ready_flag: str) -> None:
        self.name = name
        self.ready = workdir / f"{name}.ready"
        self.stderr = workdir / f"{name}.stderr"
        self.argv = [sys.executable, "-m", "translog", *argv, ready_flag, str(self.ready)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        self.ready.unlink(missing_ok=True)
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.ready.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited {self.proc.returncode}: {self.stderr.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} not ready: {self.stderr.read_text()[-2000:]}")
            time.sleep(0.02)
        self.port = int(self.ready.read_text())
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=40)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.kill_if_running()


def out_dir() -> Path | None:
    value = os.environ.get("TRANSLOG_SYSTEM_OUT")
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def init_log(data: Path) -> tuple[str, str]:
    """``translog init`` and a submit+read token; returns (vkey, token)."""
    vkey = translog("init", "--data", str(data), "--origin", ORIGIN).stdout.strip().splitlines()[-1]
    out = translog("token", "create", "--data", str(data), "--name", "load", "--scope", "submit")
    token = out.stdout.strip().splitlines()[-1].split()[-1]
    config = data / "translog.toml"
    text = config.read_text().replace("interval_ms = 1000", f"interval_ms = {INTERVAL_MS}")
    config.write_text(text)
    return vkey, token


def serve(name: str, data: Path, workdir: Path) -> Proc:
    return Proc(
        name, workdir, ["serve", "--data", str(data), "--listen", "127.0.0.1:0"], "--ready-file"
    )


def witness_proc(
    name: str, workdir: Path, vkey: str, port: int, peers: list[str]
) -> tuple[Proc, str]:
    d = workdir / name
    d.mkdir()
    wvkey = translog("keygen", "--witness", f"witness.example/{name}", "-o", str(d / "w.key"))
    (d / "witness.toml").write_text(
        f"""[witness]
key = "w.key"
state = "state"
listen = "127.0.0.1:{port}"

[[log]]
origin = "{ORIGIN}"
vkey = "{vkey}"

[gossip]
peers = {json.dumps(peers)}
interval_ms = {INTERVAL_MS}
timeout_ms = 2000
"""
    )
    argv = ["witness", "-c", str(d / "witness.toml")]
    return Proc(name, workdir, argv, "--ready-file"), wvkey.stdout.strip().splitlines()[-1]


def monitor_proc(
    name: str, workdir: Path, url: str, vkey: str, port: int, peers: list[str], policy: str = ""
) -> Proc:
    d = workdir / name
    d.mkdir()
    policy_line = ""
    if policy:
        (d / "log.policy").write_text(policy)
        policy_line = 'policy = "log.policy"'
    (d / "monitor.toml").write_text(
        f"""state = "state.sqlite"
evidence_dir = "evidence"

[output]
stdout = false
file = "alerts.jsonl"

[[log]]
name = "log"
url = "{url}"
vkey = "{vkey}"
{policy_line}
interval_seconds = {INTERVAL_MS / 1000}
timeout_seconds = 5

[gossip]
listen = "127.0.0.1:{port}"
peers = {json.dumps(peers)}
interval_ms = {INTERVAL_MS}
timeout_ms = 2000
name = "monitor-{name}"
"""
    )
    argv = ["monitor", "-c", str(d / "monitor.toml")]
    return Proc(name, workdir, argv, "--gossip-ready-file")


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, object]:
    async with http.get(url) as resp:
        assert resp.status == 200, (url, await resp.text())
        value = await resp.json()
        assert isinstance(value, dict)
        return value


async def load(url: str, token: str, seconds: float) -> tuple[int, list[dict[str, object]]]:
    """Concurrent submissions for ``seconds``; keeps the ``?wait=published`` receipts."""
    done = 0
    published: list[dict[str, object]] = []
    stop = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(i: int, http: aiohttp.ClientSession) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < stop:
            wait = "published" if n % 10 == 0 else "durable"
            body = json.dumps({"action": "load", "worker": i, "n": n}).encode()
            async with http.post(f"{url}/add?wait={wait}", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                if wait == "published":
                    published.append(await resp.json())
            done += 1
            n += 1

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(worker(i, http) for i in range(6)))
    return done, published


async def until(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_honest_run_cosigned_no_alerts_and_witness_restart(
    tmp_path: Path, procs: list[Proc]
) -> None:
    vkey, token = init_log(tmp_path / "log")
    w_ports = [free_port() for _ in range(3)]
    m_ports = [free_port() for _ in range(2)]
    m_urls = [f"http://127.0.0.1:{p}" for p in m_ports]
    witnesses, wvkeys = [], []
    for i, port in enumerate(w_ports, 1):
        w, wv = witness_proc(f"w{i}", tmp_path, vkey, port, m_urls)
        witnesses.append(w)
        wvkeys.append(wv)
    for w in witnesses:
        procs.append(w.start())
    policy = f"log {vkey}\n" + "".join(
        f"witness w{i} {wv} {w.url}\n"
        for i, (wv, w) in enumerate(zip(wvkeys, witnesses, strict=True), 1)
    )
    policy += "group ab any w1 w2\ngroup q all ab w3\nquorum q\n"
    (tmp_path / "log" / "witnesses.policy").write_text(policy)
    cfg = tmp_path / "log" / "translog.toml"
    cfg.write_text(cfg.read_text().replace('policy = ""', 'policy = "witnesses.policy"'))
    log = serve("log", tmp_path / "log", tmp_path)
    procs.append(log.start())
    w_urls = [w.url for w in witnesses]
    monitors = [
        monitor_proc(
            name, tmp_path, log.url, vkey, port, [u for u in m_urls if u != own] + w_urls, policy
        )
        for name, port, own in (("a", m_ports[0], m_urls[0]), ("b", m_ports[1], m_urls[1]))
    ]
    for m in monitors:
        procs.append(m.start())
    parsed_policy = parse_policy(policy)

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{log.url}/checkpoint") as resp:
            early = await resp.read()
        # Load, and SIGKILL w2 in the middle of it; it restarts from its state.
        load_task = asyncio.create_task(load(log.url, token, 4.0))
        await asyncio.sleep(1.5)
        w2_before = await get_json(http, f"{witnesses[1].url}/gossip/v1/checkpoints")
        witnesses[1].stop(signal.SIGKILL)
        await asyncio.sleep(0.5)
        witnesses[1].start()
        entries, receipts = await load_task
        assert entries > 50 and receipts

        # Every published receipt carries the cosigned checkpoint and meets the policy.
        for obj in receipts:
            note = parse_note(parse_receipt(obj).checkpoint)
            assert parsed_policy.satisfied_by(parsed_policy.verify(note.text, note.signatures))
        async with http.get(f"{log.url}/checkpoint") as resp:
            final = await resp.read()
        note = parse_note(final)
        cosigners = parsed_policy.verify(note.text, note.signatures)
        assert "w3" in cosigners and cosigners & {"w1", "w2"}
        (tmp_path / "checkpoint.txt").write_bytes(final)
        verified = translog(
            "verify",
            str(tmp_path / "checkpoint.txt"),
            "--vkey",
            vkey,
            "--policy",
            str(tmp_path / "log" / "witnesses.policy"),
        ).stdout
        size = int(note.text.split("\n")[1])

        # The restarted witness kept its state: it refuses the early (smaller) checkpoint.
        (before_note,) = w2_before["checkpoints"]  # type: ignore[misc]
        w2_size_before = int(str(before_note).split("\n")[1])
        async with http.post(
            f"{witnesses[1].url}/add-checkpoint", data=format_add_checkpoint(0, (), early)
        ) as resp:
            assert resp.status == 409 and resp.content_type == "text/x.tlog.size"
            w2_size = int(await resp.text())
        assert w2_size >= w2_size_before > 0
        async with http.post(
            f"{witnesses[1].url}/add-checkpoint", data=format_add_checkpoint(w2_size, (), early)
        ) as resp:
            assert resp.status == 400  # old above the checkpoint's size: never a rollback

        # ... and cosigns the log's next checkpoints again.
        async def w2_cosigned() -> bool:
            async with http.get(f"{log.url}/checkpoint") as resp:
                n = parse_note(await resp.read())
            return "w2" in parsed_policy.cosigners(n.text, n.signatures)

        await until(w2_cosigned, 10, "w2 to cosign again after its restart")

        # Monitors reach the final size, gossip agrees, nobody alerts.
        async def settled() -> bool:
            for m in monitors:
                status = await get_json(http, f"{m.url}/gossip/v1/status")
                if int(status["consistent_comparisons"]) < 3:  # type: ignore[call-overload]
                    return False
                latest = await get_json(http, f"{m.url}/gossip/v1/checkpoints")
                notes = latest["checkpoints"]
                assert isinstance(notes, list)
                if not notes or int(notes[0].split("\n")[1]) < size:
                    return False
            return True

        await until(settled, 30, "monitors to verify the final checkpoint and gossip")
        statuses = [await get_json(http, f"{p.url}/gossip/v1/status") for p in monitors + witnesses]
    for status in statuses:
        assert status["alerts"] == [] and status["misbehaviour_files"] == [], status
    for m in monitors:
        alerts = tmp_path / m.name / "alerts.jsonl"
        assert not alerts.exists() or alerts.read_text() == ""
    for p in reversed(procs):  # monitors, the log (its final checkpoint is cosigned), witnesses
        assert p.stop() == 0, p.stderr.read_text()[-2000:]
    if (out := out_dir()) is not None:
        summary = {
            "entries": entries,
            "published_receipts": len(receipts),
            "final_size": size,
            "cosigners": sorted(cosigners),
            "gossip": {
                s["name"]: {k: s[k] for k in ("rounds", "consistent_comparisons", "alerts")}
                for s in statuses
            },
        }
        (out / "honest-checkpoint.txt").write_bytes(final)
        (out / "honest-verify.txt").write_text(verified)
        (out / "honest-summary.json").write_text(json.dumps(summary, indent=1))


async def test_split_view_is_caught_and_proven_offline(tmp_path: Path, procs: list[Proc]) -> None:
    data_x = tmp_path / "log-x"
    vkey, token = init_log(data_x)
    headers = {"Authorization": f"Bearer {token}"}

    async def submit(url: str, n: int, tag: str) -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(n):
                async with http.post(
                    f"{url}/add", data=b"%s %d" % (tag.encode(), i), headers=headers
                ) as r:
                    assert r.status == 200

    # A common prefix, then the operator copies the store and runs two backends.
    x = serve("log-x", data_x, tmp_path)
    procs.append(x.start())
    await submit(x.url, 10, "common")
    assert x.stop() == 0
    data_y = tmp_path / "log-y"
    shutil.copytree(data_x, data_y)
    x.start()
    y = serve("log-y", data_y, tmp_path)
    procs.append(y.start())
    await submit(x.url, 5, "seen by A")
    await submit(y.url, 8, "seen by B")

    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    a = monitor_proc("a", tmp_path, x.url, vkey, ports[0], [urls[1]])
    b = monitor_proc("b", tmp_path, y.url, vkey, ports[1], [urls[0]])
    started = time.monotonic()
    procs.append(a.start())
    procs.append(b.start())

    async with aiohttp.ClientSession() as http:

        async def caught() -> list[str]:
            files: list[str] = []
            for m in (a, b):
                status = await get_json(http, f"{m.url}/gossip/v1/status")
                files += status["misbehaviour_files"]  # type: ignore[arg-type]
            return files if len(files) >= 2 else []

        files = await until(caught, 20, "the split view to be caught by both monitors")
    elapsed = time.monotonic() - started
    intervals = elapsed / (INTERVAL_MS / 1000)
    outputs = []
    for path in files:
        done = translog("verify-misbehaviour", path, "--vkey", vkey, check=False)
        assert done.returncode == 0, done.stderr
        assert "signed two incompatible histories (inconsistent-histories)" in done.stdout
        outputs.append(
            f'$ translog verify-misbehaviour {Path(path).name} --vkey "$VKEY"\n{done.stdout}'
        )
    # The monitors raised their own alerts too, pointing at the files.
    for m in (a, b):
        lines = (tmp_path / m.name / "alerts.jsonl").read_text().splitlines()
        kinds = {json.loads(line)["alert"] for line in lines}
        assert "fork" in kinds
    for p in reversed(procs):
        p.stop()
    assert intervals < 40, f"caught after {elapsed:.1f} s"
    if (out := out_dir()) is not None:
        shutil.copy(files[0], out / "split-misbehaviour.json")
        (out / "split-verify.txt").write_text(
            f"caught {elapsed:.1f} s after the monitors started ({intervals:.0f} publication "
            f"intervals of {INTERVAL_MS} ms, monitor start-up included)\n\n" + "\n".join(outputs)
        )
