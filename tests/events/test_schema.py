"""The translog.event/v1 schema: validation names the field, the JSON Schema agrees, builder."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import jsonschema
import pytest

from translog.errors import EventError, MalformedError
from translog.formats.event_builder import build_event, encode_event
from translog.formats.event_schema import (
    SCHEMA,
    Query,
    index_terms,
    parse_event,
    parse_time,
    validate_event,
)

VALID: dict[str, Any] = {
    "schema": SCHEMA,
    "id": "5b0c1c2e-0d7e-4b8a-9d7e-1f2a3b4c5d6e",
    "time": 1_790_000_000_000,
    "actor": {"type": "user", "id": "alice", "name": "Alice"},
    "action": "user.login",
    "category": "authentication",
    "targets": [{"type": "application", "id": "billing"}],
    "outcome": {"result": "failure", "reason": "bad password"},
    "source": {"ip": "2001:db8::1", "user_agent": "curl/8.5"},
    "request_id": "req-1",
    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    "tenant": "acme",
    "service": "sso",
    "details": {"mfa": False, "attempt": 3},
}


def _schema_validator() -> jsonschema.protocols.Validator:
    text = resources.files("translog.formats").joinpath("event-v1.schema.json").read_text()
    schema = json.loads(text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _with(path: str, value: Any) -> dict[str, Any]:
    """VALID with ``path`` (dotted; ``-`` deletes) set to ``value``."""
    event = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    obj: Any = event
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if value is _DELETE:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value
    return event


_DELETE = object()

BAD = [
    ("schema", "translog.event/v2", "event.schema"),
    ("schema", _DELETE, "event.schema"),
    ("id", "", "event.id"),
    ("id", "x" * 129, "event.id"),
    ("time", "2026-01-01", "event.time"),
    ("time", -1, "event.time"),
    ("time", True, "event.time"),
    ("actor", _DELETE, "event.actor"),
    ("actor.id", 7, "event.actor.id"),
    ("actor.type", "User", "event.actor.type"),
    ("actor.email", "a@b", "event.actor.email"),
    ("action", "login", "event.action"),
    ("action", "User.Login", "event.action"),
    ("category", "auth", "event.category"),
    ("targets", {"id": "x"}, "event.targets"),
    ("targets.0.id", _DELETE, "event.targets[0].id"),
    ("outcome.result", "ok", "event.outcome.result"),
    ("outcome", _DELETE, "event.outcome"),
    ("source.ip", "300.1.1.1", "event.source.ip"),
    ("source.port", 22, "event.source.port"),
    ("tenant", "a b", "event.tenant"),
    ("tenant", _DELETE, "event.tenant"),
    ("service", "", "event.service"),
    ("details", [1, 2], "event.details"),
    ("extra", 1, "event.extra"),
    ("request_id", "a\nb", "event.request_id"),
]


def test_valid_event_passes_both_validators() -> None:
    assert validate_event(VALID) is VALID
    _schema_validator().validate(VALID)
    minimal = {k: VALID[k] for k in ("schema", "id", "time", "actor", "action", "category")}
    minimal |= {"outcome": {"result": "success"}, "tenant": "t", "service": "s"}
    validate_event(minimal)
    _schema_validator().validate(minimal)


@pytest.mark.parametrize(("path", "value", "named"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_event_names_the_field_and_json_schema_agrees(
    path: str, value: Any, named: str
) -> None:
    event = _with(path, value) if path != "extra" else {**VALID, "extra": 1}
    with pytest.raises(EventError) as info:
        validate_event(event)
    assert str(info.value).startswith(named + ":"), str(info.value)
    assert isinstance(info.value, MalformedError)  # so HTTP answers 400
    assert not _schema_validator().is_valid(event), f"the JSON Schema accepts {path}={value!r}"


def test_details_depth_and_size_limits() -> None:
    deep: Any = {}
    node = deep
    for _ in range(9):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(EventError, match=r"event\.details"):
        validate_event({**VALID, "details": deep})
    big = encode_event({**VALID, "details": {"blob": "x" * 70_000}})
    with pytest.raises(EventError, match="exceeds"):
        parse_event(big)


def test_parse_event_rejects_non_json_duplicates_and_nan() -> None:
    with pytest.raises(EventError, match="not JSON"):
        parse_event(b"{")
    with pytest.raises(EventError, match="duplicate key"):
        parse_event(b'{"id": "a", "id": "b"}')
    with pytest.raises(EventError, match="not JSON"):
        parse_event(encode_event(VALID)[:-1] + b',"x":NaN}')
    with pytest.raises(EventError, match="not UTF-8"):
        parse_event(b"\xff")
    assert parse_event(encode_event(VALID)) == VALID


def test_builder_produces_valid_events_and_refuses_bad_ones() -> None:
    event = build_event(
        "user.login",
        actor=("user", "alice"),
        category="authentication",
        tenant="acme",
        service="sso",
        outcome="failure",
        reason="bad password",
        targets=[("application", "billing")],
        source_ip="192.0.2.1",
        details={"attempt": 2},
    )
    _schema_validator().validate(event)
    assert parse_event(encode_event(event)) == event
    with pytest.raises(EventError, match=r"event\.action"):
        build_event("login", actor=("user", "a"), category="system", tenant="t", service="s")


def test_index_terms_and_query_matching() -> None:
    terms = index_terms(VALID)
    assert ("actor", "acme", "alice") in terms and ("target", "acme", "billing") in terms
    assert ("tenant", "acme", "") in terms
    q = Query("acme", {"action": "user.login", "outcome": "failure"})
    assert q.matches(VALID)
    assert not Query("acme", {"outcome": "success"}).matches(VALID)
    assert not Query("other", {}).matches(VALID)
    assert Query("acme", {"target": "billing"}).matches(VALID)
    assert Query.from_json(q.to_json()) == q
    with pytest.raises(EventError, match="unknown query field"):
        Query("acme", {"colour": "red"})
    with pytest.raises(EventError, match="outcome"):
        Query("acme", {"outcome": "ok"})
    with pytest.raises(EventError, match="after"):
        Query("acme", {}, 10, 5)


def test_parse_time() -> None:
    assert parse_time("1000", "from") == 1000
    assert parse_time("1970-01-01T00:00:01Z", "from") == 1000
    with pytest.raises(EventError, match="time zone"):
        parse_time("2026-01-01T00:00:00", "to")
    with pytest.raises(EventError, match="to"):
        parse_time("yesterday", "to")
