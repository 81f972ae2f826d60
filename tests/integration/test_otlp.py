"""``POST /v1/logs`` against a real app, driven by the OpenTelemetry Python SDK's own OTLP/HTTP
exporter (``OTLPLogExporter``) and by hand-made requests for what an exporter never sends.

Every test reads the entries back from the tree and matches them to the records sent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource

from translog.config import Config, EventsSection, LogSection, PublisherSection, ServerSection
from translog.core.signing import NoteSigner
from translog.formats.event_schema import parse_event
from translog.http.app import make_app
from translog.http.keys import LOG, METRICS
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage

PROTOBUF = "application/x-protobuf"
TRACE = 0x5B8EFFF798038103D269B633813FC60C
SPAN = 0xEEE19B7EC3C1B174
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class Env:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    tokens: dict[str, str]
    prefix: str = ""

    @property
    def url(self) -> str:
        return str(self.client.make_url(f"{self.prefix}/v1/logs"))

    def auth(self, name: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    def events(self) -> list[dict[str, Any]]:
        storage = self.app[LOG].storage
        entries = storage.get_entries(0, storage.size())
        return [dict(parse_event(e.payload)) for e in entries if e.payload is not None]

    async def post(
        self, body: bytes, content_type: str = PROTOBUF, token: str | None = "alice", **h: str
    ) -> tuple[int, bytes, Any]:
        headers = {"Content-Type": content_type, **(self.auth(token) if token else {}), **h}
        resp = await self.client.post(f"{self.prefix}/v1/logs", data=body, headers=headers)
        return resp.status, await resp.read(), resp.headers


@pytest.fixture
def make_env(aiohttp_client: ClientFactory, signer: NoteSigner) -> Callable[..., Awaitable[Env]]:
    async def make(*, events: bool = False, rate: float = 0.0, **server: Any) -> Env:
        store = TokenStore()
        tokens = {
            "alice": store.create("alice", ("submit",)),
            "reader": store.create("reader", ("read",)),
            "tiny": store.create("tiny", ("submit",), rate_per_s=rate or 1.0),
        }
        config = Config(
            log=LogSection(origin=signer.name),
            publisher=PublisherSection(interval_ms=50),
            server=ServerSection(**server),
            events=EventsSection(enabled=events, self_audit=False),
        )
        app = make_app(config, storage=MemoryStorage(), signer=signer, tokens=store)
        client = await aiohttp_client(app)
        return Env(client, app, tokens, server.get("prefix", ""))

    return make


class Recording(LogRecordExporter):
    """The real OTLPLogExporter, remembering what each export() returned."""

    def __init__(self, inner: OTLPLogExporter) -> None:
        self.inner = inner
        self.results: list[LogRecordExportResult] = []
        self.lock = threading.Lock()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        result = self.inner.export(batch)
        with self.lock:
            self.results.append(result)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def emit(provider: LoggerProvider, n: int, start: int = 0) -> None:
    logger = provider.get_logger("billing.audit", "1.2.3")
    for i in range(start, start + n):
        logger.emit(
            LogRecord(
                timestamp=1_790_000_000_000_000_000 + i * 1_000_000,
                trace_id=TRACE,
                span_id=SPAN,
                severity_text="WARN",
                severity_number=SeverityNumber.WARN,
                body=f"refund {i} approved",
                attributes={"n": i, "enduser.id": f"user-{i % 7}", "ok": True},
            )
        )


def provider_for(exporter: LogRecordExporter) -> LoggerProvider:
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "billing", "host.name": "web-1"})
    )
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_export_batch_size=100, schedule_delay_millis=50)
    )
    return provider


class Keep(LogRecordExporter):
    """Keeps what the SDK hands its exporter, to export it by hand."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        self.records.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def captured(n: int) -> list[ReadableLogRecord]:
    """``n`` records as the SDK makes them (see :func:`emit`)."""
    keep = Keep()
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "billing", "host.name": "web-1"})
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(keep))
    emit(provider, n)
    return keep.records


