"""The ``translog`` command line.

The command line only parses arguments, loads config, wires objects together and maps
exceptions to exit codes. This module builds the parser from the command modules
(``log_commands``, ``client_commands`` and the role modules of ``COMMAND_MODULES``) and maps
exceptions in :func:`main`. Exit codes (documented in README.md):

=====  =====================================================================
0      success
1      error (bad config, storage failure, network failure, ...)
2      usage error (bad arguments)
3      verification failed (bad signature or proof, fsck found a problem)
4      inconsistency detected (two checkpoints that cannot both be true)
=====  =====================================================================
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from translog import __version__
from translog.cli import client_commands, log_commands
from translog.cli.common import (
    EXIT_ERROR,
    EXIT_INCONSISTENT,
    EXIT_USAGE,
    EXIT_VERIFY,
    eprint,
)
from translog.errors import (
    ConfigError,
    InconsistencyError,
    TranslogError,
    VerificationError,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="translog", description="tamper-evident audit log (RFC 6962, C2SP tlog-tiles)"
    )
    parser.add_argument("--version", action="version", version=f"translog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    log_commands.register(sub)
    client_commands.register(sub)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


COMMAND_MODULES: tuple[str, ...] = (
    # Each module defines ``register(sub)``, which adds its sub-commands. One line per role,
    # in alphabetical order, so that parallel work merges cleanly.
    "translog.cli.monitor",
    "translog.cli.witness",
    "translog.cli.events",
    "translog.cli.publish",
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for the console script and ``python -m translog``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_USAGE
    try:
        result: int = args.func(args)
        return result
    except InconsistencyError as e:
        eprint(f"translog: inconsistency detected: {e.diagnostics()}")
        return EXIT_INCONSISTENT
    except VerificationError as e:
        eprint(f"translog: verification failed: {e.diagnostics()}")
        return EXIT_VERIFY
    except ConfigError as e:
        eprint(f"translog: {e.diagnostics()}")
        return EXIT_ERROR
    except TranslogError as e:
        eprint(f"translog: {e.diagnostics()}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        eprint("translog: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
