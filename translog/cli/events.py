"""Audit-event commands: ``reindex`` (offline), and the admin commands that talk to a server.

``translog reindex --data DIR`` rebuilds the search indexes from the stored entries (progress
on stderr). The erasure, legal hold and retention commands send an admin token's request to
``/admin/...`` on a running log, which records each action in the log itself.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from translog.cli.common import (
    EXIT_OK,
    Progress,
    add_data_arg,
    data_config,
    read_file,
    vkey_from,
    write_file,
)
from translog.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    MalformedError,
    NetworkError,
    NotFoundError,
)
from translog.log.self_audit import admin_event, operator, spool_admin_event


def spool_admin(
    data: Path, action: str, details: dict[str, Any], config_path: str | None = None
) -> None:
    """Record an offline admin action (it reaches the log when the server next flushes).

    Only logs with ``[events] enabled`` and ``self_audit`` record them.
    """
    config = data_config(data, config_path)
    if not (config.events.enabled and config.events.self_audit):
        return
    payload = admin_event(
        action, ("operator", operator()), tenant=config.events.self_tenant, details=details
    )
    spool_admin_event(data, payload)


def _cmd_reindex(args: argparse.Namespace) -> int:
    from translog.log.datadir import open_data_dir
    from translog.log.event_index import reindex

    data_dir = open_data_dir(args.data, args.config)
    if not data_dir.config.events.enabled:
        raise ConfigError("events.enabled is false in this log's config: nothing to index")
    storage = data_dir.open_storage()
    try:
        progress = Progress("reindex", enabled=not args.quiet)
        n = reindex(storage, progress=progress)
    finally:
        storage.close()
    spool_admin(Path(args.data), "translog.index.rebuild", {"entries": n}, args.config)
    print(f"reindexed {n} entries")
    return EXIT_OK


def _cmd_summary(args: argparse.Namespace) -> int:
    from translog.formats.bundle_json import parse_bundle
    from translog.formats.bundle_verify import verify_bundle, with_summary
    from translog.formats.event_summary import render_html

    vkey = vkey_from(args)
    bundle = parse_bundle(read_file(args.bundle, "bundle"))
    verify_bundle(bundle, vkey)  # a bundle's own summary must match what it shows
    summary = with_summary(bundle, vkey).summary
    assert summary is not None
    page = render_html(summary)
    if args.html:
        write_file(args.html, page.encode())
        print(f"wrote {args.html}")
    if args.pdf:
        print_pdf(page, Path(args.pdf))
        print(f"wrote {args.pdf}")
    if not args.html and not args.pdf:
        print(json.dumps(summary, indent=1))
    return EXIT_OK


CHROMIUM = "/usr/bin/chromium"


def print_pdf(page: str, out: Path) -> None:
    """Print an HTML page to PDF with the system chromium (headless, no network)."""
    import shutil
    import subprocess
    import tempfile

    browser = shutil.which("chromium") or CHROMIUM
    if not Path(browser).exists():
        raise ConfigError("--pdf needs chromium (apt-get install chromium); use --html instead")
    with tempfile.TemporaryDirectory(prefix="translog-pdf-") as tmp:
        src = Path(tmp) / "summary.html"
        src.write_text(page, encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}/profile",
            "--no-pdf-header-footer",
            f"--print-to-pdf={out.resolve()}",
            src.as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if done.returncode != 0 or not out.exists():
            raise ConfigError(f"chromium could not print the PDF: {done.stderr[-300:]!r}")


ADMIN_TOKEN_ENV = "TRANSLOG_ADMIN_TOKEN"


def admin_request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One JSON request to a log's admin API with the admin token; errors name the reason."""
    token = args.token or os.environ.get(ADMIN_TOKEN_ENV)
    if not token:
        raise ConfigError(f"an admin token is needed: --token or ${ADMIN_TOKEN_ENV}")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        args.url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            reason = json.loads(e.read()).get("reason", e.reason)
        except ValueError:
            reason = e.reason
        error = {401: AuthError, 403: ForbiddenError, 404: NotFoundError, 409: ConflictError}
        raise error.get(e.code, MalformedError)(f"{e.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise NetworkError(f"couldn't reach {args.url}: {e}") from None


def _cmd_erase(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason}
    if args.subject is not None:
        if args.tenant is None or args.index:
            raise ConfigError("--subject needs --tenant (and no --index)")
        body |= {"tenant": args.tenant, "subject": args.subject}
    elif args.index:
        body["indexes"] = args.index
    else:
        raise ConfigError("give --index N (repeatable) or --tenant T --subject S")
    result = admin_request(args, "POST", "/admin/erase", body)
    print(
        f"erased {result['erased']} payloads; the erasure is logged as entry "
        f"{result['erasure_entry']}"
    )
    for index, why in result.get("skipped", {}).items():
        print(f"  entry {index}: {why}")
    return EXIT_OK


def _cmd_hold(args: argparse.Namespace) -> int:
    if args.hold_command == "set":
        body = {"name": args.name, "tenant": args.tenant, "reason": args.reason}
        if args.subject:
            body["subject"] = args.subject
        result = admin_request(args, "POST", "/admin/holds", body)
        print(f"legal hold {args.name!r} in force (logged as entry {result['entry']})")
    elif args.hold_command == "release":
        result = admin_request(args, "DELETE", f"/admin/holds/{args.name}")
        print(f"legal hold {args.name!r} released (logged as entry {result['entry']})")
    else:
        for h in admin_request(args, "GET", "/admin/holds")["holds"]:
            subject = h["subject"] or "*"
            print(
                f"{h['name']}  tenant={h['tenant']}  subject={subject}  by={h['by']}  {h['reason']}"
            )
    return EXIT_OK


def _cmd_retention_run(args: argparse.Namespace) -> int:
    result = admin_request(args, "POST", "/admin/retention/run", {})
    print(f"retention: erased {result['erased']} payloads {result['by_category']}")
    if result.get("entry") is not None:
        print(f"  logged as entry {result['entry']}")
    return EXIT_OK


def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="the log's base URL, e.g. http://host:8080")
    p.add_argument("--token", help=f"token with scope admin (default: ${ADMIN_TOKEN_ENV})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the request")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the audit-event commands."""
    p = sub.add_parser("reindex", help="rebuild the audit-event search indexes from the log")
    add_data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_reindex)

    p = sub.add_parser("summary", help="verify a bundle and render its one-page summary")
    p.add_argument("bundle", metavar="BUNDLE", help="evidence bundle (.json or .gz)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--vkey", help="the log's verifier key")
    key.add_argument("--vkey-file", metavar="FILE", help="a file holding the vkey")
    p.add_argument("--html", metavar="FILE", help="write the summary page as HTML")
    p.add_argument("--pdf", metavar="FILE", help="print it to PDF with the system chromium")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("erase", help="erase payloads of entries or of a subject (leaves stay)")
    _admin_args(p)
    p.add_argument("--index", type=int, action="append", help="entry index (repeatable)")
    p.add_argument("--tenant", help="with --subject: the subject's tenant")
    p.add_argument("--subject", help="erase every event whose actor or a target is this id")
    p.add_argument("--reason", required=True, help="why (recorded in the log)")
    p.set_defaults(func=_cmd_erase)

    p = sub.add_parser("hold", help="legal holds: stop erasure and retention")
    hsub = p.add_subparsers(dest="hold_command", metavar="ACTION", required=True)
    h = hsub.add_parser("set", help="put a legal hold in force")
    _admin_args(h)
    h.add_argument("--name", required=True)
    h.add_argument("--tenant", required=True, help="tenant, or * for all")
    h.add_argument("--subject", help="only events naming this subject")
    h.add_argument("--reason", required=True)
    h.set_defaults(func=_cmd_hold)
    h = hsub.add_parser("release", help="release a legal hold")
    _admin_args(h)
    h.add_argument("--name", required=True)
    h.set_defaults(func=_cmd_hold)
    h = hsub.add_parser("list", help="list legal holds")
    _admin_args(h)
    h.set_defaults(func=_cmd_hold)

    p = sub.add_parser("retention", help="retention of audit-event payloads")
    rsub = p.add_subparsers(dest="retention_command", metavar="ACTION", required=True)
    r = rsub.add_parser("run", help="erase every payload past its retention now")
    _admin_args(r)
    r.set_defaults(func=_cmd_retention_run)
