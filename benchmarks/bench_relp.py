"""RELP over TLS: messages/s acknowledged (so durable), against plain syslog in the same run.

``python -m benchmarks.bench_relp [--reps 3] [--messages 100000] [--connections 4]
[--window 128]``

The load generator is a separate process: ``--connections`` RELP sessions over TLS with
client certificates, each keeping at most ``--window`` messages unacknowledged (librelp's
default window is 128), the same ~200-byte RFC 5424 messages as bench_syslog. Three servers,
each repetition:

* **relp**: the log app (LMDB storage, events on) with its RELP listener; the time runs from
  the first ``open`` until the last ``200 OK`` reaches the client, which is after the last
  message is durable.
* **syslog**: the same app with the plain syslog listener (bench_syslog's run: no
  acknowledgement, so no window); from the first byte until every message is durable.
* **sink**: a bare RELP server that answers every message ``200 OK`` at once (the
  protocol's ceiling here: TLS, asyncio, framing, the window).

Figures are medians of the repetitions, with the paired ratios relp / syslog and relp / sink.
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
from typing import Any

from benchmarks.bench_syslog import run_syslog
from benchmarks.common import machine
from tests.ingest.syslog_helpers import (
    Certs,
    client_context,
    make_certs,
    message,
    running_log,
    syslog_config,
)
from translog.formats.relp import RelpFramer, encode_frame, response
from translog.http.app import RELP
from translog.http.keys import LOG
from translog.ingest.syslog import server_context
from translog.storage.lmdb import LMDBStorage

OPEN = encode_frame(1, "open", b"relp_version=0\nrelp_software=bench,1\ncommands=syslog")


def _generate(
    port: int, certs: Certs, per_connection: int, connections: int, window: int, out: Any
) -> None:
    async def one(c: int) -> None:
        reader, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(certs), server_hostname="localhost"
        )
        framer = RelpFramer(1 << 16)
        w.write(OPEN)
        sent = acked = 0
        base = c * per_connection
        opened = False
        while acked < per_connection:
            if opened and sent < per_connection and sent - acked < window:
                n = min(window - (sent - acked), per_connection - sent)
                w.write(
                    b"".join(
                        encode_frame(sent + i + 2, "syslog", message(base + sent + i))
                        for i in range(n)
                    )
                )
                sent += n
            data = await reader.read(1 << 16)
            if not data:
                raise RuntimeError(f"connection {c} closed after {acked} answers")
            for f in framer.feed(data):
                if f.txnr == 1:
                    opened = True
                elif f.data == b"200 OK":
                    acked += 1
                else:
                    raise RuntimeError(f"answer {f}")
        w.write(encode_frame(per_connection + 2, "close"))
        await w.drain()
        w.close()

    async def main() -> None:
        start = time.perf_counter()
        await asyncio.gather(*(one(c) for c in range(connections)))
        out.put(time.perf_counter() - start)

    asyncio.run(main())


def _load(port: int, certs: Certs, total: int, connections: int, window: int) -> tuple[Any, Any]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(
        target=_generate, args=(port, certs, total // connections, connections, window, out)
    )
    p.start()
    return p, out


async def _elapsed(proc: Any, out: Any) -> float:
    while out.empty():
        await asyncio.sleep(0.01)
    elapsed = float(out.get())
    proc.join()
    return elapsed


async def run_relp(certs: Certs, total: int, connections: int, window: int, tmp: Path) -> float:
    storage = LMDBStorage(tmp / "lmdb")
    config = syslog_config(certs, listen="", relp_listen="127.0.0.1:0")
    async with running_log(config, storage) as app:
        elapsed = await _elapsed(*_load(app[RELP].port, certs, total, connections, window))
        assert app[LOG].size == total, app[LOG].size
    return total / elapsed


async def run_sink(certs: Certs, total: int, connections: int, window: int) -> float:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        framer = RelpFramer(1 << 16)
        while data := await reader.read(64 * 1024):
            answers = []
            for f in framer.feed(data):
                extra = b"relp_version=0\ncommands=syslog" if f.command == "open" else b""
                answers.append(response(f.txnr, 200, "OK", extra))
            writer.write(b"".join(answers))
        writer.close()

    context = server_context(certs.server_cert, certs.server_key, certs.ca)
    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context, limit=64 * 1024)
    port = server.sockets[0].getsockname()[1]
    elapsed = await _elapsed(*_load(port, certs, total, connections, window))
    server.close()
    return total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=128)
    args = parser.parse_args()
    total = args.messages - args.messages % args.connections
    rows = []
    with tempfile.TemporaryDirectory() as d:
        certs = make_certs(Path(d) / "certs")
        for rep in range(args.reps):
            sink = asyncio.run(run_sink(certs, total, args.connections, args.window))
            (Path(d) / f"relp{rep}").mkdir()
            relp = asyncio.run(
                run_relp(certs, total, args.connections, args.window, Path(d) / f"relp{rep}")
            )
            (Path(d) / f"syslog{rep}").mkdir()
            syslog = asyncio.run(
                run_syslog(certs, total, args.connections, Path(d) / f"syslog{rep}")
            )
            row = {
                "relp_msgs_s": relp,
                "syslog_msgs_s": syslog,
                "sink_msgs_s": sink,
                "relp_vs_syslog": relp / syslog,
                "relp_vs_sink": relp / sink,
            }
            rows.append(row)
            print(
                f"rep {rep}: relp {relp:,.0f}/s, syslog {syslog:,.0f}/s, sink {sink:,.0f}/s; "
                f"relp/syslog {relp / syslog:.3f}, relp/sink {relp / sink:.3f}"
            )
    result = {
        "messages": total,
        "connections": args.connections,
        "window": args.window,
        "reps": rows,
        **{f"median_{k}": statistics.median(r[k] for r in rows) for k in rows[0]},
        "machine": machine(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
