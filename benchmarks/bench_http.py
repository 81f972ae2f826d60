"""The HTTP server under load: ``python -m benchmarks.bench_http [--quick] [--profile]``.

Everything runs as separate processes on loopback: ``translog serve`` (started through the CLI
on fresh data directories made with ``translog init`` and ``translog token create``), a
trivial aiohttp server as the same-run baseline (benchmarks/http_trivial.py), and the load
generator: ``wrk`` (one thread, a generated Lua script) when it is installed, else
benchmarks/http_load.py. Open-loop runs always use http_load.py. Every run is bounded in time.

Per repetition, interleaved (servers stay up; each is measured in turn):

1. **single**: ``POST /add`` with a 200-byte JSON payload (default kind: committed), closed
   loop at concurrency 64, req/s with p50/p99 latency to the receipt; the trivial handler's
   ``POST`` with the same body and connections is the baseline. Both again on uvloop.
2. **batch**: ``POST /add-batch`` with 1,000 base64 payloads as NDJSON, 4 connections,
   entries/s (translog, translog on uvloop).
3. **reads at 10^6 entries** (a store built offline with benchmarks/stores.py, then served):
   random full level-0 tiles, ``get-entry-and-proof`` and ``get-proof-by-hash`` for random
   leaves at the published size, 64 connections; the trivial server's GET is the baseline.
4. **integration latency**: open loop (fixed arrival schedule) of single submissions at half
   the maximum sustained rate, i.e. half of this repetition's closed-loop rate from step 1;
   p50/p99 from the *scheduled* send time to the receipt. The trivial handler at the same
   rate is the reference.

``--profile`` instead runs translog under cProfile (benchmarks/http_serve.py) for one
single-entry and one batch run and prints where the event loop and the writer thread spend
their time. ``--wait-quiet S`` first waits (polling every 20 s, up to S seconds) until no
other ``benchmarks`` process is running, and checks again before each repetition.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import pstats
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import http_load
from benchmarks.common import OUT, Row, Series, Settings, machine, progress, scratch_dir
from benchmarks.stores import build
from translog.core.merkle import leaf_hash
from translog.core.tiles import TILE_WIDTH, format_index

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "bench.example/http"
SINGLE_CONNECTIONS = 64
BATCH_CONNECTIONS = 4
BATCH_ENTRIES = 1000
PAYLOAD_BYTES = 200
TARGET_SINGLE_RATIO = 0.5
TARGET_BATCH = 100_000
TARGET_P99_MS = 150.0
WORKERS = 2
"""``translog serve --workers`` for every translog server (``--workers``; 0 = one process)."""


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run."""

    reps: int
    closed_s: float
    batch_s: float
    read_s: float
    open_s: float
    warm_s: float
    read_size: int


def plan_for(settings: Settings) -> Plan:
    """Full: 3 repetitions (about 6 minutes); quick: one short repetition at 10^5."""
    if settings.quick:
        return Plan(1, 3.0, 3.0, 2.0, 3.0, 0.5, 100_000)
    return Plan(max(settings.reps, 1), 8.0, 6.0, 5.0, 8.0, 1.0, 1_000_000)


# ------------------------------------------------------------------------------ payloads


def event_payload(i: int) -> bytes:
    """A 200-byte JSON audit event (padded to exactly PAYLOAD_BYTES)."""
    doc = {
        "action": "user.login",
        "actor": {"type": "user", "id": f"user-{i:08d}"},
        "ip": "203.0.113.7",
        "ts": "2026-11-26T12:00:00Z",
        "pad": "",
    }
    text = json.dumps(doc, separators=(",", ":"))
    doc["pad"] = "x" * (PAYLOAD_BYTES - len(text))
    out = json.dumps(doc, separators=(",", ":")).encode()
    assert len(out) == PAYLOAD_BYTES
    return out


def batch_body(count: int) -> bytes:
    """NDJSON: one JSON string (base64 payload) per line."""
    lines = (json.dumps(base64.b64encode(event_payload(i)).decode()) for i in range(count))
    return ("\n".join(lines) + "\n").encode()


# ------------------------------------------------------------------------------ processes


