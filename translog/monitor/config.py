"""The monitor's own config file (``monitor.toml``): logs to follow, rules, alert sinks (pure).

Every key is documented in ``config/monitor.example.toml``. Unknown keys and wrong types are a
``ConfigError`` naming the key (``log[1].interval_seconds: …``). Relative paths are relative to
the directory of the config file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from translog.core.vkey import parse_vkey
from translog.errors import ConfigError, MalformedError
from translog.formats.rules import Rule, rule_from_config
from translog.witness.config import GossipConfig, parse_gossip


@dataclass(frozen=True)
class LogConfig:
    """One ``[[log]]``: a log the monitor follows."""

    name: str
    url: str
    vkey: str
    policy: Path | None = None
    """Witness policy file every checkpoint must meet."""
    read_token: str | None = None
    """Token with scope read: private tiles and committed payloads (content rules)."""
    interval_seconds: float = 10.0
    stale_after_intervals: int = 0
    """Alert ``stale`` when the checkpoint has not changed for this many intervals; 0 = off."""
    promises_dir: Path | None = None
    """Directory of ``translog-promise/v1`` files (``?wait=0`` answers) to hold the log to."""
    promise_grace_seconds: float = 5.0
    timeout_seconds: float = 30.0
    retries: int = 2

    @property
    def origin(self) -> str:
        """The origin: the vkey's name."""
        return parse_vkey(self.vkey).name