def check_records(events: list[dict[str, Any]], numbers: range) -> None:
    """Exactly one event per record number, carrying what the record said."""
    by_n = {e["details"]["attributes"]["n"]: e for e in events}
    assert len(events) == len(by_n) == len(numbers), "a record is missing or duplicated"
    assert sorted(by_n) == list(numbers)
    for n, event in by_n.items():
        assert event["service"] == "billing"
        assert event["details"]["host"] == "web-1"
        assert event["time"] == 1_790_000_000_000 + n
        assert event["action"] == "log.warn"
        assert event["actor"] == {"type": "user", "id": f"user-{n % 7}"}
        assert event["trace_id"] == f"{TRACE:032x}"
        assert event["details"]["span_id"] == f"{SPAN:016x}"
        assert event["details"]["body"] == f"refund {n} approved"
        assert event["details"]["severity_text"] == "WARN"
        assert event["details"]["scope"] == "billing.audit"
        original = logs_service_pb2.ExportLogsServiceRequest.FromString(
            base64.b64decode(event["details"]["otlp"])
        )
        (rl,) = original.resource_logs
        (sl,) = rl.scope_logs
        (record,) = sl.log_records
        assert record.trace_id == TRACE.to_bytes(16, "big")
        assert record.body.string_value == f"refund {n} approved"
        assert record.time_unix_nano == 1_790_000_000_000_000_000 + n * 1_000_000
        assert sl.scope.version == "1.2.3"
        assert {kv.key: kv.value.string_value for kv in rl.resource.attributes}[
            "host.name"
        ] == "web-1"


