"""Several logs in one process, frozen logs, and the published log list (temporal sharding).

* ``translog serve-shards --config shards.toml`` runs every log listed there in one process,
  each mounted at ``/<name>`` with its own data directory, hence its own origin, keys, tokens,
  storage, limits and object store (everything in that directory's ``translog.toml``).
* ``translog freeze --data DIR [--successor NAME]`` (run while the log is stopped) sequences
  whatever was accepted, signs and stores a final checkpoint, and writes ``DIR/frozen.json``.
  A frozen log still serves every read, but refuses submissions (HTTP 409) for good.
* ``GET /logs.json`` is the log list (``translog-log-list/v1``, docs/FORMATS.md §17): each log's
  name, origin, vkey, URL, state, and for a frozen log its final checkpoint and successor, so
  clients (``translog logs``, :mod:`translog.formats.loglist`) follow a rotation and can check that
  a
  frozen log never grows.

shards.toml::

    listen = "127.0.0.1:8080"
    [[log]]
    name = "2026h1"                 # URL prefix /2026h1
    data = "/srv/translog/2026h1"
    [[log]]
    name = "2026h2"
    data = "/srv/translog/2026h2"
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from translog.errors import ConfigError
from translog.formats.loglist import FROZEN_FILE, LIST_VERSION, read_frozen
from translog.http import objstore
from translog.http.app import make_app
from translog.http.errors import error_middleware
from translog.http.keys import LOG
from translog.log.datadir import open_data_dir
from translog.log.tokens import TokenStore
from translog.storage.base import Storage

LOG_LIST = web.AppKey("translog.log_list", list)


@dataclass(frozen=True)
class ShardSpec:
    """One log of a shards file."""

    name: str
    data: Path


def load_shards(path: str | Path) -> tuple[str, list[ShardSpec]]:
    """Parse a shards file: (listen address, logs)."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"couldn't read shards file {path}: {e}") from e
    unknown = set(raw) - {"listen", "log"}
    if unknown:
        raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    listen = raw.get("listen", "127.0.0.1:8080")
    logs = raw.get("log")
    if not isinstance(listen, str) or not isinstance(logs, list) or not logs:
        raise ConfigError(f'{path}: expected listen = "HOST:PORT" and at least one [[log]]')
    specs: list[ShardSpec] = []
    base = Path(path).resolve().parent
    for i, item in enumerate(logs):
        if not isinstance(item, dict) or set(item) != {"name", "data"}:
            raise ConfigError(f"{path}: log[{i}]: expected exactly the keys name and data")
        name, data = item["name"], item["data"]
        if (
            not isinstance(name, str)
            or not name
            or not all(c.isalnum() or c in "-_." for c in name)
        ):
            raise ConfigError(f"{path}: log[{i}].name: letters, digits, '-', '_', '.' only")
        if not isinstance(data, str):
            raise ConfigError(f"{path}: log[{i}].data: expected a path")
        specs.append(ShardSpec(name, base / data))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: log names must be unique")
    return listen, specs


def apply_frozen(app: web.Application, data_path: Path) -> dict[str, Any] | None:
    """If the log in ``data_path`` is frozen, make its app refuse submissions (409)."""
    frozen = read_frozen(data_path)
    if frozen is not None:
        successor = frozen.get("successor")
        then = f"; its successor is {successor}" if successor else ""
        app[LOG].frozen = (
            f"log {app[LOG].origin} is frozen at size {frozen['size']} and accepts no new "
            f"entries{then}"
        )
    return frozen


def build_shards_app(
    specs: list[ShardSpec], *, standby: bool = True
) -> tuple[web.Application, list[Storage]]:
    """One app serving every log at ``/<name>``, and ``/logs.json``. Returns its storages."""
    root = web.Application(middlewares=[error_middleware])
    storages: list[Storage] = []
    entries: list[dict[str, Any]] = []
    origins: set[str] = set()
    try:
        for spec in specs:
            data_dir = open_data_dir(spec.data)
            config = data_dir.config
            if config.log.origin in origins:
                raise ConfigError(f"two logs have the origin {config.log.origin!r}")
            origins.add(config.log.origin)
            config = replace(config, server=replace(config.server, prefix=""))
            storage = data_dir.open_storage()
            storages.append(storage)
            role = objstore.prepare(
                config, data_dir.path, storage, data_dir.signer.vkey, standby=standby
            )
            sub = make_app(
                config,
                storage=storage,
                signer=data_dir.signer,
                tree_head_signer=data_dir.tree_head_signer,
                tokens=TokenStore(data_dir.resolve(config.server.tokens_file)),
                data_dir=data_dir.path,
            )
            if role is not None:
                role.attach(sub)
            frozen = apply_frozen(sub, data_dir.path)
            entry: dict[str, Any] = {
                "name": spec.name,
                "origin": config.log.origin,
                "vkey": data_dir.signer.vkey,
                "url": f"{spec.name}",
                "state": "frozen" if frozen else "active",
            }
            if config.objstore.url.startswith(("http://", "https://")):
                entry["mirror_urls"] = [config.objstore.url]
            if frozen is not None:
                entry["final_checkpoint"] = frozen["final_checkpoint"]
                entry["frozen_ms"] = frozen["frozen_ms"]
                if frozen.get("successor"):
                    entry["successor"] = frozen["successor"]
            entries.append(entry)
            root.add_subapp(f"/{spec.name}", sub)
    except BaseException:
        for s in storages:
            s.close()
        raise
    root[LOG_LIST] = entries
    root.router.add_get("/logs.json", _get_log_list)
    return root, storages


async def _get_log_list(request: web.Request) -> web.Response:
    body = {"version": LIST_VERSION, "logs": request.app[LOG_LIST]}
    return web.Response(
        text=json.dumps(body, indent=1, sort_keys=True) + "\n",
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=60"},
    )


def write_frozen(data_path: Path, record: dict[str, Any]) -> Path:
    """Write ``DATA/frozen.json`` once (never overwritten), fsynced."""
    path = data_path / FROZEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return path
