"""A small HTTP/1.1 load generator for benchmarks/bench_http.py, run as its own process.

``python -m benchmarks.http_load SPEC.json`` prints one JSON line with the results. The spec::

    {"port": 8080, "method": "POST", "paths": ["/add"], "headers": {"Authorization": "..."},
     "body_file": "body.bin" | null, "mode": "closed" | "open", "duration": 10,
     "connections": 64,            # closed loop: each connection sends, waits, sends again
     "rate": 2000,                 # open loop: requests per second on a fixed schedule
     "max_connections": 1024,      # open loop: cap on connections opened on demand
     "max_idle_seconds": 10,       # open loop: close a keep-alive connection idle this long
     "seed": 1}

* **closed**: ``connections`` keep-alive connections, each sending its next request as soon as
  the previous answer is complete, until ``duration`` seconds have passed. Latency is from
  writing the request to reading the whole response.
* **open**: request *i* is due at ``start + i / rate`` whatever happened before it (no
  coordinated omission); it goes out on an idle keep-alive connection, or a new one. Latency is
  from the *due* time to the whole response, so a generator or server that falls behind shows
  up in the latency; ``lag_p99_ms`` says how late the generator itself sent requests. Like
  any pooled client, it closes a connection that sat idle ``max_idle_seconds`` (default 10 s,
  below the server's 15 s idle timeout) instead of racing the server's close with a request.

Every error is also counted by kind in ``error_kinds``: ``timeout`` (no whole answer within
the 10-second drain), ``connect`` (the connection could not be opened), ``closed`` (the server
closed the connection before answering), ``protocol`` (an answer it cannot frame) and
``no connection`` (the open loop's connection cap was reached).

It speaks just enough HTTP/1.1 for this (``Content-Length`` framed responses, keep-alive), on
plain asyncio protocols (uvloop when installed), so that one process can drive tens of
thousands of requests per second. The whole run is bounded by ``duration`` plus a 10-second
drain.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

_DRAIN = 10.0


class _Conn(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.need = -1
        self.status = 0
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.idle_since = time.perf_counter()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))
        self.waiter = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\ncontent-length:")
            if at < 0:
                self.waiter.set_exception(ValueError("response without Content-Length"))
                self.waiter = None
                return
            line_end = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : line_end if line_end > 0 else len(head)])
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            del self.buf[: self.need]
            self.need = -1
            waiter, self.waiter = self.waiter, None
            waiter.set_result(self.status)

    def send(self, request: bytes) -> asyncio.Future[int]:
        """Write ``request``; the future resolves with the response status."""
        if self.transport is None:
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


async def _connect(port: int) -> _Conn:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(_Conn, "127.0.0.1", port)
    return conn


def build_requests(spec: dict[str, Any]) -> list[bytes]:
    """The raw requests of ``spec``: one per path."""
    body = Path(spec["body_file"]).read_bytes() if spec.get("body_file") else b""
    head_lines = [f"Host: 127.0.0.1:{spec['port']}"]
    head_lines += [f"{k}: {v}" for k, v in spec.get("headers", {}).items()]
    if body or spec["method"] == "POST":
        head_lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(head_lines)
    return [
        f"{spec['method']} {p} HTTP/1.1\r\n{head}\r\n\r\n".encode() + body for p in spec["paths"]
    ]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0
        self.non_2xx = 0
        self.errors = 0
        self.error_kinds: dict[str, int] = {}
        self.lags: list[float] = []
        self.seconds: dict[int, list[float]] = {}
        """Open loop: per second of the schedule, [answers, worst latency]."""

    def second(self, at: int, latency: float) -> None:
        cell = self.seconds.get(at)
        if cell is None:
            self.seconds[at] = [1, latency]
        else:
            cell[0] += 1
            if latency > cell[1]:
                cell[1] = latency

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def failure(self, e: BaseException, connecting: bool = False) -> None:
        if isinstance(e, TimeoutError):
            self.error("timeout")
        elif connecting:
            self.error("connect")
        elif isinstance(e, ConnectionError):
            self.error("closed")
        else:
            self.error("protocol")

    def status(self, status: int, latency: float) -> None:
        self.latencies.append(latency)
        if 200 <= status < 300:
            self.ok += 1
        else:
            self.non_2xx += 1


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def closed_loop(spec: dict[str, Any], requests: list[bytes], tally: _Tally) -> float:
    """``connections`` workers, each one request at a time, for ``duration`` seconds."""
    conns = await asyncio.gather(*(_connect(spec["port"]) for _ in range(spec["connections"])))
    rng = random.Random(spec.get("seed", 1))
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    started = clock()
    deadline = started + spec["duration"]

    async def worker(conn: _Conn) -> None:
        while clock() < deadline:
            request = requests[rng.randrange(len(requests))] if len(requests) > 1 else requests[0]
            sent = clock()
            try:
                status = await asyncio.wait_for(conn.send(request), _DRAIN)
            except (ConnectionError, ValueError, TimeoutError) as e:
                tally.failure(e)
                if conn.transport is not None:
                    conn.transport.close()
                conn = await _connect(spec["port"])
                continue
            tally.status(status, clock() - sent)

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = clock() - started
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return elapsed


async def open_loop(spec: dict[str, Any], requests: list[bytes], tally: _Tally) -> float:
    """Requests due at a fixed rate, sent on idle connections (opened on demand)."""
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    rate = float(spec["rate"])
    total = int(rate * spec["duration"])
    cap = int(spec.get("max_connections", 1024))
    max_idle = float(spec.get("max_idle_seconds", 10.0))
    rng = random.Random(spec.get("seed", 1))
    idle: list[_Conn] = list(
        await asyncio.gather(*(_connect(spec["port"]) for _ in range(min(cap, 16))))
    )
    opened = len(idle)
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float, request: bytes) -> None:
        nonlocal opened
        conn = idle.pop() if idle else None
        while conn is not None and (conn.transport is None or clock() - conn.idle_since > max_idle):
            # Closed by the server while it sat idle (its keep-alive timeout), or idle long
            # enough that the server may be closing it right now: a pooled client does not
            # reuse it, and it is no error of this request.
            if conn.transport is not None:
                conn.transport.close()
            opened -= 1
            conn = idle.pop() if idle else None
        connecting = conn is None
        try:
            if conn is None:
                if opened >= cap:
                    tally.error("no connection")
                    return
                opened += 1
                conn = await _connect(spec["port"])
                connecting = False
            tally.lags.append(clock() - due)
            status = await asyncio.wait_for(conn.send(request), _DRAIN)
        except (OSError, ValueError, TimeoutError) as e:
            tally.failure(e, connecting)
            if connecting:
                opened -= 1
            if conn is not None and conn.transport is not None:
                conn.transport.close()
            return
        tally.status(status, clock() - due)
        tally.second(int(due - start), clock() - due)
        conn.idle_since = clock()
        idle.append(conn)

    start = clock() + 0.05
    i = 0
    while i < total:
        now = clock()
        due = start + i / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while i < total and start + i / rate <= now:
            request = requests[rng.randrange(len(requests))]
            task = asyncio.create_task(one(start + i / rate, request))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=_DRAIN)
        for task in pending:
            task.cancel()
        for _ in pending:
            tally.error("timeout")
    elapsed = total / rate  # the schedule's length: "rate" is then the achieved arrival rate
    for c in idle:
        if c.transport is not None:
            c.transport.close()
    spec["connections_opened"] = opened
    return elapsed


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the spec; return the result document."""
    requests = build_requests(spec)
    tally = _Tally()
    cpu = time.process_time()
    if spec["mode"] == "closed":
        elapsed = await closed_loop(spec, requests, tally)
    else:
        elapsed = await open_loop(spec, requests, tally)
    lat = tally.latencies
    return {
        "generator": "python",
        "mode": spec["mode"],
        "duration": elapsed,
        "requests": len(lat),
        "ok": tally.ok,
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
        "error_kinds": tally.error_kinds,
        "rate": tally.ok / elapsed if elapsed else 0.0,
        "p50_ms": 1e3 * _percentile(lat, 50),
        "p99_ms": 1e3 * _percentile(lat, 99),
        "max_ms": 1e3 * max(lat, default=float("nan")),
        "lag_p99_ms": 1e3 * _percentile(tally.lags, 99) if tally.lags else None,
        "connections_opened": spec.get("connections_opened", spec.get("connections")),
        "generator_cpu_s": time.process_time() - cpu,
        # Open loop: the worst latency of the requests due in each second of the schedule.
        "worst_by_second_ms": [round(1e3 * tally.seconds[k][1], 1) for k in sorted(tally.seconds)],
    }


def run_process(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run ``spec`` with this generator in its own process; return its result document.

    The spec is written to ``workdir/load-spec.json``; the run is bounded by its duration plus
    a minute. Raises RuntimeError, with the end of the generator's stderr, if it fails.
    """
    root = Path(__file__).resolve().parents[1]
    path = workdir / "load-spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.http_load", str(path)],
        capture_output=True,
        text=True,
        timeout=spec["duration"] + 60,
        check=False,
        cwd=root,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"http_load failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.http_load SPEC.json``."""
    args = list(sys.argv[1:] if argv is None else argv)
    spec = json.loads(Path(args[0]).read_text())
    try:
        import uvloop

        result = uvloop.run(run(spec))
    except ImportError:
        result = asyncio.run(run(spec))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
