"""Build valid ``translog.event/v1`` events (the SDK side of docs/EVENTS.md). Pure.

>>> event = build_event("user.login", actor=("user", "alice"), category="authentication",
...                     outcome="failure", reason="bad password", tenant="acme", service="sso")
>>> payload = encode_event(event)      # canonical JSON bytes, ready for POST /add
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from translog.formats.event_schema import SCHEMA, validate_event


def build_event(
    action: str,
    *,
    actor: tuple[str, str],
    category: str,
    tenant: str,
    service: str,
    outcome: str = "success",
    reason: str | None = None,
    targets: Iterable[tuple[str, str]] = (),
    source_ip: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    trace_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    time_ms: int | None = None,
    actor_name: str | None = None,
) -> dict[str, Any]:
    """A validated event; raises :class:`~translog.errors.EventError` naming the field.

    ``actor`` and each target are ``(type, id)``. ``event_id`` defaults to a random UUID and
    ``time_ms`` to now (UTC ms since the epoch).
    """
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "id": event_id or str(uuid.uuid4()),
        "time": time.time_ns() // 1_000_000 if time_ms is None else time_ms,
        "actor": {"type": actor[0], "id": actor[1]},
        "action": action,
        "category": category,
        "targets": [{"type": t, "id": i} for t, i in targets],
        "outcome": {"result": outcome},
        "tenant": tenant,
        "service": service,
    }
    if actor_name is not None:
        event["actor"]["name"] = actor_name
    if reason is not None:
        event["outcome"]["reason"] = reason
    source = {k: v for k, v in (("ip", source_ip), ("user_agent", user_agent)) if v is not None}
    if source:
        event["source"] = source
    if request_id is not None:
        event["request_id"] = request_id
    if trace_id is not None:
        event["trace_id"] = trace_id
    if details:
        event["details"] = dict(details)
    validate_event(event)
    return event


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Canonical bytes of an event: sorted keys, no spaces, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_float_free_event(event: Mapping[str, Any]) -> bytes:
    """:func:`encode_event`'s bytes for an event that holds no float, made by orjson (several
    times faster; tests/property/test_event_encoding.py checks the two agree on every such
    value). A float may be written differently (``0.00001``, not ``1e-05``), so the caller
    must know there is none. What orjson refuses (an integer past 64 bits, a key that is not
    a string, a lone surrogate) goes through :func:`encode_event`, which decides."""
    try:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return encode_event(event)


def event_from_record(
    record: logging.LogRecord, event_id: str, *, tenant: str, service: str
) -> dict[str, Any]:
    """The event for a log record (what :class:`translog.client.handler.TranslogHandler` sends).

    ``extra={"audit": {...}}`` may give ``action``, ``actor`` (``(type, id)``),
    ``category``, ``outcome``, ``reason``, ``targets`` (``[(type, id), ...]``),
    ``source_ip``, ``user_agent``, ``request_id``, ``trace_id``; any other key goes into
    ``details``. Defaults: action ``log.<level>``, actor the service, category ``system``,
    outcome ``success``. ``details`` also holds the logger, level, message and any traceback.
    """
    audit = dict(record.__dict__.get("audit") or {})
    actor = audit.pop("actor", ("service", service))
    if isinstance(actor, Mapping):
        actor = (actor.get("type"), actor.get("id"))
    targets = [
        (t.get("type"), t.get("id")) if isinstance(t, Mapping) else tuple(t)
        for t in audit.pop("targets", ())
    ]
    named = {
        k: audit.pop(k)
        for k in ("source_ip", "user_agent", "request_id", "trace_id", "reason")
        if k in audit
    }
    details: dict[str, Any] = {
        "logger": record.name,
        "level": record.levelname,
        "message": record.getMessage(),
    }
    action = audit.pop("action", f"log.{record.levelname.lower()}")
    category = audit.pop("category", "system")
    outcome = audit.pop("outcome", "success")
    details.update(json.loads(json.dumps(audit, default=str)))
    if record.exc_info:
        details["exception"] = logging.Formatter().formatException(record.exc_info)
    return build_event(
        action,
        actor=tuple(actor),
        category=category,
        tenant=tenant,
        service=service,
        outcome=outcome,
        targets=targets,
        details=details,
        event_id=event_id,
        time_ms=int(record.created * 1000),
        **named,
    )
