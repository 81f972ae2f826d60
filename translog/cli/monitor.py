"""``translog monitor -c monitor.toml`` and ``translog audit URL --vkey V``.

Exit codes of ``translog audit`` (the cli.py table): 0 no alert; 4 a fork, rollback or two
roots for one size; 3 any other tampering alert (bad signature, tile or bundle disagreeing with
the entries...); 1 the log could not be reached (unavailability, not tampering).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from translog.cli.common import (
    EXIT_ERROR,
    EXIT_INCONSISTENT,
    EXIT_OK,
    EXIT_VERIFY,
    add_log_args,
    eprint,
    read_file,
    vkey_from,
)
from translog.errors import ConfigError

if TYPE_CHECKING:
    from translog.monitor.monitor import Monitor
    from translog.witness.config import GossipConfig

INCONSISTENT_KINDS = frozenset({"fork", "rollback", "same_size_different_root"})


class ProgressBar:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, what: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        """Draw progress of ``what``."""
        self.what = what
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total``."""
        now = time.monotonic()
        if not self.enabled or (now - self.last < (0.2 if self.tty else 5.0) and done < total):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        eta = (total - done) / rate if rate > 0 else 0.0
        text = (
            f"{self.what}: [{bar:<30}] {100 * frac:5.1f}% {done:,}/{total:,} entries, "
            f"{rate:,.0f}/s, eta {eta:,.0f} s"
        )
        end = "\n" if done >= total or not self.tty else "\r"
        print(text, end=end, file=self.stream, flush=True)


def _cmd_audit(args: argparse.Namespace) -> int:
    from translog.formats.verify import iso_ms
    from translog.monitor.alerts import FileSink, Reporter, Sink, StreamSink
    from translog.monitor.audit import audit
    from translog.monitor.config import LogConfig

    token = args.read_token
    if token is None:
        import os

        token = os.environ.get("TRANSLOG_READ_TOKEN")
    log = LogConfig(
        name=args.name or "audit",
        url=args.url,
        vkey=vkey_from(args),
        policy=Path(args.policy) if args.policy else None,
        read_token=token,
        timeout_seconds=args.timeout,
    )
    earlier = [read_file(p, "checkpoint file") for p in args.checkpoint or []]

    async def go() -> Any:
        sinks: list[Sink] = [FileSink(Path(args.output)) if args.output else StreamSink()]
        reporter = Reporter(Path(args.evidence_dir), sinks, None)
        try:
            return await audit(
                log,
                reporter,
                earlier=earlier,
                progress=ProgressBar("audit", enabled=not args.quiet),
                fetch_window=args.window,
            )
        finally:
            await reporter.close()

    started = time.monotonic()
    result = asyncio.run(go())
    elapsed = time.monotonic() - started
    kinds = {a.kind for a in result.alerts}
    for a in result.alerts:
        eprint(f"translog audit: {a.kind}: {a.message}")
        if a.evidence is not None:
            eprint(f"  evidence: {a.evidence}")
    if result.root is not None:
        eprint(
            f"audited {result.entries:,} entries of {log.origin} in {elapsed:.1f} s "
            f"({result.entries / max(elapsed, 1e-9):,.0f}/s): checkpoint size {result.size}; "
            f"{len(result.alerts)} alert(s) ({iso_ms(int(time.time() * 1000))})"
        )
    if kinds & INCONSISTENT_KINDS:
        return EXIT_INCONSISTENT
    if kinds - {"unavailable", "available", "content_rule"}:
        return EXIT_VERIFY
    if "unavailable" in kinds:
        return EXIT_ERROR
    return EXIT_OK


def _cmd_monitor(args: argparse.Namespace) -> int:
    from translog.monitor.config import load_monitor_config
    from translog.monitor.monitor import Monitor

    config = load_monitor_config(args.config)

    async def go() -> None:
        monitor = Monitor(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, monitor.stop)
        names = ", ".join(f"{f.name} ({f.origin})" for f in monitor.followers.values())
        eprint(f"translog monitor: following {names}; state {config.state}")
        gossip = None
        if config.gossip is not None and not args.once:
            gossip = await _start_gossip(monitor, config.gossip, args.gossip_ready_file)
        try:
            await monitor.run(once=args.once)
        finally:
            if gossip is not None:
                await gossip()
            await monitor.close()
        eprint("translog monitor: stopped")

    asyncio.run(go())
    return EXIT_OK


async def _start_gossip(
    monitor: Monitor, config: GossipConfig, ready_file: str | None
) -> Callable[[], Awaitable[None]]:
    """Serve the gossip routes on ``[gossip] listen`` and poll the peers; return the stopper."""
    import contextlib

    from aiohttp import web

    from translog.gossip.core import Gossip
    from translog.gossip.monitor import MonitorView
    from translog.http import gossip as routes
    from translog.http.app import parse_listen, write_ready_file
    from translog.http.errors import error_middleware

    host, port = parse_listen(config.listen)
    view = MonitorView(monitor)
    gossip = Gossip(
        view,
        config.peers,
        name=config.name or f"monitor {config.listen}",
        misbehaviour_dir=Path(config.misbehaviour_dir),
        interval_ms=config.interval_ms,
        timeout_ms=config.timeout_ms,
        unproven_rounds=config.unproven_rounds,
        on_misbehaviour=view.alert,
    )
    app = web.Application(middlewares=[error_middleware])
    routes.add_routes(app, gossip, "")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"gossip.listen {config.listen}: {e.strerror or e}") from e
    bound = int(runner.addresses[0][1])
    if not config.name:
        gossip.name = f"monitor {host}:{bound}"
    eprint(f"translog monitor: gossip at http://{host}:{bound}, peers: {', '.join(config.peers)}")
    if ready_file:
        write_ready_file(Path(ready_file), bound)
    task = asyncio.create_task(gossip.run(), name="translog-gossip")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await runner.cleanup()
        if ready_file:
            Path(ready_file).unlink(missing_ok=True)

    return stop


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``monitor`` and ``audit`` commands."""
    p = sub.add_parser("monitor", help="follow logs, verify and recompute them, raise alerts")
    p.add_argument("-c", "--config", required=True, help="the monitor config (monitor.toml)")
    p.add_argument("--once", action="store_true", help="poll every log once, then exit")
    p.add_argument(
        "--gossip-ready-file",
        metavar="PATH",
        help="with [gossip]: write the gossip port here once it is served",
    )
    p.set_defaults(func=_cmd_monitor)

    p = sub.add_parser("audit", help="recompute a whole log once; non-zero exit on any alert")
    p.add_argument("url", help="the log's base URL (any C2SP tlog-tiles log)")
    add_log_args(p, url=False, state=False)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    p.add_argument("--name", help="a name for the log in alerts (default: audit)")
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="an earlier signed checkpoint the log must still be consistent with (repeatable)",
    )
    p.add_argument("--evidence-dir", default=".", metavar="DIR", help="where evidence goes")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="append alert lines here (default stdout)"
    )
    p.add_argument("--window", type=int, default=32, help="HTTP requests in flight (default 32)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_audit)
