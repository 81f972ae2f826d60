"""The audit-event schema, ``translog.event/v1``: validation, index terms and query matching.

An audit event is one JSON object (docs/EVENTS.md is the reference; the machine-readable JSON
Schema is ``translog/formats/event-v1.schema.json``). :func:`validate_event` checks a parsed
object and raises :class:`~translog.errors.EventError` (a ``MalformedError``, so HTTP 400) whose
message names the field's path: ``event.actor.id: expected a string of 1-256 characters``.

:func:`index_terms` gives the search terms of a valid event; :class:`Query` is a search and
:meth:`Query.matches` decides whether an event satisfies it (the index narrows candidates,
this confirms them, so a hash collision in the index can never produce a wrong result).

This module is pure: no I/O, no aiohttp, no lmdb.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from translog.core.jsonfields import strict_json
from translog.errors import EventError

SCHEMA = "translog.event/v1"
"""The value of an event's ``schema`` field for this version."""

CATEGORIES = (
    "authentication",
    "authorization",
    "account",
    "configuration",
    "data_access",
    "api_activity",
    "system",
    "admin",
)
"""Event categories; each maps to an OCSF class (docs/EVENTS.md)."""

RESULTS = ("success", "failure", "unknown")
"""``outcome.result`` values (OCSF ``status``: Success, Failure, Unknown)."""

MAX_EVENT_BYTES = 64 * 1024
"""Largest serialized event accepted (details included)."""
MAX_TARGETS = 32
MAX_DETAILS_DEPTH = 8
MAX_TIME = (1 << 53) - 1

_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_TYPE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")

_TOP = frozenset(
    {
        "schema",
        "id",
        "time",
        "actor",
        "action",
        "category",
        "targets",
        "outcome",
        "source",
        "request_id",
        "trace_id",
        "tenant",
        "service",
        "details",
    }
)
_ACTOR = frozenset({"type", "id", "name"})
_TARGET = frozenset({"type", "id", "name"})
_OUTCOME = frozenset({"result", "reason"})
_SOURCE = frozenset({"ip", "user_agent"})

QUERY_FIELDS = ("actor", "action", "target", "outcome", "category", "id")
"""Fields a query can filter on besides ``tenant`` and the time range."""


def _fail(path: str, message: str) -> EventError:
    return EventError(f"{path}: {message}")


def _object(value: object, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, "expected a JSON object")
    for key in value:
        if key not in allowed:
            raise _fail(f"{path}.{str(key)[:64]}", "unknown field")
    return value


def _string(
    obj: Mapping[str, Any],
    name: str,
    path: str,
    *,
    required: bool = True,
    max_len: int = 256,
    pattern: re.Pattern[str] | None = None,
    what: str = "",
) -> str | None:
    where = f"{path}.{name}"
    if name not in obj:
        if required:
            raise _fail(where, "missing")
        return None
    value = obj[name]
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise _fail(where, f"expected a string of 1-{max_len} characters")
    if name != "reason" and _CONTROL.search(value):
        raise _fail(where, "control characters are not allowed")
    if pattern is not None and not pattern.fullmatch(value):
        raise _fail(where, f"expected {what}, got {value[:64]!r}")
    return value


