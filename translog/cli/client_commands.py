"""The commands that talk to a log over HTTP: ``submit``, ``prove``, ``checkpoint``,
``consistency`` and ``export``; and ``verify``, which is offline.

The HTTP commands go through translog.client (imported lazily). verify imports
translog.formats.verify only, never aiohttp, so it runs where the network stack is not even
installed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from translog.cli.common import (
    EXIT_OK,
    TOKEN_ENV,
    Progress,
    add_log_args,
    eprint,
    read_file,
    vkey_from,
    write_file,
)
from translog.cli.remote import (
    add_evidence_arg,
    json_bytes,
    keep_evidence,
    now_ms,
    open_client,
    policy_from,
)
from translog.errors import ConfigError, TranslogError

if TYPE_CHECKING:
    from translog.client import SyncLogClient
    from translog.client.export import Export


def _cmd_submit(args: argparse.Namespace) -> int:
    from translog.formats.receipt import format_promise
    from translog.formats.receipt_json import format_receipt

    data = read_file(args.file, "input")
    if args.ndjson and args.wait == "0":
        raise ConfigError("--wait 0 (a promise) is for single payloads, not --ndjson")
    with open_client(args) as client, keep_evidence(args, client.origin):
        if args.ndjson:
            _submit_ndjson(client, data, args)
            return EXIT_OK
        if args.wait == "0":
            out = json_bytes(format_promise(client.promise(data, kind=args.kind)))
        else:
            out = json_bytes(format_receipt(client.submit(data, kind=args.kind, wait=args.wait)))
    write_file(args.output, out)
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
    progress = Progress("submit", enabled=not args.quiet)
    done = 0
    with _output(args.output) as out:
        try:
            for lo in range(0, len(lines), args.batch_size):
                batch = lines[lo : lo + args.batch_size]
                receipt = client.submit_batch(batch, kind=args.kind, wait=args.wait)
                out.write(json_bytes(format_receipt(receipt), compact=True))
                out.flush()
                done += len(batch)
                progress(done, len(lines))
        except TranslogError:
            where = args.output or "stdout"
            eprint(
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
    with open_client(args) as client, keep_evidence(args, client.origin):
        index = args.index
        if index is None:
            index = client.find_index(_leaf_hash_arg(args.leaf_hash))
        proof = client.prove(index)
        assert proof.extra is not None  # LogClient.prove puts the leaf in extra
        entry = _entry_file(client, index, proof.extra)
    write_file(args.output, format_proof(proof))
    entry_out = args.entry_out or _entry_path(args.output)
    write_file(entry_out, json_bytes(entry))
    say = eprint if args.output == "-" else print
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
        eprint(f"translog: payload withheld: {err}")
        return format_entry(origin, index, leaf, payload_status="withheld")
    if e["payload"] is None or e["salt"] is None:
        return format_entry(origin, index, leaf, payload_status="erased")
    return format_entry(
        origin, index, leaf, payload=e["payload"], salt=e["salt"], payload_status="present"
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from translog.formats.verify import verify_file

    data = read_file(args.file, "file")
    payload = read_file(args.payload, "payload file") if args.payload else None
    entry = read_file(args.entry, "entry file") if args.entry else None
    result = verify_file(
        data, vkey_from(args), policy=policy_from(args), payload=payload, entry=entry
    )
    print("\n".join(result.lines()))
    return EXIT_OK


def _cmd_checkpoint(args: argparse.Namespace) -> int:
    from translog.formats.verify import iso_ms

    with open_client(args) as client, keep_evidence(args, client.origin):
        cp = client.checkpoint()
    write_file(None, cp.note)
    cosigned = f", cosigned by {', '.join(sorted(cp.cosigners))}" if cp.cosigners else ""
    state = f", checked against state file {args.state}" if args.state else ""
    eprint(f"verified checkpoint: size {cp.size}{cosigned}{state} ({iso_ms(now_ms())})")
    return EXIT_OK


def _cmd_consistency(args: argparse.Namespace) -> int:
    """Prove that OLD is a prefix of the log's current checkpoint (or the reverse, if newer).

    :meth:`~translog.client.LogClient.check_consistent` decides (growth proven from tiles,
    rollback, fork told apart from bad tiles); no state file is involved.
    """
    from translog.core.checkpoint import open_checkpoint
    from translog.core.vkey import parse_vkey

    vkey = vkey_from(args)
    old_note = read_file(args.old, "checkpoint file")
    old, _, _ = open_checkpoint(old_note, parse_vkey(vkey))
    with open_client(args) as client, keep_evidence(args, old.origin):
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
    earlier = [read_file(p, "checkpoint file") for p in args.checkpoint or []]
    phases = {
        "leaves": Progress("export: leaves", enabled=not args.quiet),
        "payloads": Progress("export: payloads", enabled=not args.quiet),
    }
    with open_client(args) as client, keep_evidence(args, client.origin):
        result = export_bundle(
            client,
            from_ms,
            to_ms,
            checkpoints=earlier,
            policy=policy_from(args),
            read_payloads=not args.no_payloads,
            progress=lambda phase, done, total: phases[phase](done, total),
            selection=_selection(args),
            summary=args.summary or bool(args.summary_html),
        )
    write_file(args.output, encode_bundle(result.bundle, compress=args.output.endswith(".gz")))
    _print_export(args.output, result)
    if args.summary_html and result.bundle.summary is not None:
        from translog.formats.event_summary import render_html

        write_file(args.summary_html, render_html(result.bundle.summary).encode())
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
        eprint(f"translog: payloads withheld: {result.refused}")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands and ``verify``."""
    p = sub.add_parser("submit", help="submit an event (file, stdin or NDJSON); print its receipt")
    add_log_args(p, read_token=False, policy=False)
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
    add_evidence_arg(p)
    p.set_defaults(func=_cmd_submit)

    p = sub.add_parser("prove", help="write a .tlog-proof file and the entry for one entry")
    add_log_args(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=_non_negative, help="the entry's index")
    which.add_argument("--leaf-hash", metavar="B64", help="the entry's leaf hash (base64)")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the .tlog-proof file")
    p.add_argument("--entry-out", metavar="FILE", help="default: FILE with .entry.json")
    add_evidence_arg(p)
    p.set_defaults(func=_cmd_prove)

    p = sub.add_parser("verify", help="verify a receipt, proof file or bundle OFFLINE")
    p.add_argument("file", help="receipt, promise, .tlog-proof, bundle or checkpoint; - is stdin")
    add_log_args(p, url=False, read_token=False, state=False)
    p.add_argument("--payload", metavar="FILE", help="check the entry holds this payload")
    p.add_argument("--entry", metavar="FILE", help="entry file (from prove) for a proof file")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("checkpoint", help="fetch, verify and print the log's checkpoint")
    add_log_args(p)
    add_evidence_arg(p)
    p.set_defaults(func=_cmd_checkpoint)

    p = sub.add_parser("consistency", help="prove an old checkpoint is a prefix of the current")
    p.add_argument("old", metavar="OLD_CHECKPOINT_FILE", help="a signed checkpoint saved earlier")
    add_log_args(p, state=False)
    add_evidence_arg(p)
    p.set_defaults(func=_cmd_consistency)

    p = sub.add_parser("export", help="write an evidence bundle for an audit period")
    add_log_args(p)
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
    add_evidence_arg(p)
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
