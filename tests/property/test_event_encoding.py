"""encode_float_free_event (orjson) writes the bytes of encode_event (the canonical JSON) for
every value without a float, and the OTLP mapping uses it only for such events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from translog.formats import otlp
from translog.formats.event_builder import encode_event, encode_float_free_event

TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # any code point but a surrogate
"""Non-ASCII, control characters, quotes, backslashes, U+2028..."""
INTS = st.integers(-(2**63), 2**64 - 1) | st.integers()  # past 64 bits too
SCALARS = st.none() | st.booleans() | INTS | TEXT
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner), max_leaves=25
)


@given(st.dictionaries(TEXT, VALUES))
def test_float_free_values_encode_canonically(event: dict[str, Any]) -> None:
    assert encode_float_free_event(event) == encode_event(event)


@pytest.mark.parametrize(
    "event",
    [
        {"n": 2**64, "m": -(2**63) - 1},  # past what orjson takes
        {"d": {1: "x", 2: "y"}},  # keys that are not strings: json's str() of them
        {"ü": '\x00\x1f\x7f\u2028"\\/é😀', "a": [[], {}, [None, True, False]]},
    ],
)
def test_edge_values_encode_canonically(event: dict[str, Any]) -> None:
    assert encode_float_free_event(event) == encode_event(event)


def test_a_lone_surrogate_is_refused_as_before() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_event({"s": "\ud800"})
    with pytest.raises(UnicodeEncodeError):
        encode_float_free_event({"s": "\ud800"})


def _any(draw: st.DrawFn, depth: int = 0) -> common_pb2.AnyValue:
    kind = draw(
        st.sampled_from(["s", "i", "b", "d", "y", "a", "k", "none"][: 6 if depth > 2 else 8])
    )
    if kind == "s":
        return common_pb2.AnyValue(string_value=draw(TEXT))
    if kind == "i":
        return common_pb2.AnyValue(int_value=draw(st.integers(-(2**63), 2**63 - 1)))
    if kind == "b":
        return common_pb2.AnyValue(bool_value=draw(st.booleans()))
    if kind == "d":
        return common_pb2.AnyValue(
            double_value=draw(st.floats() | st.sampled_from([1e16, 1e-5, 1e-7]))
        )
    if kind == "y":
        return common_pb2.AnyValue(bytes_value=draw(st.binary(max_size=8)))
    if kind == "a":
        values = [_any(draw, depth + 1) for _ in range(draw(st.integers(0, 2)))]
        return common_pb2.AnyValue(array_value=common_pb2.ArrayValue(values=values))
    if kind == "k":
        pairs = [
            common_pb2.KeyValue(key=draw(TEXT), value=_any(draw, depth + 1))
            for _ in range(draw(st.integers(0, 2)))
        ]
        return common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=pairs))
    return common_pb2.AnyValue()


@st.composite
def requests(draw: st.DrawFn) -> logs_service_pb2.ExportLogsServiceRequest:
    def kv(key: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=_any(draw))

    resource = [common_pb2.KeyValue(key="service.name", value={"string_value": "svc"})]
    if draw(st.booleans()):
        resource.append(kv("host.name"))
    records = []
    for _ in range(draw(st.integers(1, 4))):
        record = logs_pb2.LogRecord(
            time_unix_nano=draw(st.integers(0, 2**63)), severity_number=draw(st.integers(0, 24))
        )
        if draw(st.booleans()):
            record.body.CopyFrom(_any(draw))
        record.attributes.extend(kv(draw(TEXT)) for _ in range(draw(st.integers(0, 3))))
        records.append(record)
    return logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource={"attributes": resource},
                scope_logs=[logs_pb2.ScopeLogs(scope={"name": "s"}, log_records=records)],
            )
        ]
    )


@given(requests())
def test_otlp_payloads_are_the_canonical_json_of_their_events(message: Any) -> None:
    # Whichever encoder the mapping picks for a record (orjson for flat, float-free events),
    # each payload is the canonical JSON of its event: decoding and re-encoding it with
    # encode_event gives the same bytes (a float written by orjson, 0.00001 for 1e-05, would not).
    mapped = otlp.map_request(message, b"\x01" * 32, received_ms=5, max_payload_bytes=1 << 20)
    assert len(mapped.batch.payloads) + mapped.rejected == otlp.count_records(message)
    for payload in mapped.batch.payloads:
        assert encode_event(json.loads(payload)) == payload


def test_otlp_floats_are_written_as_json_writes_them() -> None:
    value = common_pb2.AnyValue(double_value=1e-5)
    record = logs_pb2.LogRecord(body=value, attributes=[{"key": "x", "value": value}])
    message = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[{"scope_logs": [{"log_records": [record]}]}]
    )
    (payload,) = otlp.map_request(
        message, b"\x02" * 32, received_ms=5, max_payload_bytes=1 << 20
    ).batch.payloads
    assert b'"body":1e-05' in payload and b'"attributes":{"x":1e-05}' in payload