def translog_exe() -> list[str]:
    """The ``translog`` console script beside this interpreter, else ``python -m``."""
    exe = Path(sys.executable).parent / "translog"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "translog.cli.command"]


def cli(*args: str) -> str:
    """Run the translog CLI; its stdout."""
    done = subprocess.run(
        [*translog_exe(), *args], capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"translog {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class DataDir:
    """A log made with ``translog init`` and a submit token."""

    path: Path
    vkey: str
    token: str


def make_data_dir(path: Path) -> DataDir:
    """``translog init`` and ``translog token create`` (scopes submit and read)."""
    out = cli("init", "--data", str(path), "--origin", ORIGIN)
    vkey = out.strip().splitlines()[-1]
    token = cli(
        "token",
        "create",
        "--data",
        str(path),
        "--name",
        "bench",
        "--scope",
        "submit",
        "--scope",
        "read",
    ).strip()
    return DataDir(path, vkey, token)


class Server:
    """A server subprocess that writes its port to a ready file."""

    def __init__(
        self, name: str, cmd: list[str], ready: Path, log: Path, cpus: str | None = None
    ) -> None:
        self.name = name
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]  # every process of the server on these CPUs
        self.log = log
        ready.unlink(missing_ok=True)
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=_env()
        )
        deadline = time.monotonic() + 120
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not become ready: {self.tail()}")
            time.sleep(0.05)
        self.port = int(ready.read_text().strip())

    def pids(self) -> dict[str, int]:
        """The server's processes by role: ``log`` (or the one process) and ``worker0``, ..."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return {"log": self.proc.pid, **{f"worker{i}": int(p) for i, p in enumerate(found)}}

    def tail(self) -> str:
        """The end of the server's log."""
        self._log_file.flush()
        return self.log.read_bytes()[-2000:].decode(errors="replace")

    def stop(self) -> int | None:
        """SIGTERM, wait for a graceful exit (translog drains), then kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        return self.proc.returncode


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def have_uvloop() -> bool:
    """Whether uvloop is importable (it is optional)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def start_translog(
    data: DataDir,
    tmp: Path,
    name: str,
    *,
    uvloop: bool = False,
    profile: Path | None = None,
    cpus: str | None = None,
) -> Server:
    """``translog serve`` on 127.0.0.1:0 (through benchmarks/http_serve.py for options)."""
    ready = tmp / f"{name}.ready"
    serve = ["serve", "--data", str(data.path), "--listen", "127.0.0.1:0"]
    serve += ["--ready-file", str(ready), "--workers", str(WORKERS)]
    if uvloop or profile:
        cmd = [sys.executable, "-m", "benchmarks.http_serve"]
        cmd += ["--uvloop"] if uvloop else []
        cmd += ["--profile", str(profile)] if profile else []
        cmd += ["--", *serve]
    else:
        cmd = [*translog_exe(), *serve]
    return Server(name, cmd, ready, tmp / f"{name}.log", cpus)


def start_trivial(
    tmp: Path, name: str, *, uvloop: bool = False, procs: int = 1, cpus: str | None = None
) -> Server:
    """The trivial aiohttp baseline server (``procs`` processes on one port)."""
    ready = tmp / f"{name}.ready"
    cmd = [sys.executable, "-m", "benchmarks.http_trivial", "--ready-file", str(ready)]
    cmd += ["--uvloop"] if uvloop else []
    cmd += ["--procs", str(procs)]
    return Server(name, cmd, ready, tmp / f"{name}.log", cpus)


# ------------------------------------------------------------------------ load generation


@dataclass
class Load:
    """What one load run sends."""

    method: str
    paths: list[str]
    headers: dict[str, str]
    body: bytes | None = None


def wrk_path() -> str | None:
    """The wrk binary, if installed (optional: http_load.py is the fallback)."""
    return shutil.which("wrk")


