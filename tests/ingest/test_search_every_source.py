"""``/events/search`` finds the events of every ingest source (issue 16, item 5).

One log with events on and the syslog listener: an OTLP export, a Kubernetes audit
EventList, JSON lines and syslog messages over TLS, then one search per source by its
service; each finds exactly what that source wrote, and every result carries its proof.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.events.helpers import ClientFactory
from tests.ingest.syslog_helpers import (
    client_context,
    listener_port,
    make_certs,
    message,
    send,
    syslog_config,
)
from translog.core.signing import NoteSigner
from translog.http.app import make_app
from translog.http.keys import LOG, TOKENS
from translog.storage.memory import MemoryStorage

K8S = Path(__file__).resolve().parent / "k8s-audit" / "eventlist-mixed.json"


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_body(n: int) -> bytes:
    records = [
        LogRecord(
            time_unix_nano=1_765_000_000_000_000_000 + i,
            severity_number=9,
            body=AnyValue(string_value=f"checkout {i}"),
            attributes=[_kv("translog.tenant", "acme")],
        )
        for i in range(n)
    ]
    resource = Resource(attributes=[_kv("service.name", "checkout")])
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    ).SerializeToString()


async def test_search_finds_the_events_of_every_source(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    config = syslog_config(certs)
    app = make_app(config, storage=MemoryStorage(), signer=NoteSigner.generate(config.log.origin))
    client = await aiohttp_client(app)
    tokens = app[TOKENS]
    submit = {"Authorization": "Bearer " + tokens.create("ingest", ("submit",))}
    read = {"Authorization": "Bearer " + tokens.create("auditor", ("read",), tenants=("acme",))}
    written: dict[str, set[int]] = {}

    async def post(path: str, body: bytes, content_type: str) -> Any:
        headers = {**submit, "Content-Type": content_type}
        resp = await client.post(path, data=body, headers=headers)
        assert resp.status == 200, await resp.text()
        return await resp.read()

    await post("/v1/logs", otlp_body(3), "application/x-protobuf")
    written["checkout"] = {0, 1, 2}
    k8s = json.loads(
        await post("/ingest/k8s-audit?tenant=acme", K8S.read_bytes(), "application/json")
    )
    written["kube-apiserver"] = set(k8s["indexes"])
    lines = b"\n".join(json.dumps({"msg": f"m{i}"}).encode() for i in range(2))
    jl = json.loads(await post("/ingest/json-lines?tenant=acme", lines, "application/x-ndjson"))
    written["json-lines"] = set(jl["indexes"])
    before = app[LOG].size
    await send(
        listener_port(app), client_context(certs), [message(i, tag="sshd") for i in range(4)]
    )
    deadline = asyncio.get_running_loop().time() + 10
    while app[LOG].size < before + 4:
        assert asyncio.get_running_loop().time() < deadline, app[LOG].size
        await asyncio.sleep(0.02)
    written["sshd"] = set(range(before, before + 4))
    resp = await client.get("/events/search", params={"tenant": "acme", "limit": 100}, headers=read)
    assert resp.status == 200, await resp.text()
    results = {r["index"]: r for r in (await resp.json())["results"]}
    assert all(r["inclusion_proof"] for r in results.values())
    for service, indexes in written.items():
        assert indexes <= set(results), service  # every event of this source is found
        for i in indexes:
            event = json.loads(base64.b64decode(results[i]["payload"]))
            assert event["service"] == service and event["tenant"] == "acme", (service, i)
    assert set(results) == set().union(*written.values())  # and nothing else
