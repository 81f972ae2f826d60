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
import contextlib
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from translog import __version__
from translog.errors import (
    ConfigError,
    InconsistencyError,
    TranslogError,
    VerificationError,
)

if TYPE_CHECKING:
    from translog.client import SyncLogClient
    from translog.client.export import Export
    from translog.config import Config
    from translog.core.policy import WitnessPolicy
    from translog.log.tokens import TokenStore

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
    for note in report.notes:
        print(f"note: {note}")
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

    from translog.http import objstore, shards
    from translog.http.app import configure_logging, make_app, parse_listen, run_server, tls_context
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
    asyncio.run(serving)
    return EXIT_OK


def _log_witness_policy(path: Path) -> WitnessPolicy:
    """The log's witness policy file ([witnesses] policy)."""
    from translog.core.policy import parse_policy

    text = _read_file(str(path), "witness policy file").decode("utf-8", "replace")
    try:
        return parse_policy(text)
    except ConfigError as e:
        raise ConfigError(f"witnesses.policy {path}: {e}") from e


DEV_TOKEN_FILE = "dev-token"


def _cmd_dev_init(args: argparse.Namespace) -> int:
    """Initialise a development log once; print its origin, vkey and dev token every time."""
    from translog.log.datadir import init_data_dir, is_initialised, read_vkey

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
    from translog.keyfile import read_private_file, write_private_file

    path = data / DEV_TOKEN_FILE
    if path.exists():
        return read_private_file(path).decode("utf-8").strip()
    token = _token_store(data).create("dev", ("submit", "read"))
    write_private_file(path, f"{token}\n".encode())
    return token


def _data_config(data: Path, config_path: str | None = None) -> Config:
    from translog.config import CONFIG_NAME, load_config
    from translog.log.datadir import is_initialised

    if not is_initialised(data):
        raise ConfigError(f"{data} does not hold a log; run `translog init` first")
    return load_config(config_path or data / CONFIG_NAME)


def _token_store(data: Path, config_path: str | None = None) -> TokenStore:
    from translog.log.tokens import TokenStore

    return TokenStore(data / _data_config(data, config_path).server.tokens_file)


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


# -- client commands -------------------------------------------------------------------------
#
# submit, prove, checkpoint, consistency and export talk to a log over HTTP through
# translog.client (imported lazily). verify is offline: it imports translog.formats.verify only,
# never
# aiohttp, so it runs where the network stack is not even installed.

TOKEN_ENV = "TRANSLOG_TOKEN"
READ_TOKEN_ENV = "TRANSLOG_READ_TOKEN"


def _read_file(path: str, what: str) -> bytes:
    """The bytes of ``path`` (``-`` is stdin); unreadable files are a plain error (exit 1)."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TranslogError(f"couldn't read {what} {path}: {e.strerror}") from e


def _write_file(path: str | None, data: bytes) -> None:
    """Write ``data`` to ``path``, or to stdout for None or ``-``."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise TranslogError(f"couldn't write {path}: {e.strerror}") from e


def _vkey(args: argparse.Namespace) -> str:
    """The log's vkey from ``--vkey`` or ``--vkey-file`` (one non-empty line)."""
    if args.vkey is not None:
        return str(args.vkey).strip()
    lines = [x for x in _read_file(args.vkey_file, "vkey file").decode().splitlines() if x.strip()]
    if len(lines) != 1:
        raise ConfigError(f"--vkey-file {args.vkey_file}: expected one vkey line, got {len(lines)}")
    return lines[0].strip()


def _policy(args: argparse.Namespace) -> WitnessPolicy | None:
    from translog.core.policy import parse_policy

    if args.policy is None:
        return None
    return parse_policy(_read_file(args.policy, "policy file").decode("utf-8", "replace"))


def _client(args: argparse.Namespace) -> SyncLogClient:
    """A verifying client for ``--url`` with the options this command has."""
    from translog.client import SyncLogClient

    return SyncLogClient(
        args.url,
        _vkey(args),
        token=getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None,
        read_token=getattr(args, "read_token", None) or os.environ.get(READ_TOKEN_ENV) or None,
        state_path=getattr(args, "state", None),
        policy=_policy(args) if hasattr(args, "policy") else None,
        timeout=args.timeout,
    )