def _depth(value: object, depth: int, path: str) -> None:
    if depth > MAX_DETAILS_DEPTH:
        raise _fail(path, f"nested deeper than {MAX_DETAILS_DEPTH} levels")
    if isinstance(value, dict):
        for k, v in value.items():
            _depth(v, depth + 1, f"{path}.{str(k)[:64]}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _depth(v, depth + 1, f"{path}[{i}]")
    elif isinstance(value, float) and value != value:  # NaN never arrives from strict JSON
        raise _fail(path, "NaN is not allowed")


def validate_event(event: object, path: str = "event") -> Mapping[str, Any]:
    """Check ``event`` (parsed JSON) against ``translog.event/v1``; return it unchanged."""
    obj = _object(event, path, _TOP)
    schema = obj.get("schema")
    if schema is None:
        raise _fail(f"{path}.schema", f'missing (expected "{SCHEMA}")')
    if schema != SCHEMA:
        raise _fail(f"{path}.schema", f'expected "{SCHEMA}", got {str(schema)[:64]!r}')
    _string(obj, "id", path, max_len=128)
    if "time" not in obj:
        raise _fail(f"{path}.time", "missing")
    t = obj["time"]
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t <= MAX_TIME:
        raise _fail(f"{path}.time", "expected an integer: UTC ms since the epoch")
    actor = _object(obj.get("actor"), f"{path}.actor", _ACTOR) if "actor" in obj else None
    if actor is None:
        raise _fail(f"{path}.actor", "missing")
    _string(actor, "type", f"{path}.actor", max_len=32, pattern=_TYPE, what="a lowercase type")
    _string(actor, "id", f"{path}.actor")
    _string(actor, "name", f"{path}.actor", required=False)
    _string(
        obj,
        "action",
        path,
        max_len=128,
        pattern=_ACTION,
        what="a dotted lowercase action such as user.login",
    )
    category = _string(obj, "category", path, max_len=32)
    if category not in CATEGORIES:
        raise _fail(f"{path}.category", f"expected one of {', '.join(CATEGORIES)}")
    targets = obj.get("targets", [])
    if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
        raise _fail(f"{path}.targets", f"expected an array of at most {MAX_TARGETS} objects")
    for i, target in enumerate(targets):
        where = f"{path}.targets[{i}]"
        t_obj = _object(target, where, _TARGET)
        _string(t_obj, "type", where, max_len=32, pattern=_TYPE, what="a lowercase type")
        _string(t_obj, "id", where)
        _string(t_obj, "name", where, required=False)
    if "outcome" not in obj:
        raise _fail(f"{path}.outcome", "missing")
    outcome = _object(obj["outcome"], f"{path}.outcome", _OUTCOME)
    result = _string(outcome, "result", f"{path}.outcome", max_len=16)
    if result not in RESULTS:
        raise _fail(f"{path}.outcome.result", f"expected one of {', '.join(RESULTS)}")
    _string(outcome, "reason", f"{path}.outcome", required=False, max_len=1024)
    if "source" in obj:
        source = _object(obj["source"], f"{path}.source", _SOURCE)
        ip = _string(source, "ip", f"{path}.source", required=False, max_len=64)
        if ip is not None:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise _fail(f"{path}.source.ip", f"not an IPv4 or IPv6 address: {ip!r}") from None
        _string(source, "user_agent", f"{path}.source", required=False, max_len=1024)
    _string(obj, "request_id", path, required=False, max_len=128)
    _string(obj, "trace_id", path, required=False, max_len=128)
    _string(obj, "tenant", path, max_len=64, pattern=_TENANT, what="1-64 of A-Z a-z 0-9 . _ -")
    _string(obj, "service", path, max_len=128)
    if "details" in obj:
        if not isinstance(obj["details"], dict):
            raise _fail(f"{path}.details", "expected a JSON object")
        _depth(obj["details"], 1, f"{path}.details")
    return obj


def parse_event(payload: bytes, path: str = "event") -> Mapping[str, Any]:
    """Parse a payload as a UTF-8 JSON event and validate it (:class:`EventError` if not)."""
    if len(payload) > MAX_EVENT_BYTES:
        raise EventError(f"{path}: {len(payload)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    try:
        obj = strict_json(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise EventError(f"{path}: not UTF-8") from None
    except ValueError as e:
        raise EventError(f"{path}: not JSON: {str(e)[:120]}") from None
    return validate_event(obj, path)


def validate_payloads(items: Iterable[tuple[str, bytes]]) -> None:
    """Check each ``(where, payload)`` is an event; the error names ``where`` and the field."""
    for where, payload in items:
        parse_event(payload, "event" if where == "payload" else f"{where}: event")


def try_parse_event(payload: bytes) -> Mapping[str, Any] | None:
    """The validated event in ``payload``, or None when it is not one (never raises)."""
    try:
        return parse_event(payload)
    except EventError:
        return None


def event_subjects(event: Mapping[str, Any]) -> set[str]:
    """The subject ids an event names: its actor and every target (for erasure by subject)."""
    out = {str(event["actor"]["id"])}
    out.update(str(t["id"]) for t in event.get("targets", ()))
    return out


def index_terms(event: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The ``(field, tenant, value)`` search terms of a valid event.

    ``tenant`` alone is a term (its value is empty), so a query with only a tenant and a
    time range is answered from the index too.
    """
    tenant = str(event["tenant"])
    terms = [
        ("tenant", tenant, ""),
        ("id", tenant, str(event["id"])),
        ("actor", tenant, str(event["actor"]["id"])),
        ("action", tenant, str(event["action"])),
        ("category", tenant, str(event["category"])),
        ("outcome", tenant, str(event["outcome"]["result"])),
    ]
    seen: set[str] = set()
    for target in event.get("targets", ()):
        tid = str(target["id"])
        if tid not in seen:
            seen.add(tid)
            terms.append(("target", tenant, tid))
    return terms


@dataclass(frozen=True)
class Query:
    """A search within one tenant: equality filters and a leaf-time range (both inclusive)."""

    tenant: str
    filters: Mapping[str, str] = field(default_factory=dict)
    """Field (one of :data:`QUERY_FIELDS`) → value."""
    from_ms: int | None = None
    to_ms: int | None = None

    def __post_init__(self) -> None:
        if not _TENANT.fullmatch(self.tenant):
            raise EventError(f"tenant: expected 1-64 of A-Z a-z 0-9 . _ -, got {self.tenant!r}")
        for name, value in self.filters.items():
            if name not in QUERY_FIELDS:
                raise EventError(f"{name}: unknown query field; use {', '.join(QUERY_FIELDS)}")
            if not isinstance(value, str) or not 1 <= len(value) <= 256:
                raise EventError(f"{name}: expected 1-256 characters")
        result = self.filters.get("outcome")
        if result is not None and result not in RESULTS:
            raise EventError(f"outcome: expected one of {', '.join(RESULTS)}")
        if self.from_ms is not None and self.to_ms is not None and self.from_ms > self.to_ms:
            raise EventError(f"from: {self.from_ms} is after to: {self.to_ms}")

    def terms(self) -> list[tuple[str, str, str]]:
        """The index terms every matching event has (at least the tenant's)."""
        out = [(name, self.tenant, value) for name, value in sorted(self.filters.items())]
        return out or [("tenant", self.tenant, "")]

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether a valid event satisfies the filters (the time range is checked apart)."""
        if event.get("tenant") != self.tenant:
            return False
        for name, value in self.filters.items():
            if name == "actor" and event["actor"]["id"] != value:
                return False
            if name == "target" and all(t["id"] != value for t in event.get("targets", ())):
                return False
            if name == "outcome" and event["outcome"]["result"] != value:
                return False
            if name in ("action", "category", "id") and event[name] != value:
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        """The query as a JSON object (stored in bundles and self-audit entries)."""
        out: dict[str, Any] = {"tenant": self.tenant, **dict(sorted(self.filters.items()))}
        if self.from_ms is not None:
            out["from"] = self.from_ms
        if self.to_ms is not None:
            out["to"] = self.to_ms
        return out

    @classmethod
    def from_json(cls, obj: object, path: str = "query") -> Query:
        """Parse :meth:`to_json` output (strict; errors name the field)."""
        if not isinstance(obj, dict):
            raise EventError(f"{path}: expected a JSON object")
        tenant = obj.get("tenant")
        if not isinstance(tenant, str):
            raise EventError(f"{path}.tenant: expected a string")
        filters: dict[str, str] = {}
        bounds: dict[str, int | None] = {"from": None, "to": None}
        for key, value in obj.items():
            if key == "tenant":
                continue
            if key in bounds:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise EventError(f"{path}.{key}: expected ms since the epoch")
                bounds[key] = value
            elif key in QUERY_FIELDS:
                if not isinstance(value, str):
                    raise EventError(f"{path}.{key}: expected a string")
                filters[key] = value
            else:
                raise EventError(f"{path}.{str(key)[:64]}: unknown query field")
        return cls(tenant, filters, bounds["from"], bounds["to"])


def describe(events: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts of events by action, outcome and category (for summaries)."""
    out: dict[str, dict[str, int]] = {"action": {}, "outcome": {}, "category": {}}
    for event in events:
        for name, value in (
            ("action", event["action"]),
            ("outcome", event["outcome"]["result"]),
            ("category", event["category"]),
        ):
            out[name][value] = out[name].get(value, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def parse_time(text: str, what: str) -> int:
    """ms since the epoch from decimal ms or RFC 3339 with a zone (``2026-07-01T00:00:00Z``)."""
    import datetime as dt

    if text.isascii() and text.isdigit() and len(text) <= 16:
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise EventError(
            f"{what}: expected RFC 3339 or ms since the epoch, got {text[:40]!r}"
        ) from None
    if when.tzinfo is None:
        raise EventError(f"{what}: {text[:40]!r} has no time zone; add Z for UTC")
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    ms = (when - epoch) // dt.timedelta(milliseconds=1)
    if ms < 0:
        raise EventError(f"{what}: {text[:40]!r} is before 1970")
    return ms
