"""Run ``translog serve`` with options the CLI does not have, for benchmarks/bench_http.py.

``python -m benchmarks.http_serve [--uvloop] [--profile PREFIX] -- serve --data DIR ...``

* ``--uvloop`` installs uvloop's event loop policy first (``asyncio.run`` in ``translog serve``
  then runs on uvloop); it fails if uvloop is not installed.
* ``--profile PREFIX`` runs the server under cProfile: the main thread (the event loop) is
  written to ``PREFIX.main.pstats`` and every other thread that ends (the LMDB writer thread
  ends on shutdown) to ``PREFIX.<thread name>.pstats``. Stop the server with SIGTERM so that
  the profiles are written.

Everything after ``--`` goes to ``translog.cli.command.main`` unchanged.
"""

from __future__ import annotations

import argparse
import cProfile
import re
import sys
import threading
from collections.abc import Sequence


def _profile_threads(prefix: str) -> None:
    """Profile every thread started from now on, each into its own file when it ends."""
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.name)
            prof.dump_stats(f"{prefix}.{name}.pstats")

    threading.Thread.run = run  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse our options, then hand the rest to ``translog.cli.command.main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else ([], argv)
    )
    p = argparse.ArgumentParser(prog="python -m benchmarks.http_serve")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--profile", metavar="PREFIX")
    args = p.parse_args(ours)
    if args.uvloop:
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from translog.cli.command import main as cli_main

    if not args.profile:
        return cli_main(rest)
    _profile_threads(args.profile)
    prof = cProfile.Profile()
    try:
        return prof.runcall(cli_main, rest)
    finally:
        prof.dump_stats(f"{args.profile}.main.pstats")


if __name__ == "__main__":
    raise SystemExit(main())
