"""Hypothesis fuzzing of the OTLP logs parser and mapping (translog/formats/otlp.py).

The properties: a hostile body (mutated protobuf or OTLP/JSON, or arbitrary bytes) parses or
raises a ``TranslogError`` (a 4xx), never anything else; and every request that parses maps
to events that are all valid ``translog.event/v1`` payloads within the size limit, one per
record or one rejection per record, whatever the records hold (nesting, control characters,
odd id lengths, huge strings).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from tests.reliability.test_fuzz_parsers import mutated, rejects_cleanly
from translog.errors import MalformedError
from translog.formats import otlp
from translog.formats.event_schema import MAX_EVENT_BYTES, parse_event

_TEXT = st.text(max_size=40)
_SCALAR = st.one_of(
    st.builds(lambda s: common_pb2.AnyValue(string_value=s), _TEXT),
    st.builds(lambda i: common_pb2.AnyValue(int_value=i), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.builds(lambda b: common_pb2.AnyValue(bool_value=b), st.booleans()),
    st.builds(
        lambda d: common_pb2.AnyValue(double_value=d),
        st.one_of(st.floats(allow_nan=False), st.just(float("nan"))),  # NaN payloads: not JSON
    ),
    st.builds(lambda b: common_pb2.AnyValue(bytes_value=b), st.binary(max_size=20)),
    st.just(common_pb2.AnyValue()),
)


def _array(values: list[Any]) -> Any:
    return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=values))


def _kvlist(pairs: list[tuple[str, Any]]) -> Any:
    kvs = [common_pb2.KeyValue(key=k, value=v) for k, v in pairs]
    return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=kvs))


ANY_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(
        st.builds(_array, st.lists(inner, max_size=3)),
        st.builds(_kvlist, st.lists(st.tuples(_TEXT, inner), max_size=3)),
    ),
    max_leaves=30,
)
ATTRIBUTES = st.lists(
    st.builds(
        lambda k, v: common_pb2.KeyValue(key=k, value=v),
        st.one_of(
            _TEXT, st.sampled_from(["service.name", "host.name", "enduser.id", "translog.tenant"])
        ),
        ANY_VALUE,
    ),
    max_size=4,
)


def _log_record(
    t: int, o: int, sev: int, text: str, body: Any, attrs: Any, trace: bytes, span: bytes, name: str
) -> Any:
    return logs_pb2.LogRecord(
        time_unix_nano=t,
        observed_time_unix_nano=o,
        severity_number=sev,
        severity_text=text,
        body=body,
        attributes=attrs,
        trace_id=trace,
        span_id=span,
        event_name=name,
    )


RECORD = st.builds(
    _log_record,
    st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 30),
    _TEXT,
    ANY_VALUE,
    ATTRIBUTES,
    st.one_of(st.just(b""), st.binary(min_size=16, max_size=16), st.binary(max_size=20)),
    st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=10)),
    _TEXT,
)
REQUEST = st.builds(
    lambda resources: logs_service_pb2.ExportLogsServiceRequest(resource_logs=resources),
    st.lists(
        st.builds(
            lambda attrs, records, url: logs_pb2.ResourceLogs(
                resource={"attributes": attrs},
                scope_logs=[logs_pb2.ScopeLogs(log_records=records, schema_url=url)],
            ),
            ATTRIBUTES,
            st.lists(RECORD, max_size=4),
            _TEXT,
        ),
        max_size=3,
    ),
)


def _check_mapping(message: Any) -> None:
    mapped = otlp.map_request(
        message, b"\x01" * 32, received_ms=1_790_000_000_000, max_payload_bytes=1 << 20
    )
    assert mapped.rejected + len(mapped.batch) == otlp.count_records(message)
    assert len(mapped.errors) == min(mapped.rejected, otlp.MAX_MESSAGES)
    # one key for the request, none per entry; every event id is the key and a record number
    assert mapped.batch.keys is None
    assert mapped.request_key == "otlp-" + "01" * 16
    ids = []
    for payload in mapped.batch.payloads:
        assert len(payload) <= MAX_EVENT_BYTES
        event = parse_event(payload)  # raises if the mapping made an invalid event
        ids.append(event["id"])
        assert event["id"].startswith(mapped.request_key + "-")
        # the original record survives, exactly, in details.otlp
        original = logs_service_pb2.ExportLogsServiceRequest.FromString(
            base64.b64decode(event["details"]["otlp"])
        )
        assert otlp.count_records(original) == 1
        kept = original.resource_logs[0].scope_logs[0].log_records[0]
        assert kept in [
            rec for rl in message.resource_logs for sl in rl.scope_logs for rec in sl.log_records
        ]
    assert len(set(ids)) == len(ids)
    # the bytes written piece by piece are the reference encoder's, record for record
    reference = otlp.map_request(
        message,
        b"\x01" * 32,
        received_ms=1_790_000_000_000,
        max_payload_bytes=1 << 20,
        reference=True,
    )
    assert reference.batch.payloads == mapped.batch.payloads
    assert reference.errors == mapped.errors


_FLAT_SCALAR = st.one_of(
    st.builds(lambda s: common_pb2.AnyValue(string_value=s), st.text(max_size=60)),
    st.builds(lambda i: common_pb2.AnyValue(int_value=i), st.integers(-(1 << 63), (1 << 63) - 1)),
    st.builds(lambda b: common_pb2.AnyValue(bool_value=b), st.booleans()),
    st.just(common_pb2.AnyValue()),
)
FLAT_RECORD = st.builds(
    _log_record,
    st.integers(0, (1 << 64) - 1),
    st.just(0),
    st.integers(-(1 << 31), (1 << 31) - 1),
    st.text(max_size=12),
    _FLAT_SCALAR,
    st.lists(
        st.builds(
            lambda k, v: common_pb2.KeyValue(key=k, value=v),
            st.one_of(st.text(max_size=12), st.sampled_from(["enduser.id", "translog.tenant"])),
            _FLAT_SCALAR,
        ),
        max_size=5,
    ),
    st.one_of(st.just(b""), st.binary(min_size=16, max_size=16)),
    st.one_of(st.just(b""), st.binary(min_size=8, max_size=8)),
    st.text(max_size=8),
)
FLAT_REQUEST = st.builds(
    lambda service, host, scope, records: logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource={
                    "attributes": [
                        common_pb2.KeyValue(key="service.name", value=service),
                        common_pb2.KeyValue(key="host.name", value=host),
                    ]
                },
                scope_logs=[logs_pb2.ScopeLogs(scope={"name": scope}, log_records=records)],
            )
        ]
    ),
    _FLAT_SCALAR,
    _FLAT_SCALAR,
    st.text(max_size=12),
    st.lists(FLAT_RECORD, min_size=1, max_size=6),
)


@given(FLAT_REQUEST)
def test_flat_records_are_written_as_the_reference_encoder_writes_them(message: Any) -> None:
    """Records whose body, attributes and host are scalars (the common case) take the
    piece-by-piece encoder: byte for byte the reference (event dict + encode_event), with
    non-ASCII and control characters, 64-bit integers, every severity number and no host."""
    _check_mapping(message)


@given(REQUEST)
def test_every_parsed_request_maps_to_valid_events(message: Any) -> None:
    _check_mapping(message)
    # and it round-trips through both encodings
    body = message.SerializeToString()
    body_det = message.SerializeToString(deterministic=True)  # NaN != NaN: compare bytes
    again = otlp.parse_request(body, otlp.PROTOBUF)
    assert again.SerializeToString(deterministic=True) == body_det
    document = json_format.MessageToDict(message)
    for rl in document.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for rec in sl.get("logRecords", []):
                for name in ("traceId", "spanId"):
                    if name in rec:
                        rec[name] = base64.b64decode(rec[name]).hex()
    again = otlp.parse_request(json.dumps(document).encode(), otlp.JSON)
    assert again.SerializeToString(deterministic=True) == body_det


SEED_REQUEST = logs_service_pb2.ExportLogsServiceRequest(
    resource_logs=[
        logs_pb2.ResourceLogs(
            resource={
                "attributes": [
                    common_pb2.KeyValue(
                        key="service.name", value=common_pb2.AnyValue(string_value="svc")
                    )
                ]
            },
            scope_logs=[
                logs_pb2.ScopeLogs(
                    scope={"name": "s"},
                    log_records=[
                        logs_pb2.LogRecord(
                            time_unix_nano=1,
                            severity_number=9,
                            body=_kvlist([("a", _array([common_pb2.AnyValue(int_value=1)]))]),
                            trace_id=b"\x01" * 16,
                            span_id=b"\x02" * 8,
                        )
                    ],
                )
            ],
        )
    ]
)
SEED_PROTOBUF = SEED_REQUEST.SerializeToString()
SEED_JSON = (
    json.dumps(json_format.MessageToDict(SEED_REQUEST))
    .encode()
    .replace(b'"AQEBAQEBAQEBAQEBAQEBAQ=="', b'"' + (b"01" * 16) + b'"')
    .replace(b'"AgICAgICAgI="', b'"' + (b"02" * 8) + b'"')
)


def _parse_and_map(body: bytes, encoding: str) -> None:
    message = otlp.parse_request(body, encoding)
    _check_mapping(message)


@given(mutated(SEED_PROTOBUF))
def test_protobuf_bodies_parse_or_are_refused(body: bytes) -> None:
    rejects_cleanly(lambda: _parse_and_map(body, otlp.PROTOBUF))


@given(mutated(SEED_JSON))
def test_otlp_json_bodies_parse_or_are_refused(body: bytes) -> None:
    rejects_cleanly(lambda: _parse_and_map(body, otlp.JSON))


def test_seeds_are_valid() -> None:
    _parse_and_map(SEED_PROTOBUF, otlp.PROTOBUF)
    assert otlp.parse_request(SEED_JSON, otlp.JSON) == SEED_REQUEST


def test_deep_nesting_is_refused_or_kept_as_text() -> None:
    value = common_pb2.AnyValue(string_value="leaf")
    for _ in range(20):
        value = _kvlist([("k", value)])
    message = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                scope_logs=[logs_pb2.ScopeLogs(log_records=[logs_pb2.LogRecord(body=value)])]
            )
        ]
    )
    mapped = otlp.map_request(message, b"\0" * 32, received_ms=5, max_payload_bytes=1 << 20)
    assert mapped.rejected == 0
    event = parse_event(mapped.batch.payloads[0])
    assert event["time"] == 5  # neither time given: the receive time
    assert event["action"] == "log.unspecified"
    body = event["details"]["body"]
    for _ in range(6):
        body = body["k"]
    assert isinstance(body, str) and body.count('{"k"') == 14
    # far deeper than protobuf's own recursion limit (built by hand: the classes refuse to)
    raw = common_pb2.AnyValue(string_value="leaf").SerializeToString()
    for _ in range(300):
        kv = b"\x0a\x01k" + _field(2, raw)  # KeyValue{key, value}
        raw = _field(6, _field(1, kv))  # AnyValue{kvlist_value: KeyValueList{values}}
    body = _field(1, _field(2, _field(2, _field(5, raw))))  # request > resource > scope > record
    try:
        otlp.parse_request(body, otlp.PROTOBUF)
    except MalformedError as e:
        assert "not an OTLP ExportLogsServiceRequest protobuf" in str(e)
    else:
        raise AssertionError("a 300-deep body was accepted")


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(data)) + data


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)
