"""The same-run baseline for benchmarks/bench_http.py: a trivial aiohttp server.

``python -m benchmarks.http_trivial --ready-file PATH [--uvloop]`` listens on 127.0.0.1 (a free
port, written to the ready file) and answers:

* ``POST /add``: reads the whole body and returns ``{"ok":true,"bytes":N}``;
* ``GET /get/...``: a fixed 64-byte ``application/octet-stream`` body.

No access log, no auth, no storage: the floor that aiohttp itself sets on this machine.
It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from aiohttp import web

_GET_BODY = bytes(64)


async def post_add(request: web.Request) -> web.Response:
    """Read the body, answer a small JSON document."""
    body = await request.read()
    out = json.dumps({"ok": True, "bytes": len(body)}, separators=(",", ":")).encode()
    return web.Response(body=out, headers={"Content-Type": "application/json"})


async def get_any(request: web.Request) -> web.Response:
    """A fixed small binary body."""
    return web.Response(body=_GET_BODY, headers={"Content-Type": "application/octet-stream"})


async def serve(ready_file: Path) -> None:
    """Serve until SIGTERM or SIGINT."""
    app = web.Application()
    app.router.add_post("/add", post_add)
    app.router.add_get("/get/{tail:.*}", get_any)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    tmp = ready_file.with_name(f".{ready_file.name}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    """Command-line entry."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.http_trivial")
    p.add_argument("--ready-file", required=True, type=Path)
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = p.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(args.ready_file))
    else:
        asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
