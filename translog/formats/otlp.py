"""OTLP/HTTP logs (``POST /v1/logs``): parse an ``ExportLogsServiceRequest``, map each
LogRecord onto a ``translog.event/v1``, and encode the answers. Pure: no aiohttp, no lmdb.

The messages are ``opentelemetry-proto``'s generated classes; the JSON encoding is OTLP/JSON
(protobuf's JSON mapping, with trace and span ids as hex instead of base64). docs/EVENTS.md
("OTLP logs") has the field-by-field mapping. In short: one entry per LogRecord, whose event
carries the service (``service.name``), the host (``host.name``), severity, body, attributes,
trace and span ids and the record's time, plus ``details.otlp``: the record with its resource
and scope as a one-record ``ExportLogsServiceRequest`` (protobuf, base64), so the entry keeps
exactly what the source sent, whichever encoding it used.

A record that cannot become a valid event (a trace id that is not 16 bytes, a service name
with control characters, an event over the size limit...) is rejected alone: it is counted
in ``partial_success``, the others are kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from translog.errors import EventError, MalformedError, TooLargeError, UnsupportedMediaTypeError
from translog.formats.batch import Batch
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import MAX_DETAILS_DEPTH, MAX_EVENT_BYTES, SCHEMA

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SOURCE = "otlp"
"""The ``source`` label of this ingest path in ``translog_source_entries_total``."""
DEFAULT_TENANT = "default"
"""The tenant of a record with no ``translog.tenant`` attribute (record or resource)."""
DEFAULT_SERVICE = "unknown_service"
"""The service of a resource without ``service.name`` (the OpenTelemetry default)."""
MAX_MESSAGES = 3
"""Rejected records named one by one in ``partial_success.error_message``."""

_SEVERITIES = ("unspecified", "trace", "debug", "info", "warn", "error", "fatal")
_ID_FIELDS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8}
_JSON_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# google.rpc.Code for the HTTP statuses translog answers (OTLP does not require the code;
# clients may log it).
_RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,  # INVALID_ARGUMENT
    429: 8,  # RESOURCE_EXHAUSTED
    503: 14,  # UNAVAILABLE
    507: 8,  # RESOURCE_EXHAUSTED
}


@dataclass(frozen=True, slots=True)
class MappedLogs:
    """The events of one request: the valid records as a batch, and what was rejected."""

    batch: Batch
    """Payloads (canonical event JSON) and labels of the valid records (no per-entry keys)."""
    request_key: str
    """The request's one idempotency key: ``otlp-<hex of body_digest[:16]>``."""
    rejected: int
    """Records that could not become events."""
    errors: list[str]
    """Why, for the first :data:`MAX_MESSAGES` rejected records."""

    def partial_message(self) -> str:
        """The ``partial_success.error_message`` (empty when nothing was rejected)."""
        if not self.rejected:
            return ""
        more = self.rejected - len(self.errors)
        return "; ".join(self.errors) + (f"; and {more} more" if more > 0 else "")


def encoding_of(content_type: str) -> str:
    """:data:`PROTOBUF` or :data:`JSON` for a request's media type, else a 415."""
    if content_type in (PROTOBUF, JSON):
        return content_type
    raise UnsupportedMediaTypeError(
        f"content type {content_type[:64]!r}: /v1/logs takes {PROTOBUF} or {JSON}"
    )


def parse_request(body: bytes, encoding: str) -> Any:
    """The ``ExportLogsServiceRequest`` in ``body``; MalformedError (400) naming the fault."""
    message = logs_service_pb2.ExportLogsServiceRequest()
    if encoding == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RecursionError, ValueError) as e:
            raise MalformedError(f"not an OTLP ExportLogsServiceRequest protobuf: {e}") from None
        return message
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MalformedError(f"not JSON: {str(e)[:120]}") from None
    if not isinstance(document, dict):
        raise MalformedError("OTLP/JSON: expected an ExportLogsServiceRequest object")
    _ids_to_base64(document)
    try:
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError, AttributeError) as e:
        raise MalformedError(f"not an OTLP/JSON ExportLogsServiceRequest: {str(e)[:200]}") from None
    return message


