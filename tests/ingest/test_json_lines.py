"""POST /ingest/json-lines: one JSON object per line, as Fluent Bit, Vector and syslog-ng post
them; translog.event/v1 lines kept as sent, other objects wrapped; a bad line refuses it all."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.events.helpers import ClientFactory, EventsEnv, make_events, start_events
from translog.errors import TranslogError
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import parse_event
from translog.formats.json_lines import CONTENT_TYPES, parse_json_lines

URL = "/ingest/json-lines?tenant=acme&service=shipper"
# What each shipper's records look like on the wire (one line each).
FLUENT_BIT = {"date": 1718000000.123456, "log": "GET /login 401", "host": "web-1"}
VECTOR = {
    "message": "sudo: alice : TTY=pts/0 ; COMMAND=/bin/ls",
    "timestamp": "2024-06-10T06:13:20.5Z",
    "host": "bastion",
    "source_type": "file",
}
SYSLOG_NG = {"ISODATE": "2024-06-10T06:13:21+00:00", "HOST": "db-1", "MESSAGE": "ok"}


def _body(*values: object) -> bytes:
    return b"".join((v if isinstance(v, bytes) else json.dumps(v).encode()) + b"\n" for v in values)


async def _post(
    env: EventsEnv, body: bytes, content_type: str = "application/x-ndjson", **headers: str
) -> tuple[int, Any]:
    auth = env.__dict__.get("shipper") or env.__dict__.setdefault(
        "shipper", env.auth(scopes=("submit",))
    )
    resp = await env.client.post(
        URL, data=body, headers={**auth, "Content-Type": content_type, **headers}
    )
    return resp.status, await resp.json()


async def _event(env: EventsEnv, index: int) -> tuple[dict[str, Any], bytes]:
    resp = await env.client.get(f"/events/{index}", headers=env.auth("acme"))
    assert resp.status == 200, await resp.text()
    result = (await resp.json())["results"][0]
    return result["event"], base64.b64decode(result["payload"])


def test_wrapping_takes_time_and_host_and_keeps_the_object() -> None:
    body = _body(FLUENT_BIT, VECTOR, SYSLOG_NG, {"msg": "no time"})
    batch = parse_json_lines(body, tenant="acme", service="svc", max_entries=10, now_ms=42)
    events = [parse_event(p) for p in batch.payloads]
    assert [e["time"] for e in events] == [1718000000123, 1718000000500, 1718000001000, 42]
    assert [e["actor"] for e in events] == [
        {"type": "service", "id": "web-1"},
        {"type": "service", "id": "bastion"},
        {"type": "service", "id": "db-1"},
        {"type": "service", "id": "svc"},
    ]
    for obj, event in zip((FLUENT_BIT, VECTOR, SYSLOG_NG), events, strict=False):
        assert event["details"] == {"record": obj}
        assert event["action"] == "log.record" and event["outcome"] == {"result": "unknown"}
        assert event["tenant"] == "acme" and event["service"] == "svc"
    assert batch.keys is None  # wrapped objects carry no idempotency key
    deep: Any = "x"
    for _ in range(12):
        deep = {"a": deep}
    event = parse_event(
        parse_json_lines(_body(deep), tenant="t", service="s", max_entries=1).payloads[0]
    )
    assert json.loads(event["details"]["record_json"]) == deep


async def test_events_kept_objects_wrapped_durable_and_searchable(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start_events(aiohttp_client, self_audit=False)
    ours = make_events(2)
    for e in ours:
        e["tenant"] = "acme"
    # a translog event as a shipper re-serialises it: other key order, spaces
    sent_line = json.dumps(ours[0], indent=None, sort_keys=False).encode()
    body = _body(sent_line, FLUENT_BIT, b"", VECTOR, encode_event(ours[1]))
    status, answer = await _post(env, body)
    assert status == 200, answer
    assert answer["accepted"] == 4 and answer["indexes"] == [0, 1, 2, 3]
    assert env.log.size == 4
    event, payload = await _event(env, 0)
    assert payload == sent_line and event == ours[0]  # kept byte for byte
    event, _ = await _event(env, 1)
    assert event["details"]["record"] == FLUENT_BIT
    resp = await env.client.get(
        "/events/search",
        params={"tenant": "acme", "action": "log.record"},
        headers=env.auth("acme"),
    )
    assert sorted(r["index"] for r in (await resp.json())["results"]) == [1, 2]
    # a retry: translog events (their id is the key) are not added twice
    status, again = await _post(env, _body(encode_event(ours[1])))
    assert again["indexes"] == [3] and again["duplicates"] == 1
    assert env.log.size == 4
    metrics = await (await env.client.get("/metrics")).text()
    assert 'translog_source_entries_total{source="json-lines"} 5' in metrics


async def test_every_shipper_content_type_and_gzip(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client, self_audit=False)
    for i, content_type in enumerate(sorted(CONTENT_TYPES)):
        status, answer = await _post(env, _body({"n": i}), content_type)
        assert status == 200, (content_type, answer)
    status, answer = await _post(
        env,
        gzip.compress(_body(VECTOR, VECTOR)),
        "application/x-ndjson",
        **{"Content-Encoding": "gzip"},
    )
    assert status == 200 and answer["accepted"] == 2, answer
    status, answer = await _post(env, _body(VECTOR), "text/html")
    assert status == 415 and "json-lines" in answer["reason"]
    assert env.log.size == len(CONTENT_TYPES) + 2


async def test_a_bad_line_refuses_the_whole_request(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client, self_audit=False)
    good = make_events(1)[0]
    cases = [
        (_body(VECTOR, VECTOR, b"{not json"), "line 3: invalid JSON"),
        (_body(VECTOR, b"[1, 2]"), "line 2: expected a JSON object"),
        (_body(VECTOR, b"", b'"text"'), "line 3: expected a JSON object"),
        (_body({**good, "outcome": {"result": "maybe"}}), "line 1: event.outcome.result"),
        (_body({**good, "extra": 1}), "line 1: event.extra: unknown field"),
        (_body(VECTOR, b'{"a": 1, "a": 2}'), "line 2: invalid JSON: duplicate key"),
        (_body(VECTOR, b"\xff\xfe"), "line 2: not valid UTF-8"),
        (_body({"big": "x" * 70_000}), "line 1: the wrapped event is"),
        (b"\n\n", "no JSON lines"),
    ]
    for body, reason in cases:
        status, answer = await _post(env, body)
        assert status in (400, 413), answer
        assert reason in answer["reason"], answer
    assert env.log.size == 0  # nothing of any refused request was written
    resp = await env.client.post(URL, data=_body(VECTOR))
    assert resp.status == 401
    resp = await env.client.post(
        "/ingest/json-lines?tenant=no%20spaces",
        data=_body(VECTOR),
        headers={**env.auth(scopes=("submit",)), "Content-Type": "application/json"},
    )
    assert resp.status == 400 and "tenant" in (await resp.json())["reason"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(max_size=60)
        | st.sampled_from([json.dumps(VECTOR).encode(), encode_event(make_events(1)[0])])
        | st.builds(
            lambda b, n: b[:n], st.just(encode_event(make_events(1)[0])), st.integers(0, 400)
        ),
        max_size=6,
    )
)
def test_fuzz_json_lines_parser(lines: list[bytes]) -> None:
    try:
        batch = parse_json_lines(b"\n".join(lines), tenant="t", service="s", max_entries=4)
    except TranslogError:
        return
    for payload in batch.payloads:
        parse_event(payload)  # every accepted line is a valid event
