"""The commands on a data directory: ``init``, ``vkey``, ``fsck``, ``serve``, ``dev-init`` and
``token create | revoke | list``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from translog.cli.common import (
    EXIT_OK,
    EXIT_VERIFY,
    Progress,
    add_data_arg,
    data_config,
    eprint,
    read_file,
)
from translog.errors import ConfigError

if TYPE_CHECKING:
    from translog.core.policy import WitnessPolicy
    from translog.log.tokens import TokenStore


def _cmd_init(args: argparse.Namespace) -> int:
    from translog.log.datadir import init_data_dir

    data_dir = init_data_dir(args.data, args.origin)
    print(f"initialised log {args.origin!r} in {data_dir.path}")
    print(f"config:      {data_dir.path / 'translog.toml'}")
    print(f"private key: {data_dir.path / data_dir.config.keys.note_key} (mode 0600)")
    print(data_dir.signer.vkey)
    return EXIT_OK


def _cmd_vkey(args: argparse.Namespace) -> int:
    from translog.log.datadir import read_vkey

    print(read_vkey(args.data))
    return EXIT_OK


def _cmd_fsck(args: argparse.Namespace) -> int:
    from translog.core.vkey import parse_vkey
    from translog.log.datadir import open_data_dir
    from translog.log.fsck import fsck

    data_dir = open_data_dir(args.data, args.config)
    storage = data_dir.open_storage()
    try:
        progress = Progress("fsck", enabled=not args.quiet)
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
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print(f"fsck ok: {summary}")
        return EXIT_OK
    eprint(f"fsck FAILED: {report.problems[0]}")
    for extra in report.problems[1:]:
        eprint(f"  also: {extra}")
    eprint(summary)
    return EXIT_VERIFY


def _cmd_serve(args: argparse.Namespace) -> int:
    from translog.http import objstore, shards
    from translog.http.app import (
        configure_logging,
        make_app,
        parse_listen,
        run_event_loop,
        run_server,
        tls_context,
    )
    from translog.log.datadir import open_data_dir
    from translog.log.tokens import TokenStore

    data_dir = open_data_dir(args.data, args.config)
    config = data_dir.config
    host, port = parse_listen(args.listen or config.server.listen)
    ssl_context = None
    if config.server.tls_cert:
        ssl_context = tls_context(
            data_dir.resolve(config.server.tls_cert), data_dir.resolve(config.server.tls_key)
        )
    tokens = TokenStore(data_dir.resolve(config.server.tokens_file))
    configure_logging()
    storage = data_dir.open_storage()
    try:
        # Object store, lease and catch-up (no-op without [objstore]); before the log opens.
        role = objstore.prepare(
            config, data_dir.path, storage, data_dir.signer.vkey, standby=not args.no_standby
        )
        app = make_app(
            config,
            storage=storage,
            signer=data_dir.signer,
            tree_head_signer=data_dir.tree_head_signer,
            tokens=tokens,
            witness_policy=_log_witness_policy(data_dir.resolve(config.witnesses.policy))
            if config.witnesses.policy
            else None,
            data_dir=data_dir.path,
        )
        if role is not None:
            role.attach(app)
        shards.apply_frozen(app, data_dir.path)  # a frozen log refuses submissions (409)
    except BaseException:
        storage.close()
        raise

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        scheme = "https" if ssl_context else "http"
        print(f"translog serving {config.log.origin} at {scheme}://{shown}:{bound}", flush=True)
        print(data_dir.signer.vkey, flush=True)

    ready_file = Path(args.ready_file) if args.ready_file else None
    workers = config.server.workers if args.workers is None else args.workers
    if workers:
        from translog.http.multiprocess.hub import run_multiprocess

        tls = None
        if config.server.tls_cert:
            tls = (
                data_dir.resolve(config.server.tls_cert),
                data_dir.resolve(config.server.tls_key),
            )
        serving = run_multiprocess(
            app,
            host,
            port,
            workers=workers,
            tokens_file=data_dir.resolve(config.server.tokens_file),
            tls=tls,
            ready_file=ready_file,
            on_ready=ready,
        )
    else:
        serving = run_server(
            app, host, port, ready_file=ready_file, on_ready=ready, ssl_context=ssl_context
        )
    run_event_loop(serving, config.server.event_loop)
    return EXIT_OK


def _log_witness_policy(path: Path) -> WitnessPolicy:
    """The log's witness policy file ([witnesses] policy)."""
    from translog.core.policy import parse_policy

    text = read_file(str(path), "witness policy file").decode("utf-8", "replace")
    try:
        return parse_policy(text)
    except ConfigError as e:
        raise ConfigError(f"witnesses.policy {path}: {e}") from e


DEV_TOKEN_FILE = "dev-token"


