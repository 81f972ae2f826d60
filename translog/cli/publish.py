"""CLI: ``translog rebuild`` and ``translog publish`` (registered through COMMAND_MODULES)."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from translog.cli.common import EXIT_INCONSISTENT, EXIT_OK, EXIT_VERIFY, eprint
from translog.errors import ConfigError

if TYPE_CHECKING:
    from translog.config import Config
    from translog.log.datadir import DataDir


class _Progress:
    def __init__(self, what: str, enabled: bool) -> None:
        self.what, self.enabled = what, enabled
        self.started = self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 2.0 and done < total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        pct = 100.0 * done / total if total else 100.0
        eprint(f"{self.what}: {done}/{total} ({pct:5.1f}%), {rate:,.0f}/s")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``rebuild`` and ``publish``."""
    p = sub.add_parser(
        "rebuild", help="rebuild a data directory's log from its object store (s3:// or file://)"
    )
    p.add_argument("--data", required=True, metavar="DIR", help="data dir with config and keys")
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument(
        "--from", dest="from_", metavar="URL", help="public store (default: objstore.url)"
    )
    p.add_argument("--private", metavar="URL", help="private store (default: objstore.private_url)")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: objstore.endpoint)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_rebuild)

    p = sub.add_parser("publish", help="upload the log's latest checkpoint and its tiles once")
    p.add_argument("--data", required=True, metavar="DIR", help="the log's data directory")
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--to", metavar="URL", help="public store (default: objstore.url)")
    p.add_argument("--private", metavar="URL", help="private store (default: objstore.private_url)")
    p.add_argument("--endpoint", help="S3 endpoint URL (default: objstore.endpoint)")
    p.set_defaults(func=_cmd_publish)

    p = sub.add_parser(
        "mirror", help="follow a log, verify every checkpoint and tile, republish and serve it"
    )
    p.add_argument("--url", required=True, help="the source log's read path (any tlog-tiles URL)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--vkey", help="the log's verifier key")
    key.add_argument("--vkey-file", metavar="FILE", help="a file holding the vkey")
    p.add_argument("--data", required=True, metavar="DIR", help="the mirror's own storage")
    p.add_argument("--to", metavar="URL", help="republish to this store (s3://, file:// or a dir)")
    p.add_argument("--endpoint", help="S3 endpoint URL for --to (credentials: AWS_* env)")
    p.add_argument("--listen", metavar="HOST:PORT", help="serve the verified read path here")
    p.add_argument("--ready-file", metavar="PATH", help="write the bound port here once serving")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    p.set_defaults(func=_cmd_mirror)

    p = sub.add_parser("freeze", help="sign a final checkpoint and refuse new entries for good")
    p.add_argument("--data", required=True, metavar="DIR", help="the log (stopped) to freeze")
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("--successor", metavar="NAME", help="the log that takes new entries")
    p.set_defaults(func=_cmd_freeze)

    p = sub.add_parser("serve-shards", help="serve several logs in one process, and /logs.json")
    p.add_argument("--config", required=True, metavar="FILE", help="the shards file (TOML)")
    p.add_argument("--listen", metavar="HOST:PORT", help="override listen; port 0 = any")
    p.add_argument("--ready-file", metavar="PATH", help="write the bound port here once serving")
    p.add_argument("--no-standby", action="store_true", help="exit if a lease is held elsewhere")
    p.set_defaults(func=_cmd_serve_shards)

    p = sub.add_parser("logs", help="read and verify a published log list (/logs.json)")
    p.add_argument("--url", required=True, help="the log list URL, e.g. http://host/logs.json")
    p.add_argument("--check", action="store_true", help="also check every log's checkpoint")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    p.set_defaults(func=_cmd_logs)