_LUA = """\
local paths = {%(paths)s}
local headers = {%(headers)s}
local body_file = %(body_file)s
local reqs = {}
function init(args)
  local body = nil
  if body_file ~= "" then
    local f = assert(io.open(body_file, "rb"))
    body = f:read("*a")
    f:close()
  end
  for i, p in ipairs(paths) do
    reqs[i] = wrk.format("%(method)s", p, headers, body)
  end
  math.randomseed(%(seed)d)
end
function request()
  return reqs[math.random(#reqs)]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"timeout":%%d,"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def run_wrk(
    port: int,
    load: Load,
    connections: int,
    seconds: float,
    tmp: Path,
    cpus: str | None = None,
) -> dict[str, Any]:
    """One closed-loop wrk run (one thread, on ``cpus`` if given); normalised result with
    the CPU seconds wrk itself used (``generator_cpu_s``)."""
    body_file = ""
    if load.body is not None:
        body_path = tmp / "wrk-body.bin"
        body_path.write_bytes(load.body)
        body_file = str(body_path)
    script = tmp / "wrk.lua"
    script.write_text(
        _LUA
        % {
            "paths": ",".join(_lua_string(p) for p in load.paths),
            "headers": ",".join(
                f"[{_lua_string(k)}]={_lua_string(v)}" for k, v in load.headers.items()
            ),
            "body_file": _lua_string(body_file),
            "method": load.method,
            "seed": random.randrange(1 << 30),
        }
    )
    cmd = ["taskset", "-c", cpus] if cpus is not None else []
    cmd += [wrk_path() or "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("WRKJSON "))
    duration = r["duration_us"] / 1e6
    bad = r["status"]
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    ok = r["requests"] - bad
    return {
        "generator": "wrk",
        "generator_cpu_s": cpu_s,
        "mode": "closed",
        "duration": duration,
        "requests": r["requests"],
        "ok": ok,
        "non_2xx": bad,
        "errors": errors,
        "rate": ok / duration,
        "p50_ms": r["p50_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "max_ms": r["max_us"] / 1e3,
    }


def run_python(
    port: int,
    load: Load,
    tmp: Path,
    *,
    mode: str,
    seconds: float,
    connections: int = 0,
    rate: float = 0.0,
) -> dict[str, Any]:
    """One run of benchmarks/http_load.py in its own process."""
    body_file = None
    if load.body is not None:
        body_path = tmp / "py-body.bin"
        body_path.write_bytes(load.body)
        body_file = str(body_path)
    spec = {
        "port": port,
        "method": load.method,
        "paths": load.paths,
        "headers": load.headers,
        "body_file": body_file,
        "mode": mode,
        "duration": seconds,
        "connections": connections,
        "rate": rate,
        "max_connections": 1024,
        "seed": random.randrange(1 << 30),
    }
    result: dict[str, Any] = http_load.run_process(spec, tmp)
    return result


def closed(
    port: int, load: Load, connections: int, seconds: float, tmp: Path, *, use_wrk: bool
) -> dict[str, Any]:
    """A closed-loop run with wrk when available, else the Python generator."""
    if use_wrk:
        return run_wrk(port, load, connections, seconds, tmp)
    return run_python(port, load, tmp, mode="closed", seconds=seconds, connections=connections)


# ---------------------------------------------------------------------------- quiet check


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, command line) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        table[int(entry.name)] = (ppid, cmdline.strip())
    return table


def other_benchmarks() -> list[str]:
    """Command lines of ``benchmarks`` processes that are neither ours nor our ancestors'."""
    table = _proc_table()
    ours = {os.getpid()}
    pid = os.getpid()
    while pid in table and pid > 1:  # ancestors (e.g. benchmarks.run that started us)
        pid = table[pid][0]
        ours.add(pid)
    changed = True
    while changed:  # descendants
        changed = False
        for p, (ppid, _) in table.items():
            if ppid in ours and p not in ours and ppid != 1:
                ours.add(p)
                changed = True
    return [
        f"{p} {cmd[:100]}"
        for p, (_, cmd) in table.items()
        if p not in ours and "benchmarks" in cmd and "pytest" not in cmd
    ]


def wait_for_quiet(budget: float) -> str:
    """Wait (polling every 20 s) while other benchmarks run, up to ``budget`` seconds."""
    deadline = time.monotonic() + budget
    others = other_benchmarks()
    while others and time.monotonic() < deadline:
        progress(f"waiting: other benchmark processes are running: {others}")
        time.sleep(20)
        others = other_benchmarks()
    load = os.getloadavg()[0]
    if others:
        progress(f"WARNING: measuring while other benchmarks run: {others}")
        return f"other benchmarks running (load {load:.2f})"
    return f"quiet (load {load:.2f})"


