"""OTLP/HTTP logs against /add-batch: ``python -m benchmarks.bench_otlp [--reps N] [--seconds S]``.

One ``translog serve`` (default workers, made with ``translog init`` and ``translog token
create``, events off as ``translog init`` leaves them) on loopback; per repetition, in turn:

1. **add-batch**: ``POST /add-batch`` of 1,000 base64 payloads (200 B, the body of
   benchmarks/bench_http.py), entries/s;
2. **add-batch, same events**: ``POST /add-batch`` of the 1,000 events that one OTLP request
   below becomes (its canonical event JSON, ~880 B each, mapped before the run): what a
   client that mapped the records itself would post, entries/s;
3. **otlp**: ``POST /v1/logs`` with protobuf ``ExportLogsServiceRequest`` bodies of 1,000
   LogRecords each (service.name and host.name on the resource; per record a ~100-byte body,
   3 attributes, trace and span ids), records/s. Every request is a different body (made
   before the run), so none is answered from its idempotency key.

All with the same client (aiohttp, ``--connections`` concurrent requests, closed loop, in
this process), each for ``--seconds``. The figures are the medians over repetitions of
otlp / add-batch and otlp / add-batch (same events), paired in the same repetition. Target:
at least 0.7x (issue 16), against the first.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2

from benchmarks import bench_http
from benchmarks.bench_http import batch_body, make_data_dir, start_translog
from benchmarks.common import OUT, machine, scratch_dir
from translog.formats import otlp as otlp_format

RECORDS = 1000
TARGET = 0.7


def _kv(key: str, value: Any) -> Any:
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=str(value)))


def events_body(body: bytes) -> bytes:
    """NDJSON for /add-batch: the events one OTLP request ``body`` becomes, base64."""
    message = otlp_format.parse_request(body, otlp_format.PROTOBUF)
    digest = otlp_format.body_digest(body)
    mapped = otlp_format.map_request(
        message, digest, received_ms=1_790_000_000_000, max_payload_bytes=1 << 16
    )
    assert len(mapped.batch) == RECORDS and not mapped.rejected
    lines = (json.dumps(base64.b64encode(p).decode()) for p in mapped.batch.payloads)
    return ("\n".join(lines) + "\n").encode()


def otlp_bodies(count: int) -> list[bytes]:
    """``count`` distinct protobuf requests of :data:`RECORDS` records each."""
    records = [
        logs_pb2.LogRecord(
            time_unix_nano=1_790_000_000_000_000_000 + i * 1_000,
            severity_number=9,
            severity_text="INFO",
            body=common_pb2.AnyValue(string_value=f"user user-{i:08d} logged in from 203.0.113.7"),
            attributes=[_kv("enduser.id", f"user-{i:08d}"), _kv("http.status", 200), _kv("n", i)],
            trace_id=i.to_bytes(16, "big"),
            span_id=i.to_bytes(8, "big"),
        )
        for i in range(RECORDS)
    ]
    message = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource={"attributes": [_kv("service.name", "sso"), _kv("host.name", "web-1")]},
                scope_logs=[logs_pb2.ScopeLogs(scope={"name": "bench"}, log_records=records)],
            )
        ]
    )
    attrs = message.resource_logs[0].resource.attributes
    attrs.append(_kv("bench.request", 0))
    out = []
    for n in range(count):
        attrs[-1].value.int_value = n
        out.append(message.SerializeToString())
    return out


async def _closed_loop(
    url: str, bodies: Sequence[bytes], headers: dict[str, str], connections: int, seconds: float
) -> dict[str, Any]:
    """Closed loop: ``connections`` workers post bodies in turn until the time is up."""
    next_body = 0
    done = 0
    errors: dict[int, int] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_body, done
            while time.monotonic() < deadline:
                if next_body >= len(bodies):
                    raise RuntimeError("ran out of distinct bodies; raise the estimate")
                body = bodies[next_body]
                next_body += 1
                t0 = time.monotonic()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[resp.status] = errors.get(resp.status, 0) + 1
                        continue
                latencies.append(time.monotonic() - t0)
                done += 1

        start = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "requests": done,
        "errors": errors,
        "seconds": elapsed,
        "rate": done * RECORDS / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


def run(reps: int, seconds: float, connections: int) -> dict[str, Any]:
    facts = machine()
    with scratch_dir("otlp") as tmp:
        return _run(facts, tmp, reps, seconds, connections)


def _run(
    facts: dict[str, Any], tmp: Path, reps: int, seconds: float, connections: int
) -> dict[str, Any]:
    data = make_data_dir(tmp / "data")
    server = start_translog(data, tmp, "translog")
    try:
        base = f"http://127.0.0.1:{server.port}"
        auth = {"Authorization": f"Bearer {data.token}"}
        batch = batch_body(RECORDS)
        ndjson = {**auth, "Content-Type": "application/x-ndjson"}
        proto = {**auth, "Content-Type": "application/x-protobuf"}
        # enough distinct bodies for the fastest rate seen so far, with room to spare
        estimate = int(120_000 * seconds / RECORDS) + 50
        reps_out = []
        for rep in range(reps):
            bodies = otlp_bodies(estimate)
            same = events_body(bodies[0])
            add = asyncio.run(
                _closed_loop(f"{base}/add-batch", [batch] * 100_000, ndjson, connections, seconds)
            )
            add_same = asyncio.run(
                _closed_loop(f"{base}/add-batch", [same] * 100_000, ndjson, connections, seconds)
            )
            otlp = asyncio.run(_closed_loop(f"{base}/v1/logs", bodies, proto, connections, seconds))
            ratio = otlp["rate"] / add["rate"]
            ratio_same = otlp["rate"] / add_same["rate"]
            print(
                f"rep {rep + 1}: add-batch {add['rate']:,.0f} entries/s, same events "
                f"{add_same['rate']:,.0f} entries/s, otlp {otlp['rate']:,.0f} records/s, "
                f"ratio {ratio:.3f} (same events {ratio_same:.3f})",
                flush=True,
            )
            reps_out.append(
                {
                    "add_batch": add,
                    "add_batch_same_events": add_same,
                    "otlp": otlp,
                    "ratio": ratio,
                    "ratio_same_events": ratio_same,
                }
            )
    finally:
        server.stop()
    ratios = [r["ratio"] for r in reps_out]
    result = {
        "machine": facts,
        "records_per_request": RECORDS,
        "connections": connections,
        "workers": bench_http.WORKERS,
        "seconds": seconds,
        "reps": reps_out,
        "median_add_batch": statistics.median(r["add_batch"]["rate"] for r in reps_out),
        "median_add_batch_same_events": statistics.median(
            r["add_batch_same_events"]["rate"] for r in reps_out
        ),
        "median_otlp": statistics.median(r["otlp"]["rate"] for r in reps_out),
        "median_ratio": statistics.median(ratios),
        "median_ratio_same_events": statistics.median(r["ratio_same_events"] for r in reps_out),
        "target": TARGET,
        "met": statistics.median(ratios) >= TARGET,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "otlp.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument(
        "--workers", type=int, default=bench_http.WORKERS, help="translog serve --workers"
    )
    args = parser.parse_args(argv)
    bench_http.WORKERS = args.workers
    r = run(args.reps, args.seconds, args.connections)
    print(
        f"median: add-batch {r['median_add_batch']:,.0f} entries/s, same events "
        f"{r['median_add_batch_same_events']:,.0f} entries/s, otlp "
        f"{r['median_otlp']:,.0f} records/s, ratio {r['median_ratio']:.3f} "
        f"(target >= {TARGET}: {'met' if r['met'] else 'NOT met'}), "
        f"same events {r['median_ratio_same_events']:.3f}"
    )
    print(json.dumps(r["machine"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