def _cmd_dev_init(args: argparse.Namespace) -> int:
    """Initialise a development log once; print its origin, vkey and dev token every time.

    Unlike ``translog init``, the new log has the audit-event layer on (``[events] enabled =
    true``: /events/search and /explorer are served, every payload must be an event)."""
    from translog.config import Config, EventsSection
    from translog.log.datadir import init_data_dir, is_initialised, read_vkey

    data = Path(args.data)
    if not is_initialised(data):
        init_data_dir(data, args.origin, Config(events=EventsSection(enabled=True)))
        print(f"initialised a development log in {data}")
    token = _dev_token(data)
    config = data_config(data)
    print(f"origin:    {config.log.origin}")
    print(f"vkey:      {read_vkey(data)}")
    print(f"dev token: {token}  (scopes submit, read; saved in {data / DEV_TOKEN_FILE})")
    if config.events.enabled:
        print("events:    on (/events/search, /explorer)")
    return EXIT_OK


def _dev_token(data: Path) -> str:
    """The saved dev token, created (scopes submit and read, every tenant, file mode 0600) if
    missing."""
    from translog.keyfile import read_private_file, write_private_file

    path = data / DEV_TOKEN_FILE
    if path.exists():
        return read_private_file(path).decode("utf-8").strip()
    token = _token_store(data).create("dev", ("submit", "read"), tenants=("*",))
    write_private_file(path, f"{token}\n".encode())
    return token


def _token_store(data: Path, config_path: str | None = None) -> TokenStore:
    from translog.log.tokens import TokenStore

    return TokenStore(data / data_config(data, config_path).server.tokens_file)


def _cmd_token_create(args: argparse.Namespace) -> int:
    if args.rate < 0:
        raise ConfigError(f"--rate: must be 0 (unlimited) or positive, got {args.rate:g}")
    scopes = tuple(dict.fromkeys(args.scope or ["submit"]))
    tenants = tuple(args.tenant or ())
    token = _token_store(Path(args.data), args.config).create(args.name, scopes, args.rate, tenants)
    _spool_admin(
        args,
        "translog.token.create",
        {"name": args.name, "scopes": list(scopes), "tenants": list(tenants)},
    )
    print(token)
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    _token_store(Path(args.data), args.config).revoke(args.name)
    _spool_admin(args, "translog.token.revoke", {"name": args.name})
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


def _spool_admin(args: argparse.Namespace, action: str, details: dict[str, Any]) -> None:
    """Self-audit an offline admin action (see translog.cli.events.spool_admin)."""
    from translog.cli.events import spool_admin

    spool_admin(Path(args.data), action, details, args.config)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the data-directory commands."""
    from translog.config import MAX_WORKERS
    from translog.log.tokens import SCOPES

    p = sub.add_parser("init", help="create a new log in a data directory")
    add_data_arg(p)
    p.add_argument("--origin", required=True, help="checkpoint origin, e.g. audit.example.com/log1")
    p.set_defaults(func=_cmd_init)

    p = sub.add_parser("vkey", help="print the log's verifier key")
    add_data_arg(p)
    p.set_defaults(func=_cmd_vkey)

    p = sub.add_parser("fsck", help="recompute and check every hash, entry and checkpoint")
    add_data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--max-problems", type=int, default=20, help="stop after this many problems")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_fsck)

    p = sub.add_parser("serve", help="serve the log over HTTP")
    add_data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--listen", metavar="HOST:PORT", help="override server.listen; port 0 = any")
    p.add_argument("--ready-file", metavar="PATH", help="write the bound port here once serving")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        choices=range(MAX_WORKERS + 1),
        help="override server.workers: HTTP worker processes (0 = one process)",
    )
    p.add_argument(
        "--no-standby",
        action="store_true",
        help="exit when another instance holds the writer lease instead of waiting for it",
    )
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("dev-init", help="create a development log and token once (make run)")
    add_data_arg(p)
    p.add_argument("--origin", default="localhost/dev-log", help="origin for a new log")
    p.set_defaults(func=_cmd_dev_init)

    p = sub.add_parser("token", help="manage submission and read tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    t = tsub.add_parser("create", help="create a token and print it once (only its hash is kept)")
    _token_args(t)
    t.add_argument("--scope", action="append", choices=SCOPES, help="repeatable; default: submit")
    t.add_argument("--rate", type=float, default=0.0, help="entries per second; 0 = unlimited")
    t.add_argument(
        "--tenant",
        action="append",
        metavar="TENANT",
        help="tenant whose audit events it may search and read (repeatable; * = all)",
    )
    t.set_defaults(func=_cmd_token_create)
    t = tsub.add_parser("revoke", help="withdraw a token")
    _token_args(t)
    t.set_defaults(func=_cmd_token_revoke)
    t = tsub.add_parser("list", help="list tokens (names, scopes, dates; never hashes)")
    _token_args(t, name=False)
    t.set_defaults(func=_cmd_token_list)


def _token_args(p: argparse.ArgumentParser, *, name: bool = True) -> None:
    add_data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    if name:
        p.add_argument("--name", required=True, help="the token's name")