# ---------------------------------------------------------------------------------- checks


def _request(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def sanity_check(port: int, data: DataDir) -> None:
    """One real single and one batch submission; the receipts verify with the vkey."""
    from translog.formats.receipt import parse_receipt, verify_receipt

    auth = {"Authorization": f"Bearer {data.token}"}
    payload = event_payload(0)
    raw = _request(f"http://127.0.0.1:{port}/add", data=payload, headers=auth)
    verify_receipt(parse_receipt(json.loads(raw)), data.vkey, payload)
    body = batch_body(10)
    hdrs = {**auth, "Content-Type": "application/x-ndjson"}
    raw = _request(f"http://127.0.0.1:{port}/add-batch", data=body, headers=hdrs)
    verify_receipt(
        parse_receipt(json.loads(raw)), data.vkey, payloads=[event_payload(i) for i in range(10)]
    )


def read_check(port: int, loads: dict[str, Load], size: int) -> None:
    """The read paths answer: a full tile, and both proofs at ``size``."""
    base = f"http://127.0.0.1:{port}"
    tile = _request(base + loads["tile"].paths[0])
    if len(tile) != 32 * TILE_WIDTH:
        raise AssertionError(f"tile of {len(tile)} bytes")
    proof = json.loads(_request(base + loads["proof by index"].paths[0]))
    by_hash = json.loads(_request(base + loads["proof by hash"].paths[0]))
    if (
        proof["audit_path"] != by_hash["audit_path"]
        or len(proof["audit_path"]) < size.bit_length() - 1
    ):
        raise AssertionError("the two proof routes disagree")


# ------------------------------------------------------------------------------ the bench


@dataclass
class Setup:
    """Servers and loads shared by the repetitions."""

    tmp: Path
    use_wrk: bool
    uvloop: bool
    servers: dict[str, Server]
    tokens: dict[str, str]
    """Server name -> its submit token (translog servers only)."""
    loads: dict[str, Load]
    read_size: int
    notes: list[str]

    def load(self, server: str, name: str) -> Load:
        """Load ``name`` with the server's bearer token, if it has one."""
        load = self.loads[name]
        token = self.tokens.get(server)
        if token is None:
            return load
        return Load(
            load.method, load.paths, {**load.headers, "Authorization": f"Bearer {token}"}, load.body
        )


def read_loads(data: DataDir, size: int, rng: random.Random) -> dict[str, Load]:
    """Random full level-0 tiles and proofs at ``size`` (leaf hashes read from the store)."""
    from translog.storage.lmdb import LMDBStorage

    full_tiles = size // TILE_WIDTH
    tiles = [
        f"/tile/0/{format_index(n)}" for n in rng.sample(range(full_tiles), min(full_tiles, 4000))
    ]
    indexes = [rng.randrange(size) for _ in range(2000)]
    by_index = [f"/ct/v1/get-entry-and-proof?leaf_index={i}&tree_size={size}" for i in indexes]
    storage = LMDBStorage(data.path / "lmdb", readonly=True)
    try:
        hashes = [leaf_hash(storage.get_entries(i, i + 1)[0].leaf) for i in indexes]
    finally:
        storage.close()
    by_hash = [
        f"/ct/v1/get-proof-by-hash?hash={urllib.parse.quote(base64.b64encode(h).decode(), safe='')}"
        f"&tree_size={size}"
        for h in hashes
    ]
    return {
        "tile": Load("GET", tiles, {}),
        "proof by index": Load("GET", by_index, {}),
        "proof by hash": Load("GET", by_hash, {}),
        "trivial get": Load("GET", ["/get/x"], {}),
    }


@contextlib.contextmanager
def setup(plan: Plan, settings: Settings) -> Iterator[Setup]:
    """Data directories, the 10^6 store, every server; torn down afterwards."""
    with scratch_dir("http") as tmp:
        use_wrk = wrk_path() is not None
        uv = have_uvloop()
        progress(
            f"http: load generator {'wrk' if use_wrk else 'python (wrk not installed)'}; "
            f"uvloop {'installed' if uv else 'not installed'}"
        )
        write = make_data_dir(tmp / "write")
        read = make_data_dir(tmp / "read")
        progress(f"http: building a store of {plan.read_size:,} entries for the read runs")
        built = build(read.path / "lmdb", plan.read_size)
        progress(f"http: built in {built.seconds:.1f} s")
        rng = random.Random(7)
        auth = {"Authorization": f"Bearer {write.token}"}
        loads = {
            "single": Load(
                "POST", ["/add"], {**auth, "Content-Type": "application/json"}, event_payload(1)
            ),
            "trivial post": Load(
                "POST", ["/add"], {**auth, "Content-Type": "application/json"}, event_payload(1)
            ),
            "batch": Load(
                "POST",
                ["/add-batch"],
                {**auth, "Content-Type": "application/x-ndjson"},
                batch_body(BATCH_ENTRIES),
            ),
            **read_loads(read, plan.read_size, rng),
        }
        servers: dict[str, Server] = {}
        tokens = {"translog": write.token, "translog read": read.token}
        try:
            servers["translog"] = start_translog(write, tmp, "translog")
            servers["trivial"] = start_trivial(tmp, "trivial")
            if WORKERS > 1:
                servers[_multi()] = start_trivial(tmp, "trivial-multi", procs=WORKERS)
            servers["translog read"] = start_translog(read, tmp, "translog-read")
            sanity_check(servers["translog"].port, write)
            if uv:
                write_uv = make_data_dir(tmp / "write-uv")
                tokens["translog uvloop"] = write_uv.token
                servers["translog uvloop"] = start_translog(
                    write_uv, tmp, "translog-uvloop", uvloop=True
                )
                servers["trivial uvloop"] = start_trivial(tmp, "trivial-uvloop", uvloop=True)
                sanity_check(servers["translog uvloop"].port, write_uv)
            progress("http: servers up; receipts from test submissions verify")
            read_check(servers["translog read"].port, loads, plan.read_size)
            yield Setup(tmp, use_wrk, uv, servers, tokens, loads, plan.read_size, [])
        finally:
            for name, server in servers.items():
                code = server.stop()
                if code not in (0, -signal.SIGTERM):
                    progress(f"http: {name} exited with {code}: {server.tail()}")


def _measure(
    s: Setup, server: str, load: str, connections: int, seconds: float, warm: float
) -> dict[str, Any]:
    port = s.servers[server].port
    what = s.load(server, load)
    if warm:
        closed(port, what, connections, warm, s.tmp, use_wrk=s.use_wrk)
    r = closed(port, what, connections, seconds, s.tmp, use_wrk=s.use_wrk)
    if r["non_2xx"] or r["errors"]:
        warning = f"{server}/{load}: {r['non_2xx']} non-2xx, {r['errors']} errors"
        s.notes.append(warning)
        progress(f"http: WARNING {warning}")
    return r


def _record(series: Series, case: str, r: dict[str, Any], scale: float = 1.0) -> None:
    series.add(case, r["rate"] * scale)
    series.add(f"{case} p50", r["p50_ms"])
    series.add(f"{case} p99", r["p99_ms"])


def repetition(s: Setup, plan: Plan, series: Series, rep: int, notes: list[str]) -> None:
    """One interleaved repetition of every measurement."""
    c1, cb = SINGLE_CONNECTIONS, BATCH_CONNECTIONS
    # 1. single-entry submissions vs the trivial POST handler
    order = ["trivial", "translog"] + (["trivial uvloop", "translog uvloop"] if s.uvloop else [])
    order += [_multi()] if _multi() in s.servers else []
    for name in order if rep % 2 == 0 else order[::-1]:
        load = "single" if name.startswith("translog") else "trivial post"
        r = _measure(s, name, load, c1, plan.closed_s, plan.warm_s)
        _record(series, f"single POST c{c1}: {name}", r)
        progress(
            f"http rep {rep + 1}: single {name}: {r['rate']:,.0f} req/s, "
            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        )
    # 2. batches of 1,000
    for name in ["translog", "translog uvloop"] if s.uvloop else ["translog"]:
        r = _measure(s, name, "batch", cb, plan.batch_s, plan.warm_s)
        _record(series, f"batch POST c{cb}: {name}", r, BATCH_ENTRIES)
        progress(
            f"http rep {rep + 1}: batch {name}: {r['rate'] * BATCH_ENTRIES:,.0f} entries/s "
            f"({r['rate']:,.1f} req/s), p99 {r['p99_ms']:.1f} ms"
        )
    # 3. reads at 10^6
    for name, load in (
        ("trivial", "trivial get"),
        ("translog read", "tile"),
        ("translog read", "proof by index"),
        ("translog read", "proof by hash"),
    ):
        r = _measure(s, name, load, c1, plan.read_s, plan.warm_s / 2)
        label = "trivial" if name == "trivial" else load
        _record(series, f"GET c{c1}: {label}", r)
        progress(
            f"http rep {rep + 1}: GET {label}: {r['rate']:,.0f} req/s, p99 {r['p99_ms']:.2f} ms"
        )
    # 4. integration latency, open loop at half this repetition's maximum sustained rate
    rate = series.values[f"single POST c{c1}: translog"][-1] / 2
    series.add("open loop: offered rate", rate)
    for name, load in (("translog", "single"), ("trivial", "trivial post")):
        port = s.servers[name].port
        what = s.load(name, load)
        r = run_python(port, what, s.tmp, mode="open", seconds=plan.open_s, rate=rate)
        series.add(f"open loop: {name} achieved", r["rate"])
        series.add(f"open loop: {name} p50", r["p50_ms"])
        series.add(f"open loop: {name} p99", r["p99_ms"])
        series.add(f"open loop: {name} max", r["max_ms"])
        series.add(f"open loop: {name} generator lag p99", r["lag_p99_ms"] or 0.0)
        if r["non_2xx"] or r["errors"]:
            notes.append(
                f"rep {rep + 1} open loop {name}: {r['non_2xx']} non-2xx, {r['errors']} errors"
            )
        progress(
            f"http rep {rep + 1}: open loop {name} at {rate:,.0f}/s: achieved "
            f"{r['rate']:,.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"max {r['max_ms']:.1f} ms, {r['connections_opened']} connections"
        )


def rows(series: Series, s: Setup) -> list[Row]:
    """The result table."""
    c1, cb = SINGLE_CONNECTIONS, BATCH_CONNECTIONS
    out = []
    single = f"single POST c{c1}: "
    out.append(series.row(single + "trivial", "req/s", note="baseline"))
    out.append(
        series.row(
            single + "translog",
            "req/s",
            single + "trivial",
            shown_as="trivial",
            note=f"target >= {TARGET_SINGLE_RATIO:.0%} of trivial",
        )
    )
    multi = single + _multi()
    if multi in series.values:
        out.append(series.row(multi, "req/s", single + "trivial", shown_as="trivial"))
        series.values["translog vs multi"] = series.values[single + "translog"]
        out.append(
            series.row(
                "translog vs multi",
                "req/s",
                multi,
                shown_as=_multi(),
                note="same number of HTTP processes",
            )
        )
        for q in ("p50", "p99"):
            out.append(series.row(f"{multi} {q}", "ms"))
    if s.uvloop:
        out.append(
            series.row(single + "trivial uvloop", "req/s", single + "trivial", shown_as="trivial")
        )
        out.append(
            series.row(
                single + "translog uvloop",
                "req/s",
                single + "trivial uvloop",
                shown_as="trivial uvloop",
            )
        )
        series.values["translog uvloop vs asyncio"] = series.values[single + "translog uvloop"]
        out.append(
            series.row(
                "translog uvloop vs asyncio",
                "req/s",
                single + "translog",
                shown_as="translog (asyncio)",
            )
        )
    for name in ["trivial", "translog"] + (
        ["trivial uvloop", "translog uvloop"] if s.uvloop else []
    ):
        for q in ("p50", "p99"):
            out.append(series.row(f"{single}{name} {q}", "ms"))
    batch = f"batch POST c{cb}: "
    out.append(series.row(batch + "translog", "entries/s", note=f"target >= {TARGET_BATCH:,}"))
    if s.uvloop:
        out.append(
            series.row(
                batch + "translog uvloop",
                "entries/s",
                batch + "translog",
                shown_as="translog (asyncio)",
            )
        )
    for name in ["translog"] + (["translog uvloop"] if s.uvloop else []):
        out.append(series.row(f"{batch}{name} p99", "ms", note="per 1,000-entry request"))
    get = f"GET c{c1}: "
    out.append(series.row(get + "trivial", "req/s", note="baseline"))
    for load in ("tile", "proof by index", "proof by hash"):
        note = f"n={s.read_size:.0e}".replace("+0", "")
        out.append(series.row(get + load, "req/s", get + "trivial", shown_as="trivial", note=note))
    for load in ("trivial", "tile", "proof by index", "proof by hash"):
        for q in ("p50", "p99"):
            out.append(series.row(f"{get}{load} {q}", "ms"))
    out.append(series.row("open loop: offered rate", "req/s", note="half the closed-loop rate"))
    for name in ("translog", "trivial"):
        for what in ("achieved", "p50", "p99", "max", "generator lag p99"):
            unit = "req/s" if what == "achieved" else "ms"
            note = (
                f"target p99 <= {TARGET_P99_MS:g} ms" if (name, what) == ("translog", "p99") else ""
            )
            out.append(series.row(f"open loop: {name} {what}", unit, note=note))
    return out


def _multi() -> str:
    """The name of the trivial server with as many processes as translog has workers."""
    return f"trivial {WORKERS} procs"


def verdicts(table: list[Row]) -> list[str]:
    """The issue's targets, met or missed, from the medians."""
    by = {r.case: r for r in table}
    single = by[f"single POST c{SINGLE_CONNECTIONS}: translog"]
    batch = by[f"batch POST c{BATCH_CONNECTIONS}: translog"]
    p99 = by["open loop: translog p99"]
    ratio = single.ratio or 0.0
    return [
        f"single-entry rate vs trivial aiohttp POST: {ratio:.2f} (target >= "
        f"{TARGET_SINGLE_RATIO:.2f}): {'MET' if ratio >= TARGET_SINGLE_RATIO else 'MISSED'}",
        f"batched entries/s: {batch.median:,.0f} (target >= {TARGET_BATCH:,}): "
        f"{'MET' if batch.median >= TARGET_BATCH else 'MISSED'}",
        f"integration p99 at half the max rate: {p99.median:.1f} ms (target <= "
        f"{TARGET_P99_MS:g} ms): {'MET' if p99.median <= TARGET_P99_MS else 'MISSED'}",
    ]


def run(
    settings: Settings, *, wait_quiet: float = 0.0, notes: list[str] | None = None
) -> list[Row]:
    """All HTTP measurements; the rows for benchmarks/run.py's table."""
    plan = plan_for(settings)
    notes = notes if notes is not None else []
    series = Series("http")
    with setup(plan, settings) as s:
        for rep in range(plan.reps):
            state = wait_for_quiet(wait_quiet)
            notes.append(f"rep {rep + 1}: {state}")
            load = "/".join(f"{x:.1f}" for x in os.getloadavg())
            notes.append(f"rep {rep + 1}: load average {load} at start")
            progress(f"http: repetition {rep + 1}/{plan.reps} ({state}, load average {load})")
            repetition(s, plan, series, rep, notes)
        notes.extend(s.notes)
        notes.append(
            f"load generator: {'wrk 1 thread' if s.use_wrk else 'benchmarks/http_load.py'}"
        )
        table = rows(series, s)
    notes.extend(verdicts(table))
    for n in notes:
        progress(f"http: {n}")
    return table


# ------------------------------------------------------------------------------- profile


def profile(settings: Settings) -> None:
    """translog under cProfile: single, batch, tile and proof runs; print the hot spots."""
    plan = plan_for(settings)
    use_wrk = wrk_path() is not None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = OUT / f"http-profile-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    with scratch_dir("http-profile") as tmp:
        write = make_data_dir(tmp / "write")
        read = make_data_dir(tmp / "read")
        size = min(plan.read_size, 100_000)
        build(read.path / "lmdb", size)
        reads = read_loads(read, size, random.Random(7))
        runs = [
            ("single", write, Load("POST", ["/add"], {"Content-Type": "application/json"},
                                   event_payload(1)), SINGLE_CONNECTIONS),
            ("batch", write, Load("POST", ["/add-batch"],
                                  {"Content-Type": "application/x-ndjson"},
                                  batch_body(BATCH_ENTRIES)), BATCH_CONNECTIONS),
            ("tile", read, reads["tile"], SINGLE_CONNECTIONS),
            ("proof", read, reads["proof by index"], SINGLE_CONNECTIONS),
        ]  # fmt: skip
        for kind, data, load, conns in runs:
            auth = {**load.headers, "Authorization": f"Bearer {data.token}"}
            load = Load(load.method, load.paths, auth, load.body)
            server = start_translog(data, tmp, f"profile-{kind}", profile=out_dir / kind)
            try:
                r = closed(server.port, load, conns, plan.closed_s, tmp, use_wrk=use_wrk)
            finally:
                server.stop()
            progress(f"profile {kind}: {r['rate']:,.0f} req/s under cProfile")
            for path in sorted(out_dir.glob(f"{kind}.*.pstats")):
                _print_profile(path)
    progress(f"profiles written to {out_dir}")


def _print_profile(path: Path, top: int = 30) -> None:
    buf = io.StringIO()
    stats = pstats.Stats(str(path), stream=buf)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"\n### {path.name}\n")
    print(buf.getvalue())