def _ids_to_base64(document: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping reads base64."""
    for r, rl in enumerate(_list(document, "resourceLogs", "resource_logs")):
        for s, sl in enumerate(_list(rl, "scopeLogs", "scope_logs")):
            for i, record in enumerate(_list(sl, "logRecords", "log_records")):
                if not isinstance(record, dict):
                    continue
                for name in _ID_FIELDS.keys() & record.keys():
                    value = record[name]
                    where = f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{i}].{name}"
                    if not isinstance(value, str):
                        raise MalformedError(f"{where}: expected a hex string")
                    try:
                        raw = bytes.fromhex(value)
                    except ValueError:
                        raise MalformedError(f"{where}: expected a hex string") from None
                    record[name] = base64.b64encode(raw).decode()


def _list(obj: object, *names: str) -> list[Any]:
    if isinstance(obj, dict):
        for name in names:
            value = obj.get(name)
            if isinstance(value, list):
                return value
    return []


def count_records(message: Any) -> int:
    """How many LogRecords the request holds."""
    return sum(len(sl.log_records) for rl in message.resource_logs for sl in rl.scope_logs)


def map_request(
    message: Any,
    body_digest: bytes,
    *,
    received_ms: int,
    max_payload_bytes: int,
    reference: bool = False,
) -> MappedLogs:
    """Map every LogRecord of ``message`` onto an event (rejecting those that cannot be).

    The request's idempotency key is ``otlp-<hex of body_digest[:16]>``
    (:attr:`MappedLogs.request_key`), and record ``i`` (counted across the whole request)
    gets the event id ``<that key>-<i>``: a retried request (the same body) makes no second
    entry, while two requests never share a key. ``received_ms`` is the event time of a
    record that has neither ``time_unix_nano`` nor ``observed_time_unix_nano``.

    A flat record's canonical bytes are written piece by piece (:func:`_flat_payload`);
    ``reference=True`` builds every event as a dict and encodes it with
    :func:`encode_event` instead, which the tests hold the fast bytes to.
    """
    limit = min(max_payload_bytes, MAX_EVENT_BYTES)
    request_key = f"otlp-{body_digest[:16].hex()}"
    prefix = f"{request_key}-"
    payloads: list[bytes] = []
    labels: list[str] = []
    errors: list[str] = []
    rejected = 0
    i = 0
    for r, rl in enumerate(message.resource_logs):
        resource = _attributes(rl.resource.attributes)
        for s, sl in enumerate(rl.scope_logs):
            context = _Context(resource, _one_record_request(rl, sl), sl.scope.name)
            for n, record in enumerate(sl.log_records):
                key = f"{prefix}{i}"
                i += 1
                try:
                    payload = _payload(record, context, key, received_ms, reference)
                    if len(payload) > limit:
                        raise TooLargeError(
                            f"event of {len(payload)} bytes exceeds the {limit}-byte limit"
                        )
                except (EventError, MalformedError, TooLargeError) as e:
                    rejected += 1
                    if len(errors) < MAX_MESSAGES:
                        errors.append(f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{n}]: {e}")
                    continue
                payloads.append(payload)
                labels.append(f"resourceLogs[{r}].scopeLogs[{s}].logRecords[{n}]")
    return MappedLogs(Batch(payloads, None, labels), request_key, rejected, errors)


def body_digest(body: bytes) -> bytes:
    """The digest that names a request's records (of the decoded body, so gzip or not)."""
    return hashlib.sha256(body).digest()


_SCALARS = frozenset({str, int, bool, type(None)})
"""The Python types of the JSON values orjson writes as :func:`encode_event` does."""


class _Context:
    """What every record of one ScopeLogs shares, and the one-record request they fill."""

    __slots__ = (
        "checked",
        "host",
        "json_host",
        "json_scope",
        "request",
        "resource",
        "scope_name",
        "slot",
        "valid",
    )

    def __init__(self, resource: dict[str, Any], request: Any, scope_name: str) -> None:
        self.resource = resource
        self.request = request
        self.slot = request.resource_logs[0].scope_logs[0].log_records.add()
        """The one record of :attr:`request`, overwritten by each record in turn."""
        self.checked: set[tuple[str, str]] = set()
        """``(field, value)`` already found valid (service, tenant)."""
        self.host = resource.get("host.name")
        self.json_host: bytes | None = None
        """``host.name`` as canonical JSON when it is a scalar other than a float (None when
        it is absent, or not flat: then no record of this scope takes :func:`_flat_payload`)."""
        if self.host is not None and type(self.host) in _SCALARS:
            self.json_host = orjson.dumps(self.host)
        self.scope_name = scope_name
        self.json_scope = orjson.dumps(scope_name)
        self.valid: dict[str, str] = {}
        """The resource's service and tenant, once checked (a bad one is checked, and
        refused, again for each record, so each is rejected with its reason)."""

    def resource_value(self, name: str, attribute: str, default: str, max_len: int) -> str:
        """The resource's ``attribute`` (or ``default``) as event field ``name``, checked
        once (:func:`_check`; a bad value raises again for every record)."""
        got = self.valid.get(name)
        if got is None:
            value = self.resource.get(attribute, default)
            got = self.valid[name] = _check(self, name, value, max_len)
        return got

    def host_flat(self) -> bool:
        """Whether ``host.name`` is absent or a scalar other than a float."""
        return self.host is None or self.json_host is not None

    def original(self, record: Any) -> bytes:
        """The record with its resource and scope: a one-record ``ExportLogsServiceRequest``,
        protobuf, in base64."""
        self.slot.CopyFrom(record)
        return binascii.b2a_base64(self.request.SerializeToString(), newline=False)


def _one_record_request(rl: Any, sl: Any) -> Any:
    """An ``ExportLogsServiceRequest`` with ``rl``'s resource and ``sl``'s scope, no record."""
    request = logs_service_pb2.ExportLogsServiceRequest()
    out = request.resource_logs.add()
    out.resource.CopyFrom(rl.resource)
    out.schema_url = rl.schema_url
    scope = out.scope_logs.add()
    scope.scope.CopyFrom(sl.scope)
    scope.schema_url = sl.schema_url
    return request


_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _check(context: _Context, name: str, value: object, max_len: int) -> str:
    """``value`` if it is a valid event string for ``name`` (as event_schema checks it)."""
    if isinstance(value, str) and (name, value) in context.checked:
        return value
    where = f"event.{name}"
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise EventError(f"{where}: expected a string of 1-{max_len} characters")
    if _CONTROL.search(value):
        raise EventError(f"{where}: control characters are not allowed")
    if name == "tenant" and not _TENANT.fullmatch(value):
        raise EventError(f"{where}: expected 1-64 of A-Z a-z 0-9 . _ -, got {value[:64]!r}")
    if name != "actor.id":
        context.checked.add((name, value))
    return value


_Common = tuple[str, str, dict[str, Any], str, str, str, str, Any, int]
"""The checked fields of one record that both encodings start from: trace id, span id,
attributes, service, tenant, actor type, actor id, body, time (ms); a plain tuple (one is
made per record)."""


def _common(record: Any, context: _Context, received_ms: int) -> _Common:
    """The fields a record chooses (ids, service, tenant, actor), checked as event_schema
    would check them (EventError or MalformedError for a bad record)."""
    raw = record.trace_id
    trace_id = raw.hex() if len(raw) == 16 else _id(raw, 16, "traceId")
    raw = record.span_id
    span_id = raw.hex() if len(raw) == 8 else _id(raw, 8, "spanId")
    attributes = _attributes(record.attributes)
    service = context.resource_value("service", "service.name", DEFAULT_SERVICE, 128)
    tenant = attributes.get("translog.tenant")
    if tenant is None:
        tenant = context.resource_value("tenant", "translog.tenant", DEFAULT_TENANT, 64)
    else:
        tenant = _check(context, "tenant", tenant, 64)
    nanos = record.time_unix_nano or record.observed_time_unix_nano
    enduser = attributes.get("enduser.id")
    if enduser is None:
        actor_type, actor_id = "service", service
    else:
        actor_type, actor_id = "user", _check(context, "actor.id", enduser, 256)
    body = _value(record.body) if record.HasField("body") else None
    time_ms = nanos // 1_000_000 if nanos else received_ms
    return (trace_id, span_id, attributes, service, tenant, actor_type, actor_id, body, time_ms)


def _payload(
    record: Any, context: _Context, event_id: str, received_ms: int, reference: bool
) -> bytes:
    """The canonical event bytes of one record: :func:`_flat_payload` when the record is
    flat (body, attributes and host all scalars, none a float), else :func:`encode_event`
    of :func:`record_event`'s dict."""
    c = _common(record, context, received_ms)
    if (
        not reference
        and context.host_flat()
        and type(c[7]) in _SCALARS
        and _SCALARS.issuperset(map(type, c[2].values()))
    ):
        try:
            return _flat_payload(record, context, event_id, c)
        except orjson.JSONEncodeError:
            pass  # what orjson refuses, encode_event decides
    return encode_event(_event(record, context, event_id, c))


def record_event(record: Any, context: _Context, event_id: str, received_ms: int) -> dict[str, Any]:
    """The ``translog.event/v1`` of one LogRecord, valid by construction: the few fields a
    record chooses (service, tenant, actor) are checked as event_schema would, ``details``
    is kept within its nesting limit (EventError or MalformedError for a bad record)."""
    return _event(record, context, event_id, _common(record, context, received_ms))


def _event(record: Any, context: _Context, event_id: str, c: _Common) -> dict[str, Any]:
    trace_id, span_id, attributes, service, tenant, actor_type, actor_id, body, time_ms = c
    body = _limit_depth(body, 2)
    attributes = _limit_depth(attributes, 2)
    host = _limit_depth(context.host, 2)
    details: dict[str, Any] = {
        "severity_number": record.severity_number,
        "severity_text": record.severity_text,
        "body": body,
        "attributes": attributes,
        "scope": context.scope_name,
        "otlp": context.original(record).decode(),
    }
    if host is not None:
        details["host"] = host
    if span_id:
        details["span_id"] = span_id
    if record.event_name:
        details["event_name"] = record.event_name
    event: dict[str, Any] = {
        "schema": SCHEMA,
        "id": event_id,
        "time": time_ms,
        "actor": {"type": actor_type, "id": actor_id},
        "action": f"log.{_severity(record.severity_number)}",
        "category": "system",
        "targets": [],
        "outcome": {"result": "unknown"},
        "tenant": tenant,
        "service": service,
        "details": details,
    }
    if trace_id:
        event["trace_id"] = trace_id
    return event


_DUMPS = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS


def _flat_payload(record: Any, context: _Context, event_id: str, c: _Common) -> bytes:
    """:func:`encode_event` of :func:`record_event`'s dict for a flat record, written piece
    by piece in the canonical key order (orjson writes each string, integer and flat object
    as ``json.dumps`` does for them; tests/property/test_event_encoding.py and the OTLP fuzz
    test check the bytes against :func:`encode_event`)."""
    trace_id, span_id, attributes, service, tenant, actor_type, actor_id, body, time_ms = c
    parts = [
        b'{"action":"log.',
        _severity(record.severity_number).encode(),
        b'","actor":{"id":',
        _DUMPS(actor_id),
        b',"type":"',
        actor_type.encode(),
        b'"},"category":"system","details":{"attributes":',
        _DUMPS(attributes, option=_SORTED),
        b',"body":',
        _DUMPS(body),
    ]
    if record.event_name:
        parts += (b',"event_name":', _DUMPS(record.event_name))
    if context.json_host is not None:
        parts += (b',"host":', context.json_host)
    parts += (
        b',"otlp":"',
        context.original(record),
        b'","scope":',
        context.json_scope,
        b',"severity_number":',
        str(record.severity_number).encode(),
        b',"severity_text":',
        _DUMPS(record.severity_text),
    )
    if span_id:
        parts += (b',"span_id":"', span_id.encode(), b'"')
    parts += (
        b'},"id":',
        _DUMPS(event_id),
        b',"outcome":{"result":"unknown"},"schema":',
        _SCHEMA_JSON,
        b',"service":',
        _DUMPS(service),
        b',"targets":[],"tenant":',
        _DUMPS(tenant),
        b',"time":',
        str(time_ms).encode(),
    )
    if trace_id:
        parts += (b',"trace_id":"', trace_id.encode(), b'"')
    parts.append(b"}")
    return b"".join(parts)


_SCHEMA_JSON = orjson.dumps(SCHEMA)


def _severity(number: int) -> str:
    """``trace``, ``debug``, ``info``, ``warn``, ``error``, ``fatal`` (OTLP ranges of 4)."""
    return _SEVERITIES[(number + 3) // 4] if 0 < number <= 24 else "unspecified"


def _id(raw: bytes, size: int, name: str) -> str:
    """A trace or span id as hex ('' when absent); any other length is a rejected record."""
    if raw and len(raw) != size:
        raise MalformedError(f"{name}: expected {size} bytes or none, got {len(raw)}")
    return raw.hex() if raw else ""


def _attributes(pairs: Iterable[Any]) -> dict[str, Any]:
    """OTLP KeyValue pairs as a plain object (a repeated key: the last one wins)."""
    out = {}
    plain = _PLAIN_KINDS
    for kv in pairs:
        value = kv.value
        kind = value.WhichOneof("value")
        out[kv.key] = getattr(value, kind) if kind in plain else _value(value)
    return out


_PLAIN_KINDS = frozenset({"string_value", "int_value", "bool_value"})
"""AnyValue kinds kept as they are."""


def _value(value: Any) -> Any:
    """An AnyValue as plain JSON: scalars as they are, bytes as base64, non-finite doubles
    as strings, arrays and maps as lists and objects."""
    kind = value.WhichOneof("value")
    if kind in _PLAIN_KINDS:
        return getattr(value, kind)
    if kind == "double_value":
        d = value.double_value
        return d if math.isfinite(d) else str(d)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return None


def _limit_depth(value: Any, depth: int) -> Any:
    """``value`` (plain JSON, at ``depth`` in the event's ``details``) with every container
    that would nest past :data:`MAX_DETAILS_DEPTH` as its JSON text: no valid record is
    refused for nesting (``details.otlp`` keeps it exactly)."""
    if isinstance(value, dict):
        if depth >= MAX_DETAILS_DEPTH and value:
            return _JSON_DUMPS(value)
        return {k: _limit_depth(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if depth >= MAX_DETAILS_DEPTH and value:
            return _JSON_DUMPS(value)
        return [_limit_depth(v, depth + 1) for v in value]
    return value


def response_body(mapped: MappedLogs | None, encoding: str) -> bytes:
    """The ``ExportLogsServiceResponse``, in the request's encoding."""
    message = logs_service_pb2.ExportLogsServiceResponse()
    if mapped is not None and mapped.rejected:
        message.partial_success.rejected_log_records = mapped.rejected
        message.partial_success.error_message = mapped.partial_message()
    return _encode(message, encoding)


def status_body(http_status: int, message: str, encoding: str) -> bytes:
    """The ``google.rpc.Status`` body of an OTLP error answer, in the request's encoding."""
    status = status_pb2.Status(message=message)
    code = _RPC_CODES.get(http_status, 13 if http_status >= 500 else 0)  # 13: INTERNAL
    if code:
        status.code = code
    return _encode(status, encoding)


def _encode(message: Any, encoding: str) -> bytes:
    if encoding == JSON:
        return _JSON_DUMPS(json_format.MessageToDict(message)).encode()
    return message.SerializeToString()  # type: ignore[no-any-return]
