"""What the ingest formats share (:mod:`translog.formats.k8s_audit`,
:mod:`translog.formats.json_lines`): cleaning a foreign string into an event field, keeping the
original record in ``details``, timestamps, the ``?tenant=`` / ``?service=`` defaults. Pure.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from translog.errors import MalformedError
from translog.formats.event_schema import MAX_DETAILS_DEPTH

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SEGMENT = re.compile(r"[^a-z0-9_]+")
DEFAULT_TENANT = "default"
"""The tenant of ingested events when the request names none (``?tenant=``)."""


def clean_text(value: str, max_len: int = 256) -> str:
    """A foreign string as an event string field: control characters replaced by U+FFFD,
    cut to ``max_len`` characters (the original stays in ``details``)."""
    return _CONTROL.sub("\ufffd", value)[:max_len]


def action_segment(value: str, fallback: str) -> str:
    """``value`` as one segment of a dotted lowercase action (``[a-z][a-z0-9_]*``)."""
    seg = _SEGMENT.sub("_", value.lower()).strip("_")[:40]
    if not seg:
        return fallback
    return seg if "a" <= seg[0] <= "z" else f"x{seg}"[:40]


def encode_json(value: object) -> str:
    """Canonical JSON text (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def depth(value: object) -> int:
    """Nesting depth of a JSON value: a scalar is 0, ``{}`` or ``[]`` is 1."""
    best = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict):
            best = max(best, d + 1)
            stack.extend((v, d + 1) for v in item.values())
        elif isinstance(item, list):
            best = max(best, d + 1)
            stack.extend((v, d + 1) for v in item)
    return best


def keep_original(name: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` holding ``record`` unchanged under ``name``; or, when it is nested deeper than
    an event's details allow, its canonical JSON text under ``name + "_json"`` (lossless)."""
    # details is level 1, details[name] level 2: the record's own depth may reach the rest.
    if depth(record) <= MAX_DETAILS_DEPTH - 1:
        return {name: dict(record)}
    return {f"{name}_json": encode_json(record)}


def rfc3339_ms(text: str) -> int | None:
    """ms since the epoch of an RFC 3339 time with a zone (``2024-01-01T10:00:00.123456Z``),
    or None when ``text`` is not one."""
    if not 0 < len(text) <= 64:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    ms = (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    return ms if 0 <= ms < 1 << 53 else None


def tenant_and_service(query: Mapping[str, str], default_service: str) -> tuple[str, str]:
    """``(tenant, service)`` from a request's ``?tenant=`` and ``?service=``; anything else, or
    a bad value, is a MalformedError (400)."""
    unknown = sorted(set(query) - {"tenant", "service"})
    if unknown:
        raise MalformedError(f"unknown query parameter {unknown[0][:32]!r}; use tenant or service")
    tenant = query.get("tenant", DEFAULT_TENANT)
    if not _TENANT.fullmatch(tenant):
        raise MalformedError(f"tenant: expected 1-64 of A-Z a-z 0-9 . _ -, got {tenant[:64]!r}")
    service = query.get("service", default_service)
    if not 1 <= len(service) <= 128 or _CONTROL.search(service):
        raise MalformedError("service: expected 1-128 characters without control characters")
    return tenant, service
