"""In-process tests of the operations routes: index, metrics, health, OpenAPI, access log."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

import translog.log.sequencer
from tests.integration.test_read import ClientFactory, Env, checkpoint, grow, start, unb64
from translog.core.ct import verify_tree_head
from translog.core.vkey import parse_vkey
from translog.errors import PushbackError, SequencerFatalError
from translog.http.keys import METRICS
from translog.http.ops import (
    AccessLogger,
    LineBuffer,
    access_line,
    health_problems,
    render_log_metrics,
)
from translog.metrics import LATENCY_BUCKETS, SIZE_BUCKETS, Histogram
from translog.storage.memory import MemoryStorage

# ----------------------------------------------------------------------------------- index


async def test_index_names_the_log_and_its_keys(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 2)
    await env.log.publish()
    body = await env.get_json("/")
    assert body["origin"] == "read.example/log"
    assert parse_vkey(body["vkey"]).name == "read.example/log"
    assert body["vkey"] == env.signer.vkey
    assert (await env.get(body["links"]["checkpoint"])).status == 200
    sth = await env.get_json("/ct/v1/get-sth")
    verify_tree_head(
        unb64(body["ct_public_key"]),
        unb64(sth["tree_head_signature"]),
        sth["timestamp"],
        sth["tree_size"],
        unb64(sth["sha256_root_hash"]),
    )
    assert env.ths is not None and unb64(body["ct_log_id"]) == env.ths.log_id


async def test_index_without_a_ct_key(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, ct=False)
    body = await env.get_json("/")
    assert "ct_public_key" not in body and "ct_log_id" not in body


async def test_ops_routes_respect_the_prefix(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, prefix="/log1")
    body = await env.get_json("/")
    assert body["links"]["checkpoint"] == "/log1/checkpoint"
    for path in ("/metrics", "/healthz", "/openapi.json"):
        assert (await env.get(path)).status == 200, path
        assert (await env.client.get(path)).status == 404, path
    doc = await env.get_json("/openapi.json")
    assert doc["servers"] == [{"url": "/log1"}]


# --------------------------------------------------------------------------------- metrics

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? "
    r"(?P<value>-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?|NaN|[+-]Inf)$"
)
_REQUIRED = {
    "translog_tree_size": "gauge",
    "translog_published_tree_size": "gauge",
    "translog_pending_entries": "gauge",
    "translog_checkpoint_age_seconds": "gauge",
    "translog_sequencer_fatal": "gauge",
    "translog_submitted_entries_total": "counter",
    "translog_pushbacks_total": "counter",
    "translog_checkpoints_published_total": "counter",
    "translog_storage_full_total": "counter",
    "translog_checkpoints_withheld_total": "counter",
    "translog_batch_entries": "histogram",
    "translog_batch_commit_seconds": "histogram",
}


def parse_metrics(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """Parse Prometheus text strictly: (TYPE per family, value per sample line)."""
    types: dict[str, str] = {}
    samples: dict[str, float] = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4, line
        else:
            m = _SAMPLE.match(line)
            assert m is not None, f"bad sample line: {line!r}"
            key = m["name"] + (f"{{{m['labels']}}}" if m["labels"] else "")
            assert key not in samples, f"sample {key} twice"
            samples[key] = float(m["value"])
    return types, samples


async def metrics(env: Env, **kwargs: Any) -> tuple[dict[str, str], dict[str, float]]:
    resp = await env.get("/metrics", **kwargs)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_metrics(await resp.text())


async def test_metrics_report_the_log(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    types, samples = await metrics(env)
    assert {k: types.get(k) for k in _REQUIRED} == _REQUIRED
    assert samples["translog_tree_size"] == 0
    await grow(env.log, 7)
    await grow(env.log, 3)
    await env.log.publish()
    _, samples = await metrics(env)
    assert samples["translog_tree_size"] == 10
    assert samples["translog_published_tree_size"] == 10
    assert samples["translog_submitted_entries_total"] == 10
    assert samples["translog_checkpoints_published_total"] == 2
    assert samples["translog_batch_entries_count"] == 2
    assert samples["translog_batch_entries_sum"] == 10
    assert samples['translog_batch_entries_bucket{le="+Inf"}'] == 2
    assert samples['translog_batch_entries_bucket{le="5"}'] == 1
    assert samples["translog_batch_commit_seconds_count"] == 2
    assert samples["translog_pending_entries"] == 0
    assert samples["translog_sequencer_fatal"] == 0


async def test_metrics_count_pushbacks(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    env.log.options = dataclasses.replace(env.log.options, max_pending=2)
    with pytest.raises(PushbackError):
        env.log.submit([b"a", b"b", b"c"])
    _, samples = await metrics(env)
    assert samples["translog_pushbacks_total"] == 1


async def test_metrics_checkpoint_age(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start(aiohttp_client)
    published = env.log.published
    assert published is not None
    monkeypatch.setattr(translog.log.sequencer, "now_ms", lambda: published.timestamp_ms + 12_345)
    _, samples = await metrics(env)
    assert samples["translog_checkpoint_age_seconds"] == 12.345


async def test_metrics_include_the_app_registry(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    registry = env.client.app[METRICS]
    registry.counter("translog_test_requests_total", "a counter declared by another module")
    registry.inc("translog_test_requests_total", 2)
    types, samples = await metrics(env)
    assert types["translog_test_requests_total"] == "counter"
    assert samples["translog_test_requests_total"] == 2


def test_render_log_metrics_keeps_large_values_exact() -> None:
    fake = SimpleNamespace(
        size=1_234_567_891,
        pending=100_001,
        fatal=None,
        published=SimpleNamespace(size=1_234_567_890, timestamp_ms=1_000),
        stats={
            "submitted": 9_876_543_210,
            "pushbacks": 0,
            "published": 3,
            "storage_full": 0,
            "lease_refused": 0,
            "withheld": 0,
        },
        batch_sizes=Histogram("translog_batch_entries", "h", SIZE_BUCKETS),
        integration_seconds=Histogram("translog_batch_commit_seconds", "h", LATENCY_BUCKETS),
    )
    text = "\n".join(render_log_metrics(fake, 3_500)) + "\n"  # type: ignore[arg-type]
    _, samples = parse_metrics(text)
    assert "translog_tree_size 1234567891\n" in text
    assert "translog_published_tree_size 1234567890\n" in text
    assert "translog_submitted_entries_total 9876543210\n" in text
    assert samples["translog_checkpoint_age_seconds"] == 2.5


async def test_metrics_need_a_read_token_when_the_tree_is_private(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start(aiohttp_client, public_tree=False)
    assert (await env.get("/metrics")).status == 401
    assert (await env.get("/metrics", headers=env.token("submit"))).status == 403
    await metrics(env, headers=env.token("read"))


# ---------------------------------------------------------------------------------- health


async def test_healthz_ok_then_stale(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start(aiohttp_client, interval_ms=60_000)
    await grow(env.log, 4)
    await env.log.publish()
    resp = await env.get("/healthz")
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok" and body["size"] == 4 and body["published_size"] == 4
    assert 0 <= body["checkpoint_age_ms"] < 60_000 and "reasons" not in body
    published = env.log.published
    assert published is not None
    monkeypatch.setattr(translog.log.sequencer, "now_ms", lambda: published.timestamp_ms + 180_000)
    assert (await env.get("/healthz")).status == 200  # exactly three intervals: still fine
    monkeypatch.setattr(translog.log.sequencer, "now_ms", lambda: published.timestamp_ms + 180_001)
    body = await env.get_json("/healthz", status=503)
    assert body["status"] == "unhealthy"
    assert body["checkpoint_age_ms"] == 180_001
    assert body["reasons"] == ["the newest checkpoint is 180001 ms old, limit is 180000 ms"]
    await env.log.publish()  # a fresh checkpoint (signed at the patched time) heals it
    assert (await env.get("/healthz")).status == 200


async def test_healthz_503_after_the_sequencer_stopped(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    storage = env.log.storage
    assert isinstance(storage, MemoryStorage)
    storage.fail_next = "before"
    with pytest.raises(SequencerFatalError):
        await env.log.submit([b"doomed"])
    body = await env.get_json("/healthz", status=503)
    assert body["reasons"] == ["the sequencer stopped after a storage failure"]
    _, samples = await metrics(env)
    assert samples["translog_sequencer_fatal"] == 1


async def test_healthz_hides_sizes_of_a_private_tree(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, public_tree=False)
    body = await env.get_json("/healthz")
    assert body["status"] == "ok" and "size" not in body and "published_size" not in body


def test_health_problems_before_the_first_checkpoint() -> None:
    fake = SimpleNamespace(fatal=None, published=None, local_published=None)
    assert health_problems(fake, 1000, 5) == ["no checkpoint has been published yet"]  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- openapi

_METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


def _routes(app: web.Application, prefix: str) -> set[tuple[str, str]]:
    """(method, OpenAPI-style path relative to the prefix) for every registered route."""
    out = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert path is not None and path.startswith(prefix), info
        out.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)[len(prefix) :]))
    return out


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@pytest.mark.parametrize("prefix", ["", "/log1"])
async def test_openapi_documents_every_route(aiohttp_client: ClientFactory, prefix: str) -> None:
    env = await start(aiohttp_client, prefix=prefix)
    resp = await env.get("/openapi.json")
    assert resp.content_type == "application/json"
    doc = json.loads(await resp.text())
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"] == [{"url": prefix or "/"}]
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in _METHODS
    }
    registered = _routes(env.client.app, prefix)
    assert registered - documented == set(), "routes without documentation"
    assert documented - registered == set(), "documented routes that do not exist"


def _check_operation(doc: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> None:
    assert op.get("operationId") and op.get("summary"), (path, method)
    assert op["responses"], (path, method)
    for status in op["responses"]:
        assert re.fullmatch(r"[1-5][0-9][0-9]", status), (path, method, status)
    params = [_resolve(doc, p["$ref"]) if "$ref" in p else p for p in op.get("parameters", [])]
    declared = {p["name"] for p in params if p["in"] == "path"}
    assert declared == set(re.findall(r"\{(\w+)\}", path)), (path, method)


def test_openapi_document_is_well_formed() -> None:
    from importlib.resources import files

    doc = json.loads(files("translog.http").joinpath("openapi.json").read_text("utf-8"))
    for ref in _refs(doc):
        _resolve(doc, ref)  # every $ref resolves
    operation_ids: list[str] = []
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        for method, op in item.items():
            assert method in _METHODS, (path, method)
            _check_operation(doc, path, method, op)
            operation_ids.append(op["operationId"])
    assert len(operation_ids) == len(set(operation_ids))
    schemes = doc["components"]["securitySchemes"]
    for item in doc["paths"].values():
        for op in item.values():
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes)


# ------------------------------------------------------------------------------ access log


def test_access_log_is_json_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    token = "tl_" + "s" * 43
    request = make_mocked_request(
        "GET",
        "/ct/v1/get-entries?start=1&end=2&token=hunter2&api_key=swordfish",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "idem-secret"},
    )
    response = web.Response(status=200, body=b"x" * 10)
    logger = logging.getLogger("translog.test.access")
    with caplog.at_level(logging.INFO, logger="translog.test.access"):
        AccessLogger(logger, "").log(request, response, 0.0123)
    [record] = caplog.records
    text = record.getMessage()
    for secret in (token, "hunter2", "swordfish", "idem-secret", "Bearer"):
        assert secret not in text
    entry = json.loads(text)
    assert entry["method"] == "GET" and entry["path"] == "/ct/v1/get-entries"
    assert entry["query"] == {
        "start": "1",
        "end": "2",
        "token": "<redacted>",
        "api_key": "<redacted>",
    }
    assert entry["status"] == 200 and entry["authenticated"] is True
    assert entry["duration_ms"] == 12.3


async def test_access_log_in_a_running_server(
    aiohttp_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    token_holder: dict[str, str] = {}
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        env = await start(
            aiohttp_client,
            public_payloads=False,
            access_log_class=AccessLogger,
        )
        await grow(env.log, 1)
        auth = env.token("read")
        token_holder["t"] = auth["Authorization"]
        assert (await env.get("/entries/0", headers=auth)).status == 200
        await asyncio.sleep(0)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert lines, "no access log line"
    entries = [json.loads(line) for line in lines]
    assert any(e["path"] == "/entries/0" and e["status"] == 200 for e in entries)
    assert all(token_holder["t"].split()[1] not in line for line in lines)


async def test_checkpoint_still_served_with_stale_health(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start(aiohttp_client)
    published = env.log.published
    assert published is not None
    monkeypatch.setattr(translog.log.sequencer, "now_ms", lambda: published.timestamp_ms + 10**9)
    await env.get_json("/healthz", status=503)
    assert (await checkpoint(env)).size == 0


@pytest.mark.parametrize(
    "target",
    ["/add", "/ct/v1/get-entries?start=1&end=2&token=x", '/tile/0/x\u00e9"\\?hash=%22', "/"],
)
def test_access_line_is_the_json_of_the_record(target: str) -> None:
    headers = {"Authorization": "Bearer t"} if "start" in target else {}
    request = make_mocked_request("GET", target, headers=headers)
    response = web.Response(status=201, body=b"x" * 7)
    line = access_line(request, response, 0.0123456)
    record = {
        "remote": request.remote,
        "method": "GET",
        "path": request.path,
        "query": dict(request.query)
        if "token" not in target
        else {"start": "1", "end": "2", "token": "<redacted>"},
        "status": 201,
        "bytes": response.body_length,
        "duration_ms": 12.346,
        "authenticated": "start" in target,
    }
    assert line == json.dumps(record, separators=(",", ":"))


async def test_buffered_access_lines_are_written_in_batches() -> None:
    read, write = os.pipe()
    try:
        lines = LineBuffer(write, delay=0.01, limit=100)
        lines.add("one")
        lines.add("two")
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 100)  # nothing written yet: one write per batch
        await asyncio.sleep(0.05)
        assert os.read(read, 100) == b"one\ntwo\n"
        lines.add("x" * 120)  # over the limit: written at once
        assert os.read(read, 200) == b"x" * 120 + b"\n"
        lines.add("last")
        lines.flush()
        assert os.read(read, 100) == b"last\n"
    finally:
        os.close(read)
        os.close(write)
