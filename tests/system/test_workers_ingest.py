"""``translog serve --workers 2``: ingest requests are parsed and mapped in the workers.

The OTLP, Kubernetes audit and JSON-lines handlers are the same code in both servers; in a
worker their submitter sends the mapped entries to the log process's ``Submissions.durable``
(a ``durable`` message), never the HTTP request itself. So the log process's app sees none
of these requests (``translog_proxied_requests_total``), yet every entry is in the tree, a
retried webhook batch adds nothing, and the sources are counted by name.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from tests.system.test_serve import ORIGIN, Log, Server, cli
from tests.system.test_workers import auth, by_label, proxied, served

pytestmark = pytest.mark.system
__all__ = ["served"]  # the fixture: one two-worker server per test

K8S = Path(__file__).resolve().parent.parent / "ingest" / "k8s-audit" / "eventlist-mixed.json"


def otlp_request(n: int) -> bytes:
    records = [
        LogRecord(
            time_unix_nano=1_765_000_000_000_000_000 + i,
            severity_text="INFO",
            severity_number=9,
            body=AnyValue(string_value=f"user logged in {i}"),
        )
        for i in range(n)
    ]
    resource = Resource(
        attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))]
    )
    message = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[ScopeLogs(log_records=records)])]
    )
    return message.SerializeToString()


async def test_ingest_is_mapped_in_the_workers_and_durable_in_the_log_process(
    served: tuple[Server, aiohttp.ClientSession],
) -> None:
    server, session = served
    before = await proxied(session, server)
    events = json.loads(K8S.read_text())
    body = K8S.read_bytes()
    headers = auth(server, **{"Content-Type": "application/json"})
    answers = []
    for _ in range(2):  # the webhook retries the batch: nothing new
        async with session.post(f"{server.url}/ingest/k8s-audit", data=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            answers.append(json.loads(await r.read()))
    n = len(events["items"])
    assert answers[0]["accepted"] == n and answers[0]["duplicates"] == 0
    assert answers[1] == {**answers[0], "duplicates": n}
    lines = b"\n".join(json.dumps({"msg": f"line {i}", "host": "h1"}).encode() for i in range(5))
    headers = auth(server, **{"Content-Type": "application/x-ndjson"})
    async with session.post(f"{server.url}/ingest/json-lines", data=lines, headers=headers) as r:
        assert r.status == 200, await r.text()
        jl = json.loads(await r.read())
    assert jl["accepted"] == 5 and len(set(jl["indexes"])) == 5
    headers = auth(server, **{"Content-Type": "application/x-protobuf"})
    async with session.post(f"{server.url}/v1/logs", data=otlp_request(7), headers=headers) as r:
        assert r.status == 200, await r.text()
        answer = ExportLogsServiceResponse.FromString(await r.read())
    assert answer.partial_success.rejected_log_records == 0
    indexes = set(answers[0]["indexes"]) | set(jl["indexes"])
    assert len(indexes) == n + 5
    deadline = asyncio.get_running_loop().time() + 20
    while True:  # the next published checkpoint covers every entry acknowledged above
        async with session.get(f"{server.url}/checkpoint") as r:
            size = int((await r.text()).splitlines()[1])
        if size >= max(indexes) + 1:
            break
        assert asyncio.get_running_loop().time() < deadline, size
        await asyncio.sleep(0.1)
    counts = await by_label(session, server, "translog_source_entries_total", "source")
    assert counts.get("k8s-audit") == 2 * n  # acknowledged twice, stored once
    assert counts.get("json-lines") == 5
    assert counts.get("otlp") == 7
    after = await proxied(session, server)
    for route in ("/ingest/k8s-audit", "/ingest/json-lines", "/v1/logs"):
        assert after.get(route, 0) == before.get(route, 0), route  # never reached the log process


async def test_otlp_request_key_in_the_workers(tmp_path: Path) -> None:
    """OTLP in a worker: the leaves are built there (a ``prepared`` message) and the request's
    one key is checked in the log process. The same body posted four times, three of them at
    once, makes its entries once, in order and contiguous; another body makes its own; a
    rate-limited token goes the ``durable`` way and the result is the same; fsck passes."""
    data = tmp_path / "data"
    vkey = cli("init", "--data", str(data), "--origin", ORIGIN).stdout.strip().splitlines()[-1]
    create = ["token", "create", "--data", str(data), "--scope", "submit", "--scope", "read"]
    token = cli(*create, "--name", "otlp").stdout.strip()
    limited = cli(*create, "--name", "limited", "--rate", "100000").stdout.strip()
    server = Server(Log(data, vkey, token), tmp_path, "otlp", workers=2)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            size0 = await _published_size(session, server, 0)
            a, b, c = otlp_request(9), otlp_request(4), otlp_request(5)  # c: rate-limited

            async def post(body: bytes, bearer: str) -> None:
                headers = {"Authorization": f"Bearer {bearer}"}
                headers["Content-Type"] = "application/x-protobuf"
                async with session.post(f"{server.url}/v1/logs", data=body, headers=headers) as r:
                    assert r.status == 200, await r.text()
                    answer = ExportLogsServiceResponse.FromString(await r.read())
                    assert answer.partial_success.rejected_log_records == 0

            await asyncio.gather(post(a, token), post(a, token), post(a, token), post(b, token))
            await post(a, token)
            await post(c, limited)
            await post(c, limited)
            size = await _published_size(session, server, size0 + 9 + 4 + 5)
            assert size == size0 + 9 + 4 + 5, "a retried OTLP request made entries again"
            ids = []
            headers = {"Authorization": f"Bearer {token}"}
            for i in range(size0, size):
                async with session.get(f"{server.url}/entries/{i}/payload", headers=headers) as r:
                    assert r.status == 200, await r.text()
                    ids.append(json.loads(await r.read())["id"])
            runs: dict[str, list[int]] = {}
            for event_id in ids:
                key, n = event_id.rsplit("-", 1)
                runs.setdefault(key, []).append(int(n))
            assert sorted(map(len, runs.values())) == [4, 5, 9]
            assert all(n == list(range(len(n))) for n in runs.values()), runs  # in order
            assert len(ids) == sum(len(r) for r in runs.values())  # each run contiguous
            keys = [event_id.rsplit("-", 1)[0] for event_id in ids]
            assert keys == sorted(keys, key=keys.index)
            dups = await by_label(session, server, "translog_source_entries_total", "source")
            assert dups.get("otlp") == 4 * 9 + 4 + 2 * 5  # acknowledged, duplicates included
        assert server.stop(signal.SIGTERM) == 0
    finally:
        server.kill_if_running()
    fsck = cli("fsck", "--data", str(data), "-q", check=False)
    assert fsck.returncode == 0, fsck.stderr


async def _published_size(session: aiohttp.ClientSession, server: Server, at_least: int) -> int:
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        async with session.get(f"{server.url}/checkpoint") as r:
            size = int((await r.text()).splitlines()[1])
        if size >= at_least:
            await asyncio.sleep(0.3)  # and nothing more comes
            async with session.get(f"{server.url}/checkpoint") as r:
                return int((await r.text()).splitlines()[1])
        assert asyncio.get_running_loop().time() < deadline, size
        await asyncio.sleep(0.1)
