"""The same-run baseline for benchmarks/bench_http.py: a trivial aiohttp server.

``python -m benchmarks.http_trivial --ready-file PATH [--uvloop] [--procs N]`` listens on
127.0.0.1 (a free port, written to the ready file) and answers:

* ``POST /add``: reads the whole body and returns ``{"ok":true,"bytes":N}``;
* ``GET /get/...``: a fixed 64-byte ``application/octet-stream`` body.

No access log, no auth, no storage: the floor that aiohttp itself sets on this machine.
With ``--procs N`` it runs N such processes on one port (``SO_REUSEPORT``, as
``translog serve --workers N`` does), for a per-process comparison with translog's workers.
It stops on SIGTERM or SIGINT (the first process stops the others).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
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


def _socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


async def serve(sock: socket.socket, ready_file: Path | None) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT; write the ready file if given."""
    app = web.Application()
    app.router.add_post("/add", post_add)
    app.router.add_get("/get/{tail:.*}", get_any)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    if ready_file is not None:
        tmp = ready_file.with_name(f".{ready_file.name}.tmp")
        tmp.write_text(f"{sock.getsockname()[1]}\n")
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
    p.add_argument("--procs", type=int, default=1, help="processes sharing the port")
    args = p.parse_args()
    first = _socket(0)
    children = []
    for _ in range(args.procs - 1):
        pid = os.fork()
        if pid == 0:
            first.close()
            _run(_socket(first.getsockname()[1]), None, uvloop=args.uvloop)
            os._exit(0)
        children.append(pid)
    try:
        _run(first, args.ready_file, uvloop=args.uvloop)
    finally:
        for pid in children:
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)


def _run(sock: socket.socket, ready_file: Path | None, *, uvloop: bool) -> None:
    if uvloop:
        import uvloop as uv

        uv.run(serve(sock, ready_file))
    else:
        asyncio.run(serve(sock, ready_file))


if __name__ == "__main__":
    main()