def _config(args: argparse.Namespace, url: str | None) -> tuple[DataDir, Config]:
    from translog.log.datadir import open_data_dir

    data_dir = open_data_dir(args.data, args.config)
    o = data_dir.config.objstore
    o = replace(
        o,
        url=url or o.url,
        private_url=args.private or o.private_url,
        endpoint=args.endpoint or o.endpoint,
        setup_bucket=False,
    )
    if not o.url:
        raise ConfigError("no store given: pass --from/--to or set objstore.url")
    config = replace(data_dir.config, objstore=o)
    config.validate()
    return data_dir, config


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from translog.core.vkey import parse_vkey
    from translog.http.objstore import open_stores
    from translog.publish.rebuild import sync_from_store

    data_dir, config = _config(args, args.from_)
    public, private = open_stores(config, data_dir.path)
    storage = data_dir.open_storage()
    started = time.monotonic()
    try:
        eprint(f"rebuild: reading {public.url}" + (f" and {private.url}" if private else ""))
        report = sync_from_store(
            storage,
            public,
            private,
            parse_vkey(data_dir.signer.vkey),
            config.log.origin,
            progress=_Progress("rebuild: entries", not args.quiet),
            concurrency=config.objstore.concurrency,
        )
    finally:
        storage.close()
    took = time.monotonic() - started
    print(
        f"rebuilt {data_dir.path}: size {report.old_size} -> {report.size}, "
        f"{report.entries} entries in {took:.1f} s"
    )
    print(
        f"  payloads: {report.payloads} restored, {report.payloads_missing} not in the store, "
        f"{report.payloads_rejected} rejected (commitment mismatch), "
        f"{report.payloads_erased} erased"
    )
    print(f"  checkpoints recorded: {report.checkpoints}")
    return EXIT_OK


def _cmd_publish(args: argparse.Namespace) -> int:
    from translog.core.checkpoint import open_checkpoint
    from translog.core.vkey import parse_vkey
    from translog.http.objstore import open_stores
    from translog.log.sequencer import Log, SignedCheckpoint
    from translog.publish.publisher import Publisher, PublisherOptions

    data_dir, config = _config(args, args.to)
    public, private = open_stores(config, data_dir.path)
    storage = data_dir.open_storage(readonly=True)
    try:
        latest = storage.latest_checkpoint()
        if latest is None:
            raise ConfigError(f"{data_dir.path} has no checkpoint yet: serve it once first")
        log = Log(storage, config.log.origin, data_dir.signer)
        cp = open_checkpoint(latest.note, parse_vkey(data_dir.signer.vkey), origin=log.origin)[0]
        publisher = Publisher(
            log,
            data_dir.signer.vkey,
            public,
            private,
            PublisherOptions(concurrency=config.objstore.concurrency),
        )
        try:
            publisher.load_store_state()
            before = publisher.store_size
            publisher.publish_now(SignedCheckpoint(cp, latest.timestamp_ms, latest.note))
        finally:
            publisher.shutdown()
    finally:
        storage.close()
    print(
        f"published {public.url}: checkpoint size {before} -> {cp.size}, "
        f"{publisher.objects} objects, {publisher.bytes} bytes, "
        f"{publisher.rewrites} payload bundles rewritten after erasures"
    )
    return EXIT_OK


