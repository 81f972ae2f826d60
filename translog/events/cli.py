"""Audit-event commands: ``reindex`` (offline), and the admin commands that talk to a server.

``translog reindex --data DIR`` rebuilds the search indexes from the stored entries (progress
on stderr). The erasure, legal hold and retention commands send an admin token's request to
``/admin/...`` on a running log, which records each action in the log itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from translog.cli import EXIT_OK, _data_arg, _data_config, _Progress
from translog.errors import ConfigError
from translog.events.audit import admin_event, operator, spool_admin_event


def spool_admin(
    data: Path, action: str, details: dict[str, Any], config_path: str | None = None
) -> None:
    """Record an offline admin action (it reaches the log when the server next flushes).

    Only logs with ``[events] enabled`` and ``self_audit`` record them.
    """
    config = _data_config(data, config_path)
    if not (config.events.enabled and config.events.self_audit):
        return
    payload = admin_event(
        action, ("operator", operator()), tenant=config.events.self_tenant, details=details
    )
    spool_admin_event(data, payload)


def _cmd_reindex(args: argparse.Namespace) -> int:
    from translog.datadir import open_data_dir
    from translog.events.index import reindex

    data_dir = open_data_dir(args.data, args.config)
    if not data_dir.config.events.enabled:
        raise ConfigError("events.enabled is false in this log's config: nothing to index")
    storage = data_dir.open_storage()
    try:
        progress = _Progress("reindex", enabled=not args.quiet)
        n = reindex(storage, progress=progress)
    finally:
        storage.close()
    spool_admin(Path(args.data), "translog.index.rebuild", {"entries": n}, args.config)
    print(f"reindexed {n} entries")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the audit-event commands."""
    p = sub.add_parser("reindex", help="rebuild the audit-event search indexes from the log")
    _data_arg(p)
    p.add_argument("-c", "--config", help="config file (default DATA/translog.toml)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_reindex)
