"""The ``translog`` command line.

``cli.py`` only parses arguments, loads config, wires objects together and maps exceptions to
exit codes. Exit codes (documented in README.md):

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
import sys
import time
from collections.abc import Callable, Sequence

from translog import __version__
from translog.errors import (
    ConfigError,
    InconsistencyError,
    TranslogError,
    VerificationError,
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY, EXIT_INCONSISTENT = 0, 1, 2, 3, 4


def _eprint(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


class _Progress:
    """Progress lines on stderr for long work, at most a few per second."""

    def __init__(self, what: str, enabled: bool = True) -> None:
        self.what = what
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        interval = 0.5 if self.tty else 5.0
        if not self.enabled or (now - self.last < interval and done < total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        pct = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total or not self.tty else "\r"
        print(
            f"{self.what}: {done}/{total} ({pct:5.1f}%), {rate:,.0f}/s",
            end=end,
            file=sys.stderr,
            flush=True,
        )


# -- commands ----------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    from translog.datadir import init_data_dir

    data_dir = init_data_dir(args.data, args.origin)
    print(f"initialised log {args.origin!r} in {data_dir.path}")
    print(f"config:      {data_dir.path / 'translog.toml'}")
    print(f"private key: {data_dir.path / data_dir.config.keys.note_key} (mode 0600)")
    print(data_dir.signer.vkey)
    return EXIT_OK


def _cmd_vkey(args: argparse.Namespace) -> int:
    from translog.datadir import read_vkey

    print(read_vkey(args.data))
    return EXIT_OK


def _cmd_fsck(args: argparse.Namespace) -> int:
    from translog.datadir import open_data_dir
    from translog.fsck import fsck
    from translog.signing import parse_vkey

    data_dir = open_data_dir(args.data, args.config)
    storage = data_dir.open_storage()
    try:
        progress = _Progress("fsck", enabled=not args.quiet)
        report = fsck(
            storage,
            parse_vkey(data_dir.signer.vkey),
            data_dir.config.log.origin,
            max_problems=args.max_problems,
            progress=progress,
            check_leaf_index=data_dir.config.storage.index_leaf_hashes,
        )
    finally:
        storage.close()
    summary = (
        f"size {report.size}: {report.entries_checked} entries, {report.hashes_checked} "
        f"hashes, {report.checkpoints_checked} checkpoints checked"
    )
    if report.ok:
        print(f"fsck ok: {summary}")
        return EXIT_OK
    _eprint(f"fsck FAILED: {report.problems[0]}")
    for extra in report.problems[1:]:
        _eprint(f"  also: {extra}")
    _eprint(summary)
    return EXIT_VERIFY


# -- wiring ------------------------------------------------------------------------------


def _data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="the log's data directory")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="translog", description="tamper-evident audit log (RFC 6962, C2SP tlog-tiles)"
    )
    parser.add_argument("--version", action="version", version=f"translog {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create a new log in a data directory")
    _data_arg(p)
    p.add_argument("--origin", required=True, help="checkpoint origin, e.g. audit.example.com/log1")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("vkey", help="print the log's verifier key")
    _data_arg(p)
    p.set_defaults(func=_cmd_vkey)

    p = sub.add_parser("fsck", help="recompute and check every hash, entry and checkpoint")
    _data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--max-problems", type=int, default=20, help="stop after this many problems")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_fsck)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


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
        _eprint(f"translog: inconsistency detected: {e.diagnostics()}")
        return EXIT_INCONSISTENT
    except VerificationError as e:
        _eprint(f"translog: verification failed: {e.diagnostics()}")
        return EXIT_VERIFY
    except ConfigError as e:
        _eprint(f"translog: {e.diagnostics()}")
        return EXIT_ERROR
    except TranslogError as e:
        _eprint(f"translog: {e.diagnostics()}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _eprint("translog: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
