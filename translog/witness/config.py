"""``witness.toml``: the witness's own config file (pure; stdlib ``tomllib``).

Example (every key; ``config/witness.example.toml`` is the commented version)::

    [witness]
    key = "witness.key"              # PRIVATE+KEY+… text, mode 0600 (translog keygen --witness)
    state = "state"                  # LMDB directory for the latest cosigned checkpoints
    listen = "127.0.0.1:8090"
    prefix = ""                      # URL prefix of add-checkpoint and the gossip routes

    [[log]]                          # one table per log witnessed
    origin = "audit.example.com/prod"
    vkey = "audit.example.com/prod+1a2b3c4d+AQ…"

    [gossip]
    peers = ["http://127.0.0.1:8091"]   # other witnesses and monitors
    interval_ms = 1000
    timeout_ms = 5000
    misbehaviour_dir = "misbehaviour"

Relative paths are relative to the directory of the config file. Unknown keys are errors that
name the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from translog.core.signing import NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import ConfigError, TranslogError


@dataclass(frozen=True)
class GossipConfig:
    """[gossip]: peers to exchange checkpoints with (monitors and witnesses)."""

    peers: tuple[str, ...] = ()
    """Base URLs of peers (their gossip routes are under ``<url>/gossip/v1/``)."""
    interval_ms: int = 1000
    """How often each peer is polled."""
    timeout_ms: int = 5000
    """Bound on each request to a peer."""
    misbehaviour_dir: str = "misbehaviour"
    """Where misbehaviour files are written (relative to the config file)."""
    unproven_rounds: int = 5
    """Rounds a disagreement may stay unresolved before it is written down as ``unproven``."""
    listen: str = ""
    """Monitors only: host:port of the gossip routes (a witness serves them on its own port)."""
    name: str = ""
    """How this party names itself in misbehaviour files (default: its key name or listen)."""


@dataclass(frozen=True)
class WitnessConfig:
    """The whole ``witness.toml``."""

    key: Path
    state: Path
    listen: str = "127.0.0.1:8090"
    prefix: str = ""
    logs: dict[str, NoteVerifier] = field(default_factory=dict)
    gossip: GossipConfig = field(default_factory=GossipConfig)
    base: Path = Path(".")


def _table(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a table")
    return data


def _str(t: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = t.get(key, default)
    if not isinstance(value, str) or (default is None and not value):
        raise ConfigError(f"{where}.{key}: expected a non-empty string")
    return value


def _int(t: dict[str, Any], key: str, where: str, default: int) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return value


def _unknown(t: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(t) - known)
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: unknown key")


def parse_peers(value: Any, where: str) -> tuple[str, ...]:
    """A list of http(s) base URLs, without a trailing slash."""
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"{where}: expected a list of URLs")
    peers = []
    for p in value:
        if not p.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: {p!r} is not an http(s) URL")
        peers.append(p.rstrip("/"))
    if len(set(peers)) != len(peers):
        raise ConfigError(f"{where}: a peer is listed twice")
    return tuple(peers)


def parse_gossip(data: Any, where: str = "gossip", *, listen: bool = False) -> GossipConfig:
    """The [gossip] table, shared by witnesses and monitors (``listen``: a monitor's)."""
    t = _table(data, where)
    known = {"peers", "interval_ms", "timeout_ms", "misbehaviour_dir", "unproven_rounds", "name"}
    _unknown(t, known | ({"listen"} if listen else set()), where)
    return GossipConfig(
        peers=parse_peers(t.get("peers", []), f"{where}.peers"),
        interval_ms=_int(t, "interval_ms", where, 1000),
        timeout_ms=_int(t, "timeout_ms", where, 5000),
        misbehaviour_dir=_str(t, "misbehaviour_dir", where, "misbehaviour"),
        unproven_rounds=_int(t, "unproven_rounds", where, 5),
        listen=_str(t, "listen", where, "127.0.0.1:0") if listen else "",
        name=_str(t, "name", where, ""),
    )


def parse_witness_config(text: str, *, base: Path, source: str = "witness config") -> WitnessConfig:
    """Parse and validate ``witness.toml`` text; ``base`` resolves relative paths."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from e
    _unknown(data, {"witness", "log", "gossip"}, "config")
    w = _table(data.get("witness", {}), "witness")
    _unknown(w, {"key", "state", "listen", "prefix"}, "witness")
    prefix = _str(w, "prefix", "witness", "")
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ConfigError('witness.prefix: must start with "/" and not end with "/"')
    raw_logs = data.get("log", [])
    if not isinstance(raw_logs, list) or not raw_logs:
        raise ConfigError("log: expected at least one [[log]] table (origin and vkey)")
    logs: dict[str, NoteVerifier] = {}
    for i, raw in enumerate(raw_logs):
        where = f"log[{i}]"
        t = _table(raw, where)
        _unknown(t, {"origin", "vkey"}, where)
        origin = _str(t, "origin", where)
        try:
            verifier = parse_vkey(_str(t, "vkey", where))
        except TranslogError as e:
            raise ConfigError(f"{where}.vkey: {e}") from e
        if origin in logs:
            raise ConfigError(f"{where}.origin: {origin!r} is listed twice")
        logs[origin] = verifier
    return WitnessConfig(
        key=base / _str(w, "key", "witness", "witness.key"),
        state=base / _str(w, "state", "witness", "state"),
        listen=_str(w, "listen", "witness", "127.0.0.1:8090"),
        prefix=prefix,
        logs=logs,
        gossip=parse_gossip(data.get("gossip", {})),
        base=base,
    )


def load_witness_config(path: str | Path) -> WitnessConfig:
    """Read and parse a witness config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"couldn't read witness config {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"witness config {p} is not UTF-8") from e
    return parse_witness_config(text, base=p.resolve().parent, source=str(p))
