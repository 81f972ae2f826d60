"""Declarative content rules over JSON payloads, with counts over time windows (pure).

A rule matches fields of an entry's JSON payload; with a ``threshold`` it counts matches per
group (say, per actor) in a sliding window of leaf time and fires when the count exceeds the
threshold. Time is the leaf timestamp the log signed, never the monitor's clock, so a rule gives
the same answer on a replay, on resume, and in :func:`check_rule_evidence` offline.

In the monitor config (``[[rule]]`` tables, see config/monitor.example.toml)::

    [[rule]]
    name = "failed-logins"
    match = { action = "user.login_failed" }      # dotted paths; a list means any of
    group_by = "actor.id"
    threshold = 5                                  # fires on the 6th in the window
    window_seconds = 600

    [[rule]]
    name = "admin-role-change"
    match = { action = ["role.grant", "role.revoke"], role = "admin" }

Without ``threshold`` (0) every matching entry fires. Only JSON objects are matched; a payload
that is not JSON, or a path that does not exist, does not match. Values compare by JSON
equality (``1`` matches ``1`` but not ``"1"`` nor ``true``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from translog.errors import ConfigError

_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """One content rule (see the module docstring)."""

    name: str
    match: tuple[tuple[str, tuple[Any, ...]], ...]
    """(dotted path, allowed values) pairs; every pair must hold."""
    group_by: str | None = None
    threshold: int = 0
    window_ms: int = 0
    logs: tuple[str, ...] = field(default=())
    """Names of the logs the rule applies to; empty = every log."""

    def matches(self, doc: object) -> bool:
        """Whether a decoded JSON payload matches every field of the rule."""
        if not isinstance(doc, dict):
            return False
        for path, allowed in self.match:
            value = lookup(doc, path)
            if value is _MISSING or not any(_same(value, a) for a in allowed):
                return False
        return True

    def group(self, doc: object) -> str:
        """The group key of a matching payload (``""`` without ``group_by``)."""
        if self.group_by is None:
            return ""
        value = lookup(doc, self.group_by)
        return "" if value is _MISSING else json.dumps(value, sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        """The rule as written into evidence files."""
        return {
            "name": self.name,
            "match": {path: list(values) for path, values in self.match},
            "group_by": self.group_by,
            "threshold": self.threshold,
            "window_ms": self.window_ms,
        }


def _same(a: object, b: object) -> bool:
    if type(a) is type(b):
        return a == b
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


def lookup(doc: object, path: str) -> object:
    """The value at a dotted path of a JSON document, or a private missing marker."""
    value: object = doc
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def parse_payload(payload: bytes | None) -> object:
    """A payload decoded as JSON, or None when it is absent or not JSON."""
    if payload is None:
        return None
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


def rule_from_config(raw: object, where: str) -> Rule:
    """Build a rule from a ``[[rule]]`` table (config) or an evidence file's ``rule`` object."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {"name", "match", "group_by", "threshold", "window_seconds", "window_ms", "logs"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: a non-empty string is required")
    match = raw.get("match")
    if not isinstance(match, dict) or not match:
        raise ConfigError(f"{where}.match: a non-empty table of field = value(s) is required")
    pairs: list[tuple[str, tuple[Any, ...]]] = []
    for path, value in match.items():
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values or not all(isinstance(v, _SCALARS) for v in values):
            raise ConfigError(f"{where}.match.{path}: expected a scalar or a list of scalars")
        pairs.append((str(path), values))
    group_by = raw.get("group_by")
    if group_by is not None and (not isinstance(group_by, str) or not group_by):
        raise ConfigError(f"{where}.group_by: expected a dotted field path")
    threshold = _int(raw.get("threshold", 0), f"{where}.threshold")
    if "window_ms" in raw:
        window_ms = _int(raw["window_ms"], f"{where}.window_ms")
    else:
        window_ms = _int(raw.get("window_seconds", 0), f"{where}.window_seconds") * 1000
    if threshold and window_ms <= 0:
        raise ConfigError(f"{where}.window_seconds: a threshold needs a positive window")
    logs = raw.get("logs", [])
    if not isinstance(logs, list) or not all(isinstance(x, str) for x in logs):
        raise ConfigError(f"{where}.logs: expected a list of log names")
    return Rule(name, tuple(pairs), group_by, threshold, window_ms, tuple(logs))


def _int(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class Hit:
    """A matching entry counted by a rule."""

    index: int
    timestamp_ms: int


@dataclass(frozen=True)
class Firing:
    """A rule that fired: the rule, the group, and the entries that made it fire."""

    rule: Rule
    group: str
    hits: tuple[Hit, ...]


class RuleEngine:
    """Evaluates rules over entries in log order, with windows that can be saved and restored.

    ``windows`` maps (rule name, group) to the hits still inside that rule's window; the
    monitor persists it with each verified checkpoint so a restart resumes exactly.
    """

    def __init__(
        self, rules: Sequence[Rule], windows: Mapping[tuple[str, str], Sequence[Hit]] | None = None
    ) -> None:
        """Start with saved windows (default none)."""
        self.rules = tuple(rules)
        self.windows: dict[tuple[str, str], list[Hit]] = {
            k: list(v) for k, v in (windows or {}).items()
        }

    def feed(self, index: int, timestamp_ms: int, doc: object) -> list[Firing]:
        """Count one entry (its decoded payload); return the rules that fire on it."""
        fired: list[Firing] = []
        for rule in self.rules:
            if not rule.matches(doc):
                continue
            hit = Hit(index, timestamp_ms)
            group = rule.group(doc)
            if rule.threshold == 0:
                fired.append(Firing(rule, group, (hit,)))
                continue
            key = (rule.name, group)
            window = [
                h
                for h in self.windows.get(key, [])
                if h.timestamp_ms > timestamp_ms - rule.window_ms
            ]
            window.append(hit)
            if len(window) > rule.threshold:
                fired.append(Firing(rule, group, tuple(window)))
                window = []  # fire once per burst; counting starts again
            if window:
                self.windows[key] = window
            else:
                self.windows.pop(key, None)
        return fired


def check_firing(rule: Rule, entries: Iterable[tuple[int, int, object]]) -> str:
    """Re-evaluate a firing offline: ``entries`` are (index, timestamp, decoded payload).

    Returns the group; raises ``ConfigError`` naming what does not hold (the caller turns it
    into a verification failure).
    """
    items = sorted(entries)
    if not items:
        raise ConfigError("no entries")
    groups = set()
    for index, _, doc in items:
        if not rule.matches(doc):
            raise ConfigError(f"entry {index} does not match rule {rule.name!r}")
        groups.add(rule.group(doc))
    if len(groups) != 1:
        raise ConfigError(f"entries fall in {len(groups)} groups of rule {rule.name!r}")
    if rule.threshold:
        if len(items) <= rule.threshold:
            raise ConfigError(f"{len(items)} entries do not exceed the threshold {rule.threshold}")
        span = items[-1][1] - items[0][1]
        if span >= rule.window_ms:
            raise ConfigError(f"the entries span {span} ms, not within {rule.window_ms} ms")
    return groups.pop()
