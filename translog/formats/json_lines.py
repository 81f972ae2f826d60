"""JSON lines bodies (one JSON object per line) onto ``translog.event/v1``. Pure.

What log shippers post: Fluent Bit's ``http`` output with ``format json_lines``, Vector's
``http`` sink with the ``json`` codec and ``newline_delimited`` framing (``ndjson``), and
syslog-ng's ``http()`` destination with a ``$(format-json ...)`` body and ``batch-lines()``.
:func:`parse_json_lines` maps every line:

* an object whose ``schema`` is ``translog.event/v1`` is validated and kept byte for byte (its
  ``id`` is the idempotency key, as the SDK's ``submit_event`` uses it);
* any other object is wrapped in an event (action ``log.record``, category ``system``, outcome
  ``unknown``) whose ``details.record`` is the whole object (docs/EVENTS.md, "JSON lines").

Blank lines are skipped. Anything else (a line that is not JSON, not an object, an invalid
event, too large) refuses the whole body with an error naming the line: nothing of it is
submitted.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

from translog.core.jsonfields import strict_json
from translog.errors import MalformedError, TooLargeError, UnsupportedMediaTypeError
from translog.formats.batch import MAX_KEY_LENGTH, Batch
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import MAX_EVENT_BYTES, SCHEMA, validate_event
from translog.formats.ingest_common import clean_text, keep_original, rfc3339_ms

CONTENT_TYPES = frozenset(
    {
        "application/x-ndjson",  # Vector (ndjson), the NDJSON spec
        "application/json",  # Fluent Bit (json_lines), and anyone's header("Content-Type: ...")
        "application/jsonlines",
        "application/jsonl",
        "application/json-lines",
        "application/x-jsonlines",
        "text/plain",
        # syslog-ng's http() sets no Content-Type of its own: libcurl then sends this one.
        "application/x-www-form-urlencoded",
    }
)
"""The request content types ``POST /ingest/json-lines`` accepts."""
TIME_FIELDS = ("time", "timestamp", "@timestamp", "date", "ISODATE", "DATE")
"""Fields of a wrapped object taken as the event time, in this order (RFC 3339, or a number
of seconds, Fluent Bit's ``json_date_format double``, or of milliseconds)."""
HOST_FIELDS = ("host", "hostname", "HOST")
"""Fields of a wrapped object taken as the actor (``service``-typed), in this order."""


def check_content_type(content_type: str) -> None:
    """UnsupportedMediaTypeError (415) unless ``content_type`` is one of :data:`CONTENT_TYPES`."""
    if content_type not in CONTENT_TYPES:
        raise UnsupportedMediaTypeError(
            f"content type {content_type[:64]!r}: json-lines takes application/x-ndjson, "
            "application/json or application/jsonlines (one JSON object per line)"
        )


def parse_json_lines(
    body: bytes, *, tenant: str, service: str, max_entries: int, now_ms: int | None = None
) -> Batch:
    """The entries of a JSON lines body; labels ``line <n>`` (1-based, blank lines counted)."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    payloads: list[bytes] = []
    keys: list[str | None] = []
    labels: list[str] = []
    for n, raw in enumerate(body.split(b"\n"), 1):
        line = raw.strip()
        if not line:
            continue
        where = f"line {n}"
        if len(payloads) == max_entries:
            raise TooLargeError(f"body holds more than {max_entries} lines ({where})")
        payload, key = map_line(line, where, tenant=tenant, service=service, now_ms=now)
        payloads.append(payload)
        keys.append(key)
        labels.append(where)
    if not payloads:
        raise MalformedError("body holds no JSON lines")
    return Batch(payloads, keys if any(k is not None for k in keys) else None, labels)


def map_line(
    line: bytes, where: str, *, tenant: str, service: str, now_ms: int
) -> tuple[bytes, str | None]:
    """One line: its event payload and idempotency key (None for a wrapped object)."""
    try:
        obj = strict_json(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise MalformedError(f"{where}: not valid UTF-8 at byte {e.start}") from e
    except RecursionError as e:
        raise MalformedError(f"{where}: JSON nested too deeply") from e
    except ValueError as e:
        raise MalformedError(f"{where}: invalid JSON: {str(e)[:120]}") from e
    if not isinstance(obj, dict):
        raise MalformedError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if obj.get("schema") == SCHEMA:
        if len(line) > MAX_EVENT_BYTES:
            raise TooLargeError(f"{where}: event of {len(line)} bytes exceeds {MAX_EVENT_BYTES}")
        validate_event(obj, f"{where}: event")
        return line, _event_key(str(obj["id"]))
    event = wrap(obj, tenant=tenant, service=service, now_ms=now_ms)
    payload = encode_event(event)
    if len(payload) > MAX_EVENT_BYTES:
        raise TooLargeError(
            f"{where}: the wrapped event is {len(payload)} bytes; an event is at most "
            f"{MAX_EVENT_BYTES} bytes"
        )
    validate_event(event, f"{where}: event")
    return payload, None


def wrap(obj: Mapping[str, Any], *, tenant: str, service: str, now_ms: int) -> dict[str, Any]:
    """The event that carries a foreign JSON object in ``details.record``."""
    host = next((obj[k] for k in HOST_FIELDS if isinstance(obj.get(k), str) and obj[k]), None)
    return {
        "schema": SCHEMA,
        "id": str(uuid.uuid4()),
        "time": record_time(obj, now_ms),
        "actor": {"type": "service", "id": clean_text(host) if host else service},
        "action": "log.record",
        "category": "system",
        "targets": [],
        "outcome": {"result": "unknown"},
        "tenant": tenant,
        "service": service,
        "details": keep_original("record", obj),
    }


def record_time(obj: Mapping[str, Any], now_ms: int) -> int:
    """The first usable :data:`TIME_FIELDS` value in ms since the epoch, else ``now_ms``."""
    for name in TIME_FIELDS:
        value = obj.get(name)
        if isinstance(value, str):
            ms = rfc3339_ms(value)
            if ms is not None:
                return ms
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if 0 <= value < 1e11:  # seconds (Fluent Bit's double, epoch)
                return int(value * 1000)
            if 1e11 <= value < 1e14:  # milliseconds
                return int(value)
    return now_ms


def _event_key(event_id: str) -> str:
    if len(event_id) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in event_id):
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