def _cmd_mirror(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import signal

    from aiohttp import web

    from translog.http.mirror import mirror_app
    from translog.publish.mirror import Mirror
    from translog.publish.store import S3Settings, credentials_from, open_store
    from translog.storage.lmdb import LMDBStorage

    vkey = args.vkey or Path(args.vkey_file).read_text(encoding="utf-8").strip()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = None
    if args.to:
        access, secret = credentials_from(os.environ, None)
        target = open_store(args.to, S3Settings(args.endpoint or "", "us-east-1", access, secret))
    storage = LMDBStorage(data / "lmdb", map_size=1 << 30)
    mirror = Mirror(
        args.url, vkey, storage, data / "state.json", target=target, timeout=args.timeout
    )

    async def run() -> int:
        if args.once:
            from translog.client import LogClient

            if mirror.publisher is not None:
                mirror.publisher.load_store_state()
            async with LogClient(mirror.source_url, vkey, state_path=mirror.state_path) as c:
                size = await mirror.follow_once(c)
            print(f"mirrored {mirror.origin}: verified size {size}")
            return EXIT_OK
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = None
        if args.listen:
            host, _, port = args.listen.rpartition(":")
            runner = web.AppRunner(mirror_app(mirror))
            await runner.setup()
            site = web.TCPSite(runner, host, int(port))
            await site.start()
            bound = runner.addresses[0][1]
            print(f"mirror of {mirror.origin} serving at http://{host}:{bound}", flush=True)
            if args.ready_file:
                tmp = Path(args.ready_file + ".tmp")
                tmp.write_text(f"{bound}\n")
                tmp.replace(args.ready_file)
        try:
            await mirror.run(args.interval, stop=stop)
        finally:
            if runner is not None:
                await runner.cleanup()
        if mirror.halted is not None:
            eprint(f"translog: mirror halted: {mirror.halted}")
            return EXIT_INCONSISTENT
        return EXIT_OK

    try:
        return asyncio.run(run())
    finally:
        mirror.close()
        storage.close()


def _cmd_freeze(args: argparse.Namespace) -> int:
    import asyncio

    from translog.core.checkpoint import open_checkpoint
    from translog.core.vkey import parse_vkey
    from translog.formats.loglist import read_frozen
    from translog.http.shards import write_frozen
    from translog.log.datadir import open_data_dir
    from translog.log.sequencer import Log

    data_dir = open_data_dir(args.data, args.config)
    if read_frozen(data_dir.path) is not None:
        raise ConfigError(f"{data_dir.path} is already frozen")
    storage = data_dir.open_storage()
    log = Log(storage, data_dir.config.log.origin, data_dir.signer, data_dir.tree_head_signer)

    async def final() -> None:
        await log.start()  # sequences promised entries left by a crash first
        await log.close()  # drains and publishes the final checkpoint

    asyncio.run(final())
    storage = data_dir.open_storage(readonly=True)
    try:
        latest = storage.latest_checkpoint()
    finally:
        storage.close()
    assert latest is not None
    cp = open_checkpoint(latest.note, parse_vkey(data_dir.signer.vkey))[0]
    record = {
        "final_checkpoint": latest.note.decode(),
        "size": cp.size,
        "frozen_ms": latest.timestamp_ms,
        "successor": args.successor,
    }
    path = write_frozen(data_dir.path, record)
    print(f"froze {cp.origin} at size {cp.size}; wrote {path}")
    print(latest.note.decode(), end="")
    return EXIT_OK


def _cmd_serve_shards(args: argparse.Namespace) -> int:
    import asyncio

    from translog.http.app import configure_logging, parse_listen, run_server
    from translog.http.shards import build_shards_app, load_shards

    listen, specs = load_shards(args.config)
    host, port = parse_listen(args.listen or listen)
    configure_logging()
    app, storages = build_shards_app(specs, standby=not args.no_standby)

    def ready(bound: int) -> None:
        names = ", ".join(f"/{s.name}" for s in specs)
        print(f"translog serving {len(specs)} logs at http://{host}:{bound} ({names})", flush=True)

    ready_file = Path(args.ready_file) if args.ready_file else None
    asyncio.run(run_server(app, host, port, ready_file=ready_file, on_ready=ready))
    del storages  # each log's own cleanup closed its storage
    return EXIT_OK


def _cmd_logs(args: argparse.Namespace) -> int:
    import asyncio
    import urllib.request

    from translog.formats.loglist import parse_log_list

    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as resp:
            data = resp.read()
    except OSError as e:
        raise ConfigError(f"couldn't fetch {args.url}: {e}") from e
    logs = parse_log_list(data, args.url)
    for log in logs:
        extra = ""
        if log.final_checkpoint is not None:
            extra = f" final size {log.final_checkpoint.size}"
            if log.successor:
                extra += f", successor {log.successor}"
        print(f"{log.name}  {log.state}  {log.origin}  {log.url}{extra}")
    if not args.check:
        return EXIT_OK

    async def check() -> int:
        from translog.client import LogClient

        bad = 0
        for log in logs:
            async with LogClient(log.url, log.vkey, timeout=args.timeout) as client:
                cp = await client.checkpoint()
                if log.final_checkpoint is not None:
                    final = log.final_checkpoint
                    if (cp.size, cp.checkpoint.root_hash) != (final.size, final.root_hash):
                        eprint(
                            f"translog: frozen log {log.name} serves size {cp.size}, "
                            f"not its final checkpoint (size {final.size})"
                        )
                        bad += 1
                        continue
                print(f"ok: {log.name} serves a verified checkpoint of size {cp.size}")
        return EXIT_VERIFY if bad else EXIT_OK

    return asyncio.run(check())