async def test_sdk_exporter_every_record_in_the_tree(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(events=True)
    exporter = Recording(OTLPLogExporter(endpoint=env.url, headers=env.auth(), timeout=10))
    provider = provider_for(exporter)
    emit(provider, 250)
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    await asyncio.to_thread(provider.shutdown)
    assert exporter.results and all(r is LogRecordExportResult.SUCCESS for r in exporter.results)
    check_records(env.events(), range(250))
    text = env.app[METRICS].render()
    assert 'translog_source_entries_total{source="otlp"} 250' in text


async def test_gzip_and_prefix(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(prefix="/log1")
    exporter = OTLPLogExporter(endpoint=env.url, headers=env.auth(), compression=Compression.Gzip)
    provider = provider_for(exporter)
    emit(provider, 30)
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    await asyncio.to_thread(provider.shutdown)
    check_records(env.events(), range(30))


async def test_exporter_retries_through_pushback_without_duplicates(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    """A token limited to 40 entries/s: the second batch of 40 gets a 429 with Retry-After,
    the exporter waits and retries, and every record is in the tree exactly once."""
    env = await make_env(rate=40.0)
    exporter = OTLPLogExporter(endpoint=env.url, headers=env.auth("tiny"), timeout=15)
    records = captured(80)
    first = await asyncio.to_thread(exporter.export, records[:40])
    assert first is LogRecordExportResult.SUCCESS
    second = await asyncio.to_thread(exporter.export, records[40:])
    assert second is LogRecordExportResult.SUCCESS
    text = env.app[METRICS].render()
    assert 'translog_submissions_rejected_total{reason="rate_limited"}' in text
    check_records(env.events(), range(80))


async def test_retried_request_is_not_duplicated(make_env: Callable[..., Awaitable[Env]]) -> None:
    """The same body again (an exporter retrying after a lost 200) answers 200, adds nothing."""
    env = await make_env()
    body = request_body(10)
    for _ in range(2):
        status, raw, _ = await env.post(body)
        assert status == 200
        assert (
            logs_service_pb2.ExportLogsServiceResponse.FromString(
                raw
            ).partial_success.rejected_log_records
            == 0
        )
    assert len(env.events()) == 10
    assert "translog_duplicates_total 10" in env.app[METRICS].render()


async def test_concurrent_retries_make_one_set_of_entries(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    """The same body three times at once (an exporter whose first try timed out) and once
    more after: the request's one key is in flight, then stored; the records are in the tree
    once, in order, and the other three answers count as duplicates."""
    env = await make_env()
    body = request_body(6)
    answers = await asyncio.gather(*(env.post(body) for _ in range(3)))
    assert [status for status, _, _ in answers] == [200, 200, 200]
    status, _, _ = await env.post(body)
    assert status == 200
    events = env.events()
    assert len(events) == 6
    assert [e["id"].rsplit("-", 1)[1] for e in events] == [str(i) for i in range(6)]
    assert "translog_duplicates_total 18" in env.app[METRICS].render()


def request_body(n: int, *, trace: bytes | None = None) -> bytes:
    """A protobuf ExportLogsServiceRequest of ``n`` records, encoded by the SDK's encoder."""
    message = encode_logs(captured(n))
    if trace is not None:
        message.resource_logs[0].scope_logs[0].log_records[0].trace_id = trace
    return message.SerializeToString()  # type: ignore[no-any-return]


def to_otlp_json(body: bytes) -> bytes:
    """The OTLP/JSON encoding of a protobuf request (hex ids, lowerCamelCase)."""
    document = json_format.MessageToDict(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
    for rl in document["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for rec in sl["logRecords"]:
                for name in ("traceId", "spanId"):
                    if name in rec:
                        rec[name] = base64.b64decode(rec[name]).hex()
    return json.dumps(document).encode()


async def test_otlp_json(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(events=True)
    status, raw, headers = await env.post(to_otlp_json(request_body(12)), "application/json")
    assert status == 200, raw
    assert headers["Content-Type"] == "application/json"
    assert json.loads(raw) == {}
    check_records(env.events(), range(12))


async def test_partial_success_keeps_the_valid_records(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(events=True)
    status, raw, _ = await env.post(request_body(5, trace=b"\x01\x02\x03"))
    assert status == 200
    partial = logs_service_pb2.ExportLogsServiceResponse.FromString(raw).partial_success
    assert partial.rejected_log_records == 1
    assert "logRecords[0]: traceId: expected 16 bytes or none, got 3" in partial.error_message
    check_records(env.events(), range(1, 5))
    # the same in OTLP/JSON: the answer is JSON, int64 as a string
    env2 = await make_env()
    status, raw, _ = await env2.post(
        to_otlp_json(request_body(3, trace=b"\x09" * 3)), "application/json"
    )
    assert status == 200
    answer = json.loads(raw)
    assert answer["partialSuccess"]["rejectedLogRecords"] == "1"
    assert len(env2.events()) == 2


def status_of(raw: bytes, content_type: str = PROTOBUF) -> Any:
    if content_type == PROTOBUF:
        return status_pb2.Status.FromString(raw)
    return json_format.Parse(raw, status_pb2.Status())


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"\x0a\xff\xff", PROTOBUF, 400, "not an OTLP ExportLogsServiceRequest protobuf"),
        (b"{not json", "application/json", 400, "not JSON"),
        (b'{"resourceLogs": 7}', "application/json", 400, "not an OTLP/JSON"),
        (
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}',
            "application/json",
            400,
            "traceId: expected a hex string",
        ),
        (b"hello", "text/plain", 415, "takes application/x-protobuf or application/json"),
    ],
)
async def test_malformed_requests(
    make_env: Callable[..., Awaitable[Env]],
    body: bytes,
    content_type: str,
    status: int,
    reason: str,
) -> None:
    env = await make_env()
    got, raw, headers = await env.post(body, content_type)
    assert got == status
    answer_type = "application/json" if content_type == "application/json" else PROTOBUF
    assert headers["Content-Type"] == answer_type
    assert reason in status_of(raw, answer_type).message
    assert env.events() == []


async def test_auth(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env()
    got, raw, headers = await env.post(request_body(1), token=None)
    assert got == 401 and "WWW-Authenticate" in headers
    assert status_of(raw).code == 16
    got, raw, _ = await env.post(request_body(1), token="reader")
    assert got == 403 and "submit" in status_of(raw).message
    assert env.events() == []


async def test_gzip_bomb_is_413_and_bad_gzip_400(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_body_bytes=100_000)
    bomb = gzip.compress(b"\x00" * 5_000_000)
    assert len(bomb) < 100_000
    got, raw, _ = await env.post(bomb, **{"Content-Encoding": "gzip", "Connection": "close"})
    assert got == 413, raw
    assert "limit" in status_of(raw).message
    got, raw, _ = await env.post(
        b"\x1f\x8bnot gzip", **{"Content-Encoding": "gzip", "Connection": "close"}
    )
    assert got == 400
    got, raw, _ = await env.post(request_body(1), **{"Content-Encoding": "zstd-ish"})
    assert got == 415
    assert env.events() == []


async def test_too_many_records_is_413(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_batch_entries=5)
    got, raw, _ = await env.post(request_body(6))
    assert got == 413 and "6 log records exceed the 5-record limit" in status_of(raw).message
    got, _, _ = await env.post(b"")  # an empty request: nothing to do, success
    assert got == 200
    assert env.events() == []
