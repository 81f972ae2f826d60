"""POST /ingest/k8s-audit: audit.k8s.io/v1 EventLists (fixtures in k8s-audit/, upstream shape)
mapped onto translog.event/v1, idempotent per auditID and stage, durable before the 200."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.events.helpers import ClientFactory, EventsEnv, start_events
from translog.config import Config, EventsSection, LogSection, PublisherSection, ServerSection
from translog.core.signing import NoteSigner
from translog.errors import TranslogError
from translog.formats.event_schema import parse_event
from translog.formats.ingest_common import encode_json
from translog.formats.k8s_audit import parse_event_list
from translog.http.app import make_app
from translog.http.keys import LOG, TOKENS
from translog.storage.memory import MemoryStorage

HERE = Path(__file__).parent / "k8s-audit"
MIXED = (HERE / "eventlist-mixed.json").read_bytes()
DEEP = (HERE / "eventlist-deep.json").read_bytes()
JSON = {"Content-Type": "application/json"}
URL = "/ingest/k8s-audit?tenant=acme"


def _items(body: bytes) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(body)["items"]
    return items


async def _post(env: EventsEnv, body: bytes, url: str = URL) -> Any:
    """POST as the API server does: always with the one token of its webhook kubeconfig
    (idempotency keys are scoped by token)."""
    auth = env.__dict__.get("webhook") or env.__dict__.setdefault(
        "webhook", env.auth(scopes=("submit",))
    )
    resp = await env.client.post(url, data=body, headers={**auth, **JSON})
    return resp.status, await resp.json()


async def _event(env: EventsEnv, index: int) -> dict[str, Any]:
    resp = await env.client.get(f"/events/{index}", headers=env.auth("acme"))
    assert resp.status == 200, await resp.text()
    event: dict[str, Any] = (await resp.json())["results"][0]["event"]
    return event


def _original(event: dict[str, Any]) -> Any:
    details = event["details"]
    if "k8s_audit_json" in details:
        return json.loads(details["k8s_audit_json"])
    return details["k8s_audit"]


def test_mapping_of_each_upstream_event() -> None:
    batch = parse_event_list(MIXED, tenant="acme", service="kube-apiserver", max_entries=100)
    events = [parse_event(p) for p in batch.payloads]
    items = _items(MIXED)
    assert batch.labels == [f"items[{i}]" for i in range(len(items))]
    for item, event, key in zip(items, events, batch.keys or [], strict=True):
        assert _original(event) == item  # the Event, unchanged
        assert key == f"k8s-audit:{item['auditID']}:{item['stage']}"
        assert event["id"] == f"{item['auditID']}/{item['stage']}"
        assert event["request_id"] == item["auditID"]
        assert event["tenant"] == "acme" and event["service"] == "kube-apiserver"
        assert event["actor"]["id"] == item["user"]["username"]
    # managedFields nest deeper than details allow: that Event is kept as its JSON text
    assert "k8s_audit" in events[0]["details"] and "k8s_audit_json" in events[1]["details"]
    listing, secret, received, deleted, forbidden, healthz, exec_, binding = events
    assert listing["action"] == "k8s.pods.list" and listing["category"] == "data_access"
    assert listing["time"] == 1710148442422  # stageTimestamp, in ms
    assert listing["source"] == {
        "ip": "172.18.0.1",
        "user_agent": "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819",
    }
    assert listing["targets"] == [{"type": "k8s_namespace", "id": "default"}]
    assert listing["outcome"] == {"result": "success"}
    assert secret["action"] == "k8s.secrets.create"
    assert secret["category"] == "api_activity"
    assert secret["targets"][0] == {
        "type": "k8s_object",
        "id": "secrets/payments/stripe-api-key",
        "name": "stripe-api-key",
    }
    assert secret["source"]["ip"] == "10.0.12.7"  # the first of sourceIPs
    assert received["outcome"] == {"result": "unknown"}  # no responseStatus yet
    assert received["id"] != deleted["id"] and deleted["action"] == "k8s.pods.delete"
    assert deleted["time"] == 1710148565561
    assert forbidden["actor"]["type"] == "service_account"
    assert forbidden["outcome"]["result"] == "failure"
    assert forbidden["outcome"]["reason"].startswith("forbidden")
    assert healthz["action"] == "k8s.nonresource.get" and healthz["actor"]["type"] == "system"
    assert exec_["action"] == "k8s.pods.exec.create"
    assert binding["category"] == "authorization"
    assert binding["targets"][0]["id"] == "rolebindings/payments/ledger-readers"


def test_failed_request_reason_and_deep_objects() -> None:
    items = _items(MIXED)
    item = copy.deepcopy(items[0])
    item["responseStatus"] = {"metadata": {}, "code": 404, "message": 'pods "x" not found'}
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [item]})
    event = parse_event(
        parse_event_list(body.encode(), tenant="t", service="s", max_entries=9).payloads[0]
    )
    assert event["outcome"] == {"result": "failure", "reason": 'HTTP 404: pods "x" not found'}
    deep = parse_event(parse_event_list(DEEP, tenant="t", service="s", max_entries=9).payloads[0])
    # nested deeper than details allow: kept whole, as its canonical JSON text
    assert json.loads(deep["details"]["k8s_audit_json"]) == _items(DEEP)[0]
    assert deep["action"] == "k8s.deployments.update"


def test_oversized_event_keeps_a_digest_of_what_it_drops() -> None:
    item = copy.deepcopy(_items(MIXED)[1])
    item["responseObject"]["data"] = {f"k{i}": "A" * 1000 for i in range(80)}
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [item]})
    batch = parse_event_list(body.encode(), tenant="t", service="s", max_entries=9)
    event = parse_event(batch.payloads[0])
    details = event["details"]
    assert details["k8s_audit_omitted"] == ["requestObject", "responseObject"]
    assert details["k8s_audit_sha256"] == hashlib.sha256(encode_json(item).encode()).hexdigest()
    kept = {k: v for k, v in item.items() if k not in ("requestObject", "responseObject")}
    assert details["k8s_audit"] == kept


async def test_webhook_batch_is_durable_searchable_and_retry_safe(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start_events(aiohttp_client, self_audit=False)
    status, first = await _post(env, MIXED)
    assert status == 200, first
    n = len(_items(MIXED))
    assert first["accepted"] == n and first["duplicates"] == 0
    assert sorted(first["indexes"]) == list(range(n))
    assert env.log.size == n  # durable in the tree when the 200 came
    event = await _event(env, first["indexes"][1])
    assert _original(event) == _items(MIXED)[1]
    resp = await env.client.get(
        "/events/search",
        params={"tenant": "acme", "action": "k8s.secrets.create"},
        headers=env.auth("acme"),
    )
    found = (await resp.json())["results"]
    assert [r["index"] for r in found] == [first["indexes"][1]]
    # The webhook retries the same EventList: the same entries answer, none is added.
    status, again = await _post(env, MIXED)
    assert status == 200
    assert again["indexes"] == first["indexes"] and again["duplicates"] == n
    assert env.log.size == n
    # A later batch holding one already-sent Event and one new one.
    items = _items(MIXED)
    extra = copy.deepcopy(items[0])
    extra["auditID"] = "11111111-2222-4333-8444-555555555555"
    body = json.dumps(
        {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [items[3], extra]}
    ).encode()
    status, mixed = await _post(env, body)
    assert mixed["indexes"] == [first["indexes"][3], n] and mixed["duplicates"] == 1
    assert env.log.size == n + 1
    metrics = await (await env.client.get("/metrics")).text()
    assert f'translog_source_entries_total{{source="k8s-audit"}} {2 * n + 2}' in metrics


async def test_bad_eventlists_are_refused_with_nothing_written(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start_events(aiohttp_client, self_audit=False)
    good = _items(MIXED)
    cases: list[tuple[bytes, int, str]] = [
        (b"{not json", 400, "invalid JSON"),
        (b"[]", 400, "EventList"),
        (json.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1"}).encode(), 400, "kind"),
        (
            json.dumps(
                {"kind": "EventList", "apiVersion": "audit.k8s.io/v1beta1", "items": []}
            ).encode(),
            400,
            "apiVersion",
        ),
        (
            json.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": [good[0], {**good[1], "auditID": None}],
                }
            ).encode(),
            400,
            "items[1].auditID: missing",
        ),
        (
            json.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": [good[0], {**good[2], "stage": "Done"}],
                }
            ).encode(),
            400,
            "items[1].stage",
        ),
        (
            json.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": [{**good[0], "stageTimestamp": "yesterday"}],
                }
            ).encode(),
            400,
            "items[0].stageTimestamp",
        ),
        (
            json.dumps(
                {
                    "kind": "EventList",
                    "apiVersion": "audit.k8s.io/v1",
                    "items": [{**good[0], "user": "root"}],
                }
            ).encode(),
            400,
            "items[0].user",
        ),
    ]
    for body, want, reason in cases:
        status, answer = await _post(env, body)
        assert status == want, (body[:80], answer)
        assert reason in answer["reason"], answer
    assert env.log.size == 0
    resp = await env.client.post(URL, data=MIXED, headers={"Content-Type": "application/json"})
    assert resp.status == 401
    resp = await env.client.post(URL, data=MIXED, headers={**env.auth("acme"), **JSON})
    assert resp.status == 403
    token = env.auth(scopes=("submit",))
    resp = await env.client.post(URL, data=MIXED, headers={**token, "Content-Type": "text/xml"})
    assert resp.status == 415
    resp = await env.client.post(URL + "&wait=0", data=MIXED, headers={**token, **JSON})
    assert resp.status == 400 and "wait" in (await resp.json())["reason"]
    assert env.log.size == 0


async def test_route_under_the_server_prefix(aiohttp_client: ClientFactory) -> None:
    config = Config(
        log=LogSection(origin="prefix.example/log"),
        server=ServerSection(prefix="/audit"),
        publisher=PublisherSection(interval_ms=60_000),
        events=EventsSection(enabled=False),
    )
    app = make_app(
        config, storage=MemoryStorage(), signer=NoteSigner.generate("prefix.example/log")
    )
    client = await aiohttp_client(app)
    token = app[TOKENS].create("k8s", ("submit",))
    resp = await client.post(
        "/audit/ingest/k8s-audit",
        data=MIXED,
        headers={"Authorization": f"Bearer {token}", **JSON},
    )
    assert resp.status == 200, await resp.text()
    assert app[LOG].size == len(_items(MIXED))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400) | st.builds(lambda s: MIXED[:s], st.integers(0, len(MIXED))))
def test_fuzz_event_list_parser(body: bytes) -> None:
    try:
        batch = parse_event_list(body, tenant="t", service="s", max_entries=50)
    except TranslogError:
        return
    for payload in batch.payloads:
        parse_event(payload)


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, len(_items(MIXED)) - 1),
    st.sampled_from(
        [
            "auditID",
            "stage",
            "verb",
            "user",
            "objectRef",
            "responseStatus",
            "stageTimestamp",
            "requestReceivedTimestamp",
            "sourceIPs",
            "userAgent",
            "annotations",
            "kind",
            "apiVersion",
            "requestObject",
        ]
    ),
    _JSONISH,
)
def test_fuzz_event_fields(i: int, name: str, value: object) -> None:
    item = copy.deepcopy(_items(MIXED)[i])
    item[name] = value
    body = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [item]})
    try:
        batch = parse_event_list(body.encode(), tenant="t", service="s", max_entries=5)
    except TranslogError:
        return
    parse_event(batch.payloads[0])  # anything accepted maps to a valid event