def _json_bytes(obj: object, *, compact: bool = False) -> bytes:
    if compact:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    return json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n"


def _cmd_submit(args: argparse.Namespace) -> int:
    from translog.formats.receipt import format_promise
    from translog.formats.receipt_json import format_receipt

    data = _read_file(args.file, "input")
    if args.ndjson and args.wait == "0":
        raise ConfigError("--wait 0 (a promise) is for single payloads, not --ndjson")
    with _client(args) as client, _evidence(args, client.origin):
        if args.ndjson:
            _submit_ndjson(client, data, args)
            return EXIT_OK
        if args.wait == "0":
            out = _json_bytes(format_promise(client.promise(data, kind=args.kind)))
        else:
            out = _json_bytes(format_receipt(client.submit(data, kind=args.kind, wait=args.wait)))
    _write_file(args.output, out)
    return EXIT_OK


def _submit_ndjson(client: SyncLogClient, data: bytes, args: argparse.Namespace) -> None:
    """Submit each NDJSON line as one entry, ``--batch-size`` lines per request.

    Receipts are written as they arrive (one per line), so when a batch fails the receipts of
    the entries already in the log are kept.
    """
    from translog.formats.receipt_json import format_receipt
    from translog.formats.verify import ndjson_lines

    lines = ndjson_lines(data, args.file)
    if not lines:
        raise ConfigError(f"{args.file}: no NDJSON lines to submit")
    progress = _Progress("submit", enabled=not args.quiet)
    done = 0
    with _output(args.output) as out:
        try:
            for lo in range(0, len(lines), args.batch_size):
                batch = lines[lo : lo + args.batch_size]
                receipt = client.submit_batch(batch, kind=args.kind, wait=args.wait)
                out.write(_json_bytes(format_receipt(receipt), compact=True))
                out.flush()
                done += len(batch)
                progress(done, len(lines))
        except TranslogError:
            where = args.output or "stdout"
            _eprint(
                f"translog: the first {done} of {len(lines)} entries were submitted; "
                f"their receipts are in {where}"
            )
            raise


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[BinaryIO]:
    """A binary stream for ``-o``: the file (created or truncated), or stdout."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        return
    try:
        f = open(path, "wb")  # noqa: SIM115 - closed below, errors mapped first
    except OSError as e:
        raise TranslogError(f"couldn't write {path}: {e.strerror}") from e
    with f:
        yield f


def _cmd_prove(args: argparse.Namespace) -> int:
    from translog.formats.proof import format_proof
    from translog.formats.verify import iso_ms

    if args.output == "-" and not args.entry_out:
        raise ConfigError("--entry-out is needed when the proof goes to stdout (-o -)")
    with _client(args) as client, _evidence(args, client.origin):
        index = args.index
        if index is None:
            index = client.find_index(_leaf_hash_arg(args.leaf_hash))
        proof = client.prove(index)
        assert proof.extra is not None  # LogClient.prove puts the leaf in extra
        entry = _entry_file(client, index, proof.extra)
    _write_file(args.output, format_proof(proof))
    entry_out = args.entry_out or _entry_path(args.output)
    _write_file(entry_out, _json_bytes(entry))
    say = _eprint if args.output == "-" else print
    say(
        f"entry {index} ({entry['kind']}, sequenced {iso_ms(entry['timestamp'])}, payload "
        f"{entry['payload_status']}) proven in checkpoint size {_note_size(proof.checkpoint)}"
    )
    say(f"wrote {args.output} and {entry_out}")
    return EXIT_OK


def _leaf_hash_arg(text: str) -> bytes:
    from translog.core.note import decode_base64

    try:
        value = decode_base64(text)
    except TranslogError as e:
        raise ConfigError(f"--leaf-hash: {e}") from e
    if len(value) != 32:
        raise ConfigError(f"--leaf-hash: expected 32 bytes, got {len(value)}")
    return value


def _entry_path(proof_path: str) -> str:
    """``x.tlog-proof`` -> ``x.entry.json``."""
    return proof_path.removesuffix(".tlog-proof") + ".entry.json"


def _note_size(note: bytes) -> int:
    return int(note.split(b"\n", 2)[1])


def _entry_file(client: SyncLogClient, index: int, leaf: bytes) -> dict[str, Any]:
    """The entry file: the leaf, and its payload and salt when the read token allows."""
    from translog.core.leaf import KIND_INLINE, decode_leaf
    from translog.errors import AuthError, ForbiddenError
    from translog.formats.verify import format_entry

    origin = client.origin
    if decode_leaf(leaf).kind == KIND_INLINE:
        return format_entry(origin, index, leaf, payload_status="inline")
    try:
        e = client.entry(index)
    except (AuthError, ForbiddenError) as err:
        _eprint(f"translog: payload withheld: {err}")
        return format_entry(origin, index, leaf, payload_status="withheld")
    if e["payload"] is None or e["salt"] is None:
        return format_entry(origin, index, leaf, payload_status="erased")
    return format_entry(
        origin, index, leaf, payload=e["payload"], salt=e["salt"], payload_status="present"
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from translog.formats.verify import verify_file

    data = _read_file(args.file, "file")
    payload = _read_file(args.payload, "payload file") if args.payload else None
    entry = _read_file(args.entry, "entry file") if args.entry else None
    result = verify_file(data, _vkey(args), policy=_policy(args), payload=payload, entry=entry)
    print("\n".join(result.lines()))
    return EXIT_OK


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    from translog.formats.verify import iso_ms

    with _client(args) as client, _evidence(args, client.origin):
        cp = client.checkpoint()
    _write_file(None, cp.note)
    cosigned = f", cosigned by {', '.join(sorted(cp.cosigners))}" if cp.cosigners else ""
    state = f", checked against state file {args.state}" if args.state else ""
    _eprint(f"verified checkpoint: size {cp.size}{cosigned}{state} ({iso_ms(_now_ms())})")
    return EXIT_OK


def _cmd_consistency(args: argparse.Namespace) -> int:
    """Prove that OLD is a prefix of the log's current checkpoint (or the reverse, if newer).

    :meth:`~translog.client.LogClient.check_consistent` decides (growth proven from tiles,
    rollback, fork told apart from bad tiles); no state file is involved.
    """
    from translog.core.checkpoint import open_checkpoint
    from translog.core.vkey import parse_vkey

    vkey = _vkey(args)
    old_note = _read_file(args.old, "checkpoint file")
    old, _, _ = open_checkpoint(old_note, parse_vkey(vkey))
    with _client(args) as client, _evidence(args, old.origin):
        cur = client.check_consistent(old_note)
        proof: tuple[bytes, ...] = ()
        if 0 < old.size < cur.size:
            proof = client.consistency_proof(
                old.size, cur.size, old_root=old.root_hash, new_root=cur.root_hash
            )
    _print_consistency(old.size, cur.size, proof)
    return EXIT_OK


def _print_consistency(old: int, new: int, proof: Sequence[bytes]) -> None:
    import base64

    if old > new:
        print(f"consistent: the log's current checkpoint (size {new}) is a prefix of the given")
        print(f"checkpoint (size {old}); the log has not published that size yet")
        return
    print(f"consistent: checkpoint size {old} is a prefix of the current checkpoint size {new}")
    for h in proof:
        print(base64.b64encode(h).decode())


@contextlib.contextmanager
def _evidence(args: argparse.Namespace, origin: str) -> Iterator[None]:
    """Write the evidence of an InconsistencyError to stderr and a file, then re-raise it."""
    try:
        yield
    except InconsistencyError as e:
        path = _write_evidence(e, origin, args.url, Path(args.evidence_dir))
        _eprint(f"translog: evidence written to {path}")
        raise


def _write_evidence(e: InconsistencyError, origin: str, url: str, directory: Path) -> Path:
    import base64

    def text(note: object) -> str | None:
        return note.decode("utf-8", "replace") if isinstance(note, bytes) else None

    now = _now_ms()
    evidence = {
        "format": "translog-evidence/v1",
        "origin": origin,
        "url": url,
        "detected_at": now,
        "reason": str(e),
        "older": text(e.older),
        "newer": text(e.newer),
        "proof": [base64.b64encode(h).decode() for h in (e.proof or [])],
    }
    data = _json_bytes(evidence)
    sys.stderr.write(data.decode())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", origin).strip("_") or "log"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1000)) + f"{now % 1000:03d}Z"
    path = directory / f"translog-evidence-{safe}-{stamp}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
    except OSError as err:
        raise TranslogError(f"couldn't write evidence file {path}: {err.strerror}") from e
    return path


def _now_ms() -> int:
    return int(time.time() * 1000)


def _parse_time(text: str, what: str) -> int:
    """RFC 3339 with a zone (``2026-07-01T00:00:00Z``) or ms since the epoch, as ms."""
    import datetime as dt

    if text.isascii() and text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise ConfigError(f"{what}: {text!r} is not RFC 3339 time nor ms since the epoch") from e
    if when.tzinfo is None:
        raise ConfigError(f"{what}: {text!r} has no time zone; add Z for UTC")
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (when - epoch) // dt.timedelta(milliseconds=1)


def _cmd_export(args: argparse.Namespace) -> int:
    from translog.client.export import export_bundle
    from translog.formats.bundle_json import encode_bundle

    from_ms, to_ms = _parse_time(args.from_, "--from"), _parse_time(args.to, "--to")
    earlier = [_read_file(p, "checkpoint file") for p in args.checkpoint or []]
    phases = {
        "leaves": _Progress("export: leaves", enabled=not args.quiet),
        "payloads": _Progress("export: payloads", enabled=not args.quiet),
    }
    with _client(args) as client, _evidence(args, client.origin):
        result = export_bundle(
            client,
            from_ms,
            to_ms,
            checkpoints=earlier,
            policy=_policy(args),
            read_payloads=not args.no_payloads,
            progress=lambda phase, done, total: phases[phase](done, total),
            selection=_selection(args),
            summary=args.summary or bool(args.summary_html),
        )
    _write_file(args.output, encode_bundle(result.bundle, compress=args.output.endswith(".gz")))
    _print_export(args.output, result)
    if args.summary_html and result.bundle.summary is not None:
        from translog.formats.event_summary import render_html

        _write_file(args.summary_html, render_html(result.bundle.summary).encode())
        print(f"wrote {args.summary_html}: the one-page summary")
    return EXIT_OK


def _selection(args: argparse.Namespace) -> Any:
    """The audit-event query of ``export --tenant T --query k=v,...`` (None without one)."""
    if args.query is None and args.tenant is None:
        return None
    if args.tenant is None:
        raise ConfigError("--query needs --tenant (a query is always within one tenant)")
    from translog.formats.event_schema import Query

    filters: dict[str, str] = {}
    for part in (args.query or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not value:
            raise ConfigError(f"--query: expected FIELD=VALUE[,FIELD=VALUE...], got {part!r}")
        filters[name.strip()] = value.strip()
    return Query(args.tenant, filters)


def _print_export(path: str, result: Export) -> None:
    b = result.bundle
    from translog.formats.bundle import PAYLOAD_STATUSES

    counts = {s: sum(e.payload_status == s for e in b.entries) for s in PAYLOAD_STATUSES}
    print(f"wrote {path}: entries [{b.start}, {b.end}) ({len(b.entries)}) of the period")
    print(
        f"  payloads: {counts['present']} committed, {counts['inline']} inline, "
        f"{counts['erased']} erased, {counts['withheld']} withheld"
    )
    print(f"  checkpoints: sizes {', '.join(str(_note_size(n)) for n in b.checkpoints)}")
    if b.selection is not None:
        query = ", ".join(f"{k}={v}" for k, v in b.selection.query.items())
        print(f"  selection: {len(b.selection.indexes)} entries match {query}")
    if result.refused and counts["withheld"]:
        _eprint(f"translog: payloads withheld: {result.refused}")


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
    _add_client_commands(sub)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _add_serve_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from translog.config import MAX_WORKERS
    from translog.log.tokens import SCOPES

    p = sub.add_parser("serve", help="serve the log over HTTP")
    _data_arg(p)
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
    _data_arg(p)
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
    _data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    if name:
        p.add_argument("--name", required=True, help="the token's name")


def _log_args(
    p: argparse.ArgumentParser,
    *,
    url: bool = True,
    read_token: bool = True,
    state: bool = True,
    policy: bool = True,
) -> None:
    """The options every client command shares."""
    if url:
        p.add_argument("--url", required=True, help="the log's base URL, e.g. http://host:8080")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--vkey", help="the log's verifier key (its name is the origin)")
    key.add_argument("--vkey-file", metavar="FILE", help="a file holding the vkey")
    if url:
        p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    if read_token:
        p.add_argument("--read-token", help=f"token with scope read (default: ${READ_TOKEN_ENV})")
    if state:
        p.add_argument(
            "--state", metavar="FILE", help="keep the last verified checkpoint here, check growth"
        )
    if policy:
        p.add_argument("--policy", metavar="FILE", help="witness policy the checkpoint must meet")


def _evidence_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--evidence-dir", default=".", metavar="DIR", help="where inconsistency evidence goes"
    )


def _add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("submit", help="submit an event (file, stdin or NDJSON); print its receipt")
    _log_args(p, read_token=False, policy=False)
    p.add_argument("file", nargs="?", default="-", help="the payload file; - (default) is stdin")
    p.add_argument("--token", help=f"token with scope submit (default: ${TOKEN_ENV})")
    p.add_argument("--kind", choices=("committed", "inline"), help="default: the log's setting")
    p.add_argument("--ndjson", action="store_true", help="submit each line as one entry")
    p.add_argument("--batch-size", type=_positive, default=1000, help="NDJSON lines per request")
    p.add_argument(
        "--wait",
        choices=("durable", "published", "0"),
        default="durable",
        help="durable (default), published, or 0 for a signed promise",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write the receipt here (default stdout)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _evidence_arg(p)
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("prove", help="write a .tlog-proof file and the entry for one entry")
    _log_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=_non_negative, help="the entry's index")
    which.add_argument("--leaf-hash", metavar="B64", help="the entry's leaf hash (base64)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .tlog-proof file")
    p.add_argument("--entry-out", metavar="FILE", help="default: FILE with .entry.json")
    _evidence_arg(p)
    p.set_defaults(func=_cmd_prove)

    p = sub.add_parser("verify", help="verify a receipt, proof file or bundle OFFLINE")
    p.add_argument("file", help="receipt, promise, .tlog-proof, bundle or checkpoint; - is stdin")
    _log_args(p, url=False, read_token=False, state=False)
    p.add_argument("--payload", metavar="FILE", help="check the entry holds this payload")
    p.add_argument("--entry", metavar="FILE", help="entry file (from prove) for a proof file")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("checkpoint", help="fetch, verify and print the log's checkpoint")
    _log_args(p)
    _evidence_arg(p)
    p.set_defaults(func=_cmd_checkpoint)

    p = sub.add_parser("consistency", help="prove an old checkpoint is a prefix of the current")
    p.add_argument("old", metavar="OLD_CHECKPOINT_FILE", help="a signed checkpoint saved earlier")
    _log_args(p, state=False)
    _evidence_arg(p)
    p.set_defaults(func=_cmd_consistency)

    p = sub.add_parser("export", help="write an evidence bundle for an audit period")
    _log_args(p)
    when = "inclusive; RFC 3339 (2026-07-01T00:00:00Z) or ms since the epoch"
    p.add_argument("--from", dest="from_", required=True, metavar="T1", help=f"start, {when}")
    p.add_argument("--to", required=True, metavar="T2", help=f"end, {when}")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="bundle; .gz = gzip")
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="an earlier signed checkpoint to chain in (repeatable)",
    )
    p.add_argument("--no-payloads", action="store_true", help="mark committed payloads withheld")
    p.add_argument("--tenant", help="with --query: the tenant whose audit events to select")
    p.add_argument(
        "--query",
        metavar="FIELD=VALUE,...",
        help="select audit events (actor, action, target, outcome, category, id); only "
        "their payloads are included, the rest of the period is withheld",
    )
    p.add_argument("--summary", action="store_true", help="add the one-page summary")
    p.add_argument("--summary-html", metavar="FILE", help="also render the summary as HTML")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _evidence_arg(p)
    p.set_defaults(func=_cmd_export)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
