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
from pathlib import Path
from typing import TYPE_CHECKING

from translog import __version__
from translog.errors import (
    ConfigError,
    InconsistencyError,
    TranslogError,
    VerificationError,
)

if TYPE_CHECKING:
    from translog.config import Config
    from translog.tokens import TokenStore

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


def _cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from translog.datadir import open_data_dir
    from translog.http.app import configure_logging, make_app, parse_listen, run_server
    from translog.tokens import TokenStore

    data_dir = open_data_dir(args.data, args.config)
    config = data_dir.config
    host, port = parse_listen(args.listen or config.server.listen)
    tokens = TokenStore(data_dir.resolve(config.server.tokens_file))
    configure_logging()
    storage = data_dir.open_storage()
    try:
        app = make_app(
            config,
            storage=storage,
            signer=data_dir.signer,
            tree_head_signer=data_dir.tree_head_signer,
            tokens=tokens,
        )
    except BaseException:
        storage.close()
        raise

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"translog serving {config.log.origin} at http://{shown}:{bound}", flush=True)
        print(data_dir.signer.vkey, flush=True)

    ready_file = Path(args.ready_file) if args.ready_file else None
    asyncio.run(run_server(app, host, port, ready_file=ready_file, on_ready=ready))
    return EXIT_OK


DEV_TOKEN_FILE = "dev-token"


def _cmd_dev_init(args: argparse.Namespace) -> int:
    """Initialise a development log once; print its origin, vkey and dev token every time."""
    from translog.datadir import init_data_dir, is_initialised, read_vkey

    data = Path(args.data)
    if not is_initialised(data):
        init_data_dir(data, args.origin)
        print(f"initialised a development log in {data}")
    token = _dev_token(data)
    config = _data_config(data)
    print(f"origin:    {config.log.origin}")
    print(f"vkey:      {read_vkey(data)}")
    print(f"dev token: {token}  (scopes submit, read; saved in {data / DEV_TOKEN_FILE})")
    return EXIT_OK


def _dev_token(data: Path) -> str:
    """The saved dev token, created (scopes submit and read, file mode 0600) if missing."""
    from translog.signing import read_private_file, write_private_file

    path = data / DEV_TOKEN_FILE
    if path.exists():
        return read_private_file(path).decode("utf-8").strip()
    token = _token_store(data).create("dev", ("submit", "read"))
    write_private_file(path, f"{token}\n".encode())
    return token


def _data_config(data: Path, config_path: str | None = None) -> Config:
    from translog.config import CONFIG_NAME, load_config
    from translog.datadir import is_initialised

    if not is_initialised(data):
        raise ConfigError(f"{data} does not hold a log; run `translog init` first")
    return load_config(config_path or data / CONFIG_NAME)


def _token_store(data: Path, config_path: str | None = None) -> TokenStore:
    from translog.tokens import TokenStore

    return TokenStore(data / _data_config(data, config_path).server.tokens_file)


def _cmd_token_create(args: argparse.Namespace) -> int:
    if args.rate < 0:
        raise ConfigError(f"--rate: must be 0 (unlimited) or positive, got {args.rate:g}")
    scopes = tuple(dict.fromkeys(args.scope or ["submit"]))
    token = _token_store(Path(args.data), args.config).create(args.name, scopes, args.rate)
    print(token)
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    _token_store(Path(args.data), args.config).revoke(args.name)
    print(f"revoked token {args.name!r}")
    return EXIT_OK


def _cmd_token_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "SCOPES", "CREATED", "REVOKED", "RATE/S")]
    for t in _token_store(Path(args.data), args.config).list():
        revoked = "-" if t.revoked_ms is None else _iso(t.revoked_ms)
        rate = "unlimited" if t.rate_per_s <= 0 else f"{t.rate_per_s:g}"
        rows.append((t.name, ",".join(t.scopes), _iso(t.created_ms), revoked, rate))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


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

    _add_serve_commands(sub)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _add_serve_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from translog.tokens import SCOPES

    p = sub.add_parser("serve", help="serve the log over HTTP")
    _data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="override server.listen; port 0 = any")
    p.add_argument("--ready-file", metavar="PATH", help="write the bound port here once serving")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("dev-init", help="create a development log and token once (make run)")
    _data_arg(p)
    p.add_argument("--origin", default="localhost/dev-log", help="origin for a new log")
    p.set_defaults(func=_cmd_dev_init)

    p = sub.add_parser("token", help="manage submission and read tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="create a token and print it once (only its hash is kept)")
    _token_args(t)
    t.add_argument("--scope", action="append", choices=SCOPES, help="repeatable; default: submit")
    t.add_argument("--rate", type=float, default=0.0, help="entries per second; 0 = unlimited")
    t.set_defaults(func=_cmd_token_create)
    t = tsub.add_parser("revoke", help="withdraw a token")
    _token_args(t)
    t.set_defaults(func=_cmd_token_revoke)
    t = tsub.add_parser("list", help="list tokens (names, scopes, dates; never hashes)")
    _token_args(t, name=False)
    t.set_defaults(func=_cmd_token_list)


def _token_args(p: argparse.ArgumentParser, *, name: bool = True) -> None:
    _data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    if name:
        p.add_argument("--name", required=True, help="the token's name")


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
