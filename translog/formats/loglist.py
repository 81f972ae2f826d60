"""The published log list (``translog-log-list/v1``) and frozen-log records: parse and verify.

Temporal sharding, as CT does it: a log is frozen (its final checkpoint signed, no more
writes) and a successor takes the new entries. ``GET /logs.json`` of ``translog serve-shards``
announces it (docs/FORMATS.md §17). A client reading the list checks every frozen log's final
checkpoint with that log's own key, that the successor it names is listed, and later that
the frozen log never grows past its final checkpoint (``translog logs --check``).

Pure: no network or storage imports.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.vkey import parse_vkey
from translog.errors import MalformedError, TranslogError, VerificationError

LIST_VERSION = "translog-log-list/v1"
FROZEN_FILE = "frozen.json"
"""In a data directory: the record ``translog freeze`` writes (final checkpoint, successor)."""


@dataclass(frozen=True)
class ListedLog:
    """One log of the list, checked."""

    name: str
    origin: str
    vkey: str
    url: str
    """Absolute base URL of the log's read path."""
    state: str
    final_checkpoint: Checkpoint | None = None
    final_note: bytes | None = None
    successor: str | None = None


def read_frozen(data_path: Path) -> dict[str, Any] | None:
    """The frozen record of a data directory, or None if the log is not frozen."""
    path = data_path / FROZEN_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise MalformedError(f"{path}: unreadable frozen record: {e}") from e
    if not isinstance(record, dict) or not isinstance(record.get("final_checkpoint"), str):
        raise MalformedError(f"{path}: not a frozen record")
    return record


def _str(item: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value = item.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedError(f"{where}.{key}: expected a non-empty string")
    return value


def parse_log_list(data: bytes, list_url: str) -> list[ListedLog]:
    """Parse and verify a log list fetched from ``list_url`` (raises on any problem)."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise MalformedError(f"log list is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("version") != LIST_VERSION:
        raise MalformedError(f"log list: expected version {LIST_VERSION!r}")
    raw = doc.get("logs")
    if not isinstance(raw, list):
        raise MalformedError("log list: logs must be a list")
    out: list[ListedLog] = []
    for i, item in enumerate(raw):
        where = f"logs[{i}]"
        if not isinstance(item, dict):
            raise MalformedError(f"{where}: expected an object")
        name = _str(item, "name", where)
        origin = _str(item, "origin", where)
        vkey = _str(item, "vkey", where)
        url = _str(item, "url", where)
        state = _str(item, "state", where)
        assert name and origin and vkey and url and state
        if state not in ("active", "frozen"):
            raise MalformedError(f"{where}.state: expected active or frozen, got {state!r}")
        try:
            verifier = parse_vkey(vkey)
        except TranslogError as e:
            raise MalformedError(f"{where}.vkey: {e}") from e
        if verifier.name != origin:
            raise VerificationError(f"{where}: the vkey is for {verifier.name!r}, not {origin!r}")
        base = urllib.parse.urljoin(list_url, url).rstrip("/")
        cp = note = successor = None
        if state == "frozen":
            final = _str(item, "final_checkpoint", where)
            assert final is not None
            note = final.encode()
            cp = open_checkpoint(note, verifier, origin=origin)[0]
            successor = _str(item, "successor", where, optional=True)
        out.append(ListedLog(name, origin, vkey, base, state, cp, note, successor))
    names = {log.name for log in out}
    if len(names) != len(out):
        raise MalformedError("log list: names must be unique")
    for log in out:
        if log.successor is not None and log.successor not in names:
            raise MalformedError(
                f"log list: {log.name} names the successor {log.successor!r}, which is not listed"
            )
    return out


def current_log(logs: list[ListedLog], name: str) -> ListedLog:
    """Follow successors from ``name`` to the log that takes new entries now."""
    by_name = {log.name: log for log in logs}
    seen: set[str] = set()
    log = by_name.get(name)
    if log is None:
        raise MalformedError(f"log list has no log {name!r}")
    while log.successor is not None:
        if log.name in seen:
            raise MalformedError(f"log list: successors loop at {log.name!r}")
        seen.add(log.name)
        log = by_name[log.successor]
    return log