@dataclass(frozen=True)
class LogListConfig:
    """One ``[[log_list]]``: a published log list (``/logs.json``) whose logs the monitor follows.

    The list is not signed (docs/FORMATS.md §17), so it is trusted only as far as the vkeys
    pinned here: a listed log is followed only when its vkey is in ``vkeys`` or ``vkeys_file``
    (re-read on every poll of the list, so a successor's key can be added without a restart).
    """

    url: str
    vkeys: tuple[str, ...] = ()
    vkeys_file: Path | None = None
    read_token: str | None = None
    interval_seconds: float = 10.0
    """Seconds between polls of the list and of each of its logs."""
    stale_after_intervals: int = 0
    """For the listed logs (a frozen log at its final checkpoint is never stale)."""
    timeout_seconds: float = 30.0
    retries: int = 2

    def trusted_vkeys(self) -> set[str]:
        """The pinned vkeys: ``vkeys`` plus the lines of ``vkeys_file`` (# comments allowed)."""
        out = set(self.vkeys)
        if self.vkeys_file is not None:
            try:
                text = self.vkeys_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(
                    f"log_list {self.url}: couldn't read {self.vkeys_file}: {e}"
                ) from e
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    out.add(line)
        return out


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: where alerts go (any combination)."""

    stdout: bool = True
    file: Path | None = None
    webhook: str | None = None
    webhook_retries: int = 5
    webhook_timeout_seconds: float = 10.0


@dataclass(frozen=True)
class MonitorConfig:
    """The whole monitor config."""

    state: Path
    evidence_dir: Path
    logs: tuple[LogConfig, ...]
    output: OutputConfig
    rules: tuple[Rule, ...] = ()
    gossip: GossipConfig | None = None
    """``[gossip]``: peers (witnesses, monitors) to exchange checkpoints with, and where this
    monitor serves its own (translog.gossip.core)."""
    log_lists: tuple[LogListConfig, ...] = ()
    """``[[log_list]]``: published log lists; their trusted logs are followed too."""


def _take(
    table: dict[str, Any], where: str, spec: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in spec:
            raise ConfigError(f"{where}.{key}: unknown key")
        want = spec[key]
        wants = want if isinstance(want, tuple) else (want,)
        if isinstance(value, bool) and bool not in wants:
            raise ConfigError(f"{where}.{key}: expected {wants[0].__name__}, got {value!r}")
        if not isinstance(value, wants):
            raise ConfigError(f"{where}.{key}: expected {wants[0].__name__}, got {value!r}")
        out[key] = value
    return out


def _path(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def _log(raw: object, where: str, base: Path) -> LogConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    t = _take(
        raw,
        where,
        {
            "name": str,
            "url": str,
            "vkey": str,
            "policy": str,
            "read_token": str,
            "read_token_env": str,
            "read_token_file": str,
            "interval_seconds": (int, float),
            "stale_after_intervals": int,
            "promises_dir": str,
            "promise_grace_seconds": (int, float),
            "timeout_seconds": (int, float),
            "retries": int,
        },
    )
    for key in ("url", "vkey"):
        if key not in t:
            raise ConfigError(f"{where}.{key}: required")
    if not t["url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: must start with http:// or https://")
    try:
        origin = parse_vkey(t["vkey"]).name
    except MalformedError as e:
        raise ConfigError(f"{where}.vkey: {e}") from e
    token = _read_token(t, where, base)
    for key in ("interval_seconds", "timeout_seconds"):
        if key in t and t[key] <= 0:
            raise ConfigError(f"{where}.{key}: must be positive")
    for key in ("stale_after_intervals", "retries", "promise_grace_seconds"):
        if key in t and t[key] < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0")
    return LogConfig(
        name=t.get("name", origin),
        url=t["url"],
        vkey=t["vkey"],
        policy=_path(base, t.get("policy")),
        read_token=token,
        interval_seconds=float(t.get("interval_seconds", 10.0)),
        stale_after_intervals=t.get("stale_after_intervals", 0),
        promises_dir=_path(base, t.get("promises_dir")),
        promise_grace_seconds=float(t.get("promise_grace_seconds", 5.0)),
        timeout_seconds=float(t.get("timeout_seconds", 30.0)),
        retries=t.get("retries", 2),
    )


def _log_list(raw: object, where: str, base: Path) -> LogListConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    t = _take(
        raw,
        where,
        {
            "url": str,
            "vkeys": list,
            "vkeys_file": str,
            "read_token": str,
            "read_token_env": str,
            "read_token_file": str,
            "interval_seconds": (int, float),
            "stale_after_intervals": int,
            "timeout_seconds": (int, float),
            "retries": int,
        },
    )
    if "url" not in t:
        raise ConfigError(f"{where}.url: required")
    if not t["url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}.url: must start with http:// or https://")
    vkeys = t.get("vkeys", [])
    for i, vkey in enumerate(vkeys):
        if not isinstance(vkey, str):
            raise ConfigError(f"{where}.vkeys[{i}]: expected str, got {vkey!r}")
        try:
            parse_vkey(vkey)
        except MalformedError as e:
            raise ConfigError(f"{where}.vkeys[{i}]: {e}") from e
    if not vkeys and "vkeys_file" not in t:
        raise ConfigError(f"{where}: give vkeys or vkeys_file (the list is trusted only so far)")
    for key in ("interval_seconds", "timeout_seconds"):
        if key in t and t[key] <= 0:
            raise ConfigError(f"{where}.{key}: must be positive")
    for key in ("stale_after_intervals", "retries"):
        if key in t and t[key] < 0:
            raise ConfigError(f"{where}.{key}: must be >= 0")
    return LogListConfig(
        url=t["url"],
        vkeys=tuple(vkeys),
        vkeys_file=_path(base, t.get("vkeys_file")),
        read_token=_read_token(t, where, base),
        interval_seconds=float(t.get("interval_seconds", 10.0)),
        stale_after_intervals=t.get("stale_after_intervals", 0),
        timeout_seconds=float(t.get("timeout_seconds", 30.0)),
        retries=t.get("retries", 2),
    )


def _read_token(t: dict[str, Any], where: str, base: Path) -> str | None:
    given = [k for k in ("read_token", "read_token_env", "read_token_file") if k in t]
    if len(given) > 1:
        raise ConfigError(f"{where}: give only one of {', '.join(given)}")
    if "read_token" in t:
        return str(t["read_token"])
    if "read_token_env" in t:
        value = os.environ.get(t["read_token_env"])
        if not value:
            raise ConfigError(f"{where}.read_token_env: ${t['read_token_env']} is not set")
        return value
    if "read_token_file" in t:
        path = _path(base, t["read_token_file"])
        assert path is not None
        try:
            return path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"{where}.read_token_file: couldn't read {path}: {e.strerror}") from e
    return None


def parse_monitor_config(text: str, *, base: Path, source: str = "monitor config") -> MonitorConfig:
    """Parse and check a monitor config; relative paths are resolved against ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from e
    top = _take(
        data,
        "config",
        {
            "state": str,
            "evidence_dir": str,
            "log": list,
            "log_list": list,
            "output": dict,
            "rule": list,
            "gossip": dict,
        },
    )
    logs = tuple(_log(raw, f"log[{i}]", base) for i, raw in enumerate(top.get("log", [])))
    lists = tuple(
        _log_list(raw, f"log_list[{i}]", base) for i, raw in enumerate(top.get("log_list", []))
    )
    if not logs and not lists:
        raise ConfigError("log: at least one [[log]] or [[log_list]] table is required")
    names = [log.name for log in logs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"log: two logs are named {name!r} (give each a unique name)")
    o = _take(
        top.get("output", {}),
        "output",
        {
            "stdout": bool,
            "file": str,
            "webhook": str,
            "webhook_retries": int,
            "webhook_timeout_seconds": (int, float),
        },
    )
    if "webhook" in o and not o["webhook"].startswith(("http://", "https://")):
        raise ConfigError("output.webhook: must start with http:// or https://")
    output = OutputConfig(
        stdout=o.get("stdout", True),
        file=_path(base, o.get("file")),
        webhook=o.get("webhook"),
        webhook_retries=o.get("webhook_retries", 5),
        webhook_timeout_seconds=float(o.get("webhook_timeout_seconds", 10.0)),
    )
    rules = tuple(rule_from_config(r, f"rule[{i}]") for i, r in enumerate(top.get("rule", [])))
    for rule in rules:
        unknown = set(rule.logs) - set(names)
        if unknown and not lists:  # listed logs are only known once the list is read
            raise ConfigError(f"rule {rule.name!r}: unknown log {sorted(unknown)[0]!r}")
    state = _path(base, top.get("state", "monitor-state.sqlite"))
    evidence_dir = _path(base, top.get("evidence_dir", "evidence"))
    assert state is not None and evidence_dir is not None
    gossip = None
    if "gossip" in top:
        gossip = parse_gossip(top["gossip"], listen=True)
        gossip = replace(gossip, misbehaviour_dir=str(base / gossip.misbehaviour_dir))
    return MonitorConfig(state, evidence_dir, logs, output, rules, gossip, lists)


def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Read and parse a monitor config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"couldn't read monitor config {p}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"monitor config {p} is not UTF-8") from e
    return parse_monitor_config(text, base=p.resolve().parent, source=str(p))