# ---------------------------------------------------------------------------------- main


def _fmt(value: float, unit: str) -> str:
    if unit.endswith("/s"):
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def print_table(table: list[Row]) -> None:
    """An aligned table: case, median, unit, paired ratio, note."""
    width = max(len(r.case) for r in table)
    print("\n## http\n")
    for r in table:
        ratio = f"{r.ratio:.3f}x {r.baseline}" if r.ratio is not None else ""
        median = _fmt(r.median, r.unit)
        print(f"{r.case:<{width}}  {median:>12} {r.unit:<9} {ratio}  {r.note}".rstrip())


def extra_machine_facts() -> dict[str, Any]:
    """aiohttp, uvloop and wrk versions."""
    import aiohttp

    facts: dict[str, Any] = {"aiohttp": aiohttp.__version__}
    try:
        import uvloop

        facts["uvloop"] = uvloop.__version__
    except ImportError:
        facts["uvloop"] = None
    exe = wrk_path()
    if exe:
        done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        facts["wrk"] = (done.stdout or done.stderr).splitlines()[0].strip()
    else:
        facts["wrk"] = None
    return facts


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.bench_http [--quick] [--reps N] [--wait-quiet S] [--profile]``."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="one short repetition at 10^5 entries")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds while other benchmark processes run",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the server instead")
    p.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"translog serve --workers (default {WORKERS}; 0 = one process)",
    )
    args = p.parse_args(argv)
    globals()["WORKERS"] = args.workers
    signal.signal(signal.SIGTERM, _interrupt)  # so that the servers are stopped on SIGTERM too
    settings = Settings(quick=args.quick, reps=args.reps)
    facts = {**machine(), **extra_machine_facts()}
    progress("machine: " + ", ".join(f"{k}={v}" for k, v in facts.items()))
    if args.profile:
        wait_for_quiet(args.wait_quiet)
        profile(settings)
        return 0
    started = time.time()
    notes: list[str] = []
    table = run(settings, wait_quiet=args.wait_quiet, notes=notes)
    print_table(table)
    print()
    for n in notes:
        print(f"- {n}")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = OUT / f"http-{stamp}.json"
    doc = {
        "machine": facts,
        "settings": vars(args),
        "started": stamp,
        "seconds": round(time.time() - started, 1),
        "notes": notes,
        "results": [r.to_json() for r in table],
    }
    path.write_text(json.dumps(doc, indent=1))
    progress(f"wrote {path} after {doc['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
