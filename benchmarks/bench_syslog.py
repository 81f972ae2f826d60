"""Syslog over TLS: messages/s into the tree, against a TLS sink in the same run.

``python -m benchmarks.bench_syslog [--reps 3] [--messages 200000] [--connections 4]``

The load generator is a separate process (its own asyncio loop): ``--connections`` TLS
connections with client certificates, each writing octet-counted RFC 5424 messages (about
200 bytes, with structured data) as fast as the listener reads them. Two servers, each
repetition, in this process:

* **syslog**: the log app (LMDB storage, ``[events] enabled``) with its syslog listener; the
  time runs from the first byte until every message is durable in a signed tree.
* **sink**: a bare asyncio TLS server that frames the same stream and drops it (the
  transport's ceiling on this machine: TLS, asyncio streams, framing).

The figure is messages/s, median of the repetitions, and the paired ratio syslog / sink.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import machine
from tests.ingest.syslog_helpers import (
    Certs,
    client_context,
    make_certs,
    message,
    running_log,
    syslog_config,
)
from translog.formats.syslog import OctetFramer, frame
from translog.http.app import SYSLOG
from translog.http.keys import LOG
from translog.ingest.syslog import server_context
from translog.storage.lmdb import LMDBStorage

CHUNK = 500


def _generate(port: int, certs: Certs, per_connection: int, connections: int) -> None:
    async def one(c: int) -> None:
        _, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
        )
        base = c * per_connection
        for i in range(0, per_connection, CHUNK):
            w.write(
                b"".join(frame(message(base + j)) for j in range(i, min(per_connection, i + CHUNK)))
            )
            await w.drain()
        w.close()
        await w.wait_closed()

    async def main() -> None:
        await asyncio.gather(*(one(c) for c in range(connections)))

    asyncio.run(main())


def _load(port: int, certs: Certs, total: int, connections: int) -> multiprocessing.Process:
    p = multiprocessing.get_context("spawn").Process(
        target=_generate, args=(port, certs, total // connections, connections)
    )
    p.start()
    return p


async def run_syslog(certs: Certs, total: int, connections: int, tmp: Path) -> float:
    storage = LMDBStorage(tmp / "lmdb")
    async with running_log(syslog_config(certs), storage) as app:
        log = app[LOG]
        proc = _load(app[SYSLOG].port, certs, total, connections)
        while app[SYSLOG].window.used == 0 and log.size == 0:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        while log.size < total:
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - start
        proc.join()
    return total / elapsed


async def run_sink(certs: Certs, total: int, connections: int) -> float:
    received = 0
    first = 0.0
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received, first
        framer = OctetFramer(8192)
        while data := await reader.read(64 * 1024):
            if not first:
                first = time.perf_counter()
            received += len(framer.feed(data))
            if received >= total:
                done.set()
        writer.close()

    context = server_context(certs.server_cert, certs.server_key, certs.ca)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context, limit=64 * 1024)
    proc = _load(server.sockets[0].getsockname()[1], certs, total, connections)
    await done.wait()
    elapsed = time.perf_counter() - first
    proc.join()
    server.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    total = args.messages - args.messages % args.connections
    rows = []
    with tempfile.TemporaryDirectory() as d:
        certs = make_certs(Path(d) / "certs")
        for rep in range(args.reps):
            sink = asyncio.run(run_sink(certs, total, args.connections))
            rep_dir = Path(d) / f"rep{rep}"
            rep_dir.mkdir()
            syslog = asyncio.run(run_syslog(certs, total, args.connections, rep_dir))
            rows.append({"syslog_msgs_s": syslog, "sink_msgs_s": sink, "ratio": syslog / sink})
            print(f"rep {rep}: syslog {syslog:,.0f}/s, sink {sink:,.0f}/s, {syslog / sink:.3f}x")
    result = {
        "messages": total,
        "connections": args.connections,
        "reps": rows,
        "median_syslog_msgs_s": statistics.median(r["syslog_msgs_s"] for r in rows),
        "median_sink_msgs_s": statistics.median(r["sink_msgs_s"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
        "machine": machine(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
