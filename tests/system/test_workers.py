"""``translog serve --workers 2``: the multi-process server answers exactly as one process does.

One server per test module (starting one costs about a second): the fast path (plain durable
submissions) and every request the workers proxy to the log process (promises, idempotency
keys, errors, reads, metrics), pushback with Retry-After from the log process's pool, the
tile cache, and a worker that dies being replaced. SIGKILL and SIGTERM of the whole server
are in test_serve.py, parametrised over the number of workers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.system.test_serve import ORIGIN, Log, Server, alive, children, cli, wait_for
from translog.core.tiles import decode_bundle
from translog.formats.receipt import parse_receipt, verify_promise, verify_receipt

pytestmark = pytest.mark.system

MAX_PENDING = 1500


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, aiohttp.ClientSession]]:
    data = tmp_path / "data"
    vkey = cli("init", "--data", str(data), "--origin", ORIGIN).stdout.strip().splitlines()[-1]
    token = cli("token", "create", "--data", str(data), "--name", "system").stdout.strip()
    config = data / "translog.toml"
    text = config.read_text().replace("max_pending = 100000", f"max_pending = {MAX_PENDING}")
    assert f"max_pending = {MAX_PENDING}" in text
    config.write_text(text)
    server = Server(Log(data, vkey, token), tmp_path, "workers", workers=2)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield server, session
    finally:
        server.kill_if_running()


def auth(server: Server, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.log.token}", **extra}


async def post(
    session: aiohttp.ClientSession, server: Server, path: str, body: bytes, **headers: str
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with session.post(f"{server.url}{path}", data=body, headers=headers) as r:
        text = await r.read()
        return r.status, json.loads(text) if text.startswith(b"{") else text, r


def ndjson(payloads: list[bytes]) -> bytes:
    return b"\n".join(b'"' + base64.b64encode(p) + b'"' for p in payloads)


async def post_batch(
    session: aiohttp.ClientSession, server: Server, body: bytes, query: str = ""
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = auth(server, **{"Content-Type": "application/x-ndjson"})
    return await post(session, server, f"/add-batch{query}", body, **headers)


async def test_fast_path_and_proxied_submissions(
    served: tuple[Server, aiohttp.ClientSession],
) -> None:
    server, session = served
    vkey = server.log.vkey
    # Fast path: concurrent singles and a batch, coalesced into messages to the log process.
    singles = [b"single %d" % i for i in range(40)]
    answers = await asyncio.gather(
        *(post(session, server, "/add", p, **auth(server)) for p in singles)
    )
    for payload, (status, body, _) in zip(singles, answers, strict=True):
        assert status == 200, body
        verify_receipt(body, vkey, payload)
    assert len({body["index"] for _, body, _ in answers}) == len(singles)
    batch = [b"batch %d" % i for i in range(300)]
    status, body, _ = await post_batch(session, server, ndjson(batch), "?wait=durable&kind=inline")
    assert status == 200, body
    verify_receipt(body, vkey, payloads=batch)
    assert all("salt" not in e for e in body["entries"])  # kind=inline honoured
    # Proxied: idempotency keys (header and per entry), promises, wait=published.
    keyed = auth(server, **{"Idempotency-Key": "k-1"})
    first = await post(session, server, "/add", b"keyed", **keyed)
    again = await post(session, server, "/add", b"keyed", **keyed)
    assert first[0] == again[0] == 200
    assert again[1]["duplicate"] and again[1]["index"] == first[1]["index"]
    entries = json.dumps(
        [{"payload_b64": base64.b64encode(b"e").decode(), "idempotency_key": "k-2"}]
    ).encode()
    json_type = auth(server, **{"Content-Type": "application/json"})
    status, body, _ = await post(session, server, "/add-batch", entries, **json_type)
    assert status == 200 and not body["entries"][0]["duplicate"]
    status, body, _ = await post(session, server, "/add-batch", entries, **json_type)
    assert status == 200 and body["entries"][0]["duplicate"]
    status, promise, _ = await post(session, server, "/add?wait=0", b"promised", **auth(server))
    assert status == 202
    verify_promise(promise, vkey)
    status, body, _ = await post(
        session, server, "/add?wait=published", b"published", **auth(server)
    )
    assert status == 200
    verify_receipt(body, vkey, b"published")
    assert parse_receipt(body).entries[0].index > first[1]["index"]


async def test_errors_pushback_and_metrics(served: tuple[Server, aiohttp.ClientSession]) -> None:
    server, session = served
    status, body, r = await post(session, server, "/add", b"x", Authorization="Bearer nope")
    assert status == 401 and body["error"] == "unauthorized"
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="translog"'
    status, body, _ = await post(session, server, "/add?wait=later", b"x", **auth(server))
    assert status == 400 and "wait" in body["reason"]
    status, body, _ = await post(session, server, "/add?kind=inline", b"x" * 70_000, **auth(server))
    assert status == 413 and body["error"] == "too_large"
    status, body, _ = await post_batch(session, server, b'"not base64!"')
    assert status == 400 and body["reason"].startswith("line 1")
    # More entries than the pool holds: the log process refuses them, with Retry-After.
    too_many = [b"%d" % i for i in range(MAX_PENDING + 1)]
    status, body, r = await post_batch(session, server, ndjson(too_many))
    assert status == 503 and body["error"] == "pushback"
    assert int(r.headers["Retry-After"]) >= 1
    status, _, _ = await post(session, server, "/add", b"fine", **auth(server))
    assert status == 200
    async with session.get(f"{server.url}/metrics") as r:
        metrics = await r.text()
    for line in (
        'translog_submissions_rejected_total{reason="unauthorized"} 1',
        'translog_submissions_rejected_total{reason="malformed"} 2',
        'translog_submissions_rejected_total{reason="too_large"} 1',
        'translog_submissions_rejected_total{reason="pushback"} 1',
        'translog_submissions_total{mode="single",wait="durable"} 1',
        "translog_receipt_seconds_count 1",
    ):
        assert line in metrics, line


async def add_all(served: tuple[Server, aiohttp.ClientSession], payloads: list[bytes]) -> Any:
    """Add ``payloads`` in one durable batch; its receipt."""
    server, session = served
    status, receipt, _ = await post_batch(session, server, ndjson(payloads))
    assert status == 200
    return receipt


async def test_reads_tiles_and_a_replaced_worker(
    served: tuple[Server, aiohttp.ClientSession],
) -> None:
    server, session = served
    await add_all(served, [b"%d" % i for i in range(300)])
    tiles = []
    for _ in range(4):  # answered by both workers, from the log process or a worker's cache
        async with session.get(f"{server.url}/tile/0/000") as r:
            assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
            tiles.append(await r.read())
    assert len(tiles[0]) == 256 * 32 and all(t == tiles[0] for t in tiles)
    async with session.get(
        f"{server.url}/tile/entries/000", headers={"Accept-Encoding": "gzip"}
    ) as r:
        assert r.status == 200 and r.headers.get("Content-Encoding") == "gzip"
    async with session.get(f"{server.url}/nowhere") as r:
        assert r.status == 404 and (await r.json())["error"] == "not_found"
    async with session.get(f"{server.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    # A worker that dies is replaced; the other keeps serving meanwhile.
    assert server.proc is not None
    before = children(server.proc.pid)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: not alive(victim))
    await wait_for(lambda: len(children(server.proc.pid) - before) == 1, timeout=15)
    for i in range(6):  # new connections, spread over both workers
        async with aiohttp.ClientSession() as fresh:
            status, _, _ = await post(fresh, server, "/add", b"after %d" % i, **auth(server))
            assert status == 200
    assert server.stop(signal.SIGTERM) == 0
    assert "worker" in server.output("stderr") and "starting it again" in server.output("stderr")


async def test_workers_read_full_bundles_themselves_and_never_serve_a_corrupted_one(
    served: tuple[Server, aiohttp.ClientSession],
) -> None:
    server, session = served
    receipt = await add_all(served, [b"worker-read-%04d" % i for i in range(300)])
    leaves = {e["index"]: base64.b64decode(e["leaf"]) for e in receipt["entries"]}
    for _ in range(4):  # both workers, identity and gzip
        for coding in ("identity", "gzip"):
            url = f"{server.url}/tile/entries/000"
            async with session.get(url, headers={"Accept-Encoding": coding}) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert r.headers["Vary"] == "Accept-Encoding"
                assert r.headers.get("Content-Encoding") == (
                    None if coding == "identity" else "gzip"
                )
                assert decode_bundle(await r.read()) == [leaves[i] for i in range(256)]
    async with session.get(f"{server.url}/tile/entries/001") as r:
        assert r.status == 404  # not full yet: the log process answers
    async with session.get(f"{server.url}/tile/entries/000.p/44") as r:
        assert r.status == 200 and decode_bundle(await r.read()) == [leaves[i] for i in range(44)]
    assert server.stop(signal.SIGTERM) == 0

    # One payload bit flipped on disk (a committed record stores salt and payload, and its
    # leaf is rebuilt from them): neither worker nor the log process serves that bundle.
    marker = b"worker-read-0150"
    path = server.log.data / "lmdb" / "data.mdb"
    raw = bytearray(path.read_bytes())
    at = raw.find(marker)
    assert at >= 0 and raw.find(marker, at + 1) < 0
    raw[at + len(marker) - 1] ^= 0x01
    path.write_bytes(bytes(raw))
    config = server.log.data / "translog.toml"
    text = config.read_text()
    assert "verify_entries_on_start = 100000" in text
    config.write_text(
        text.replace("verify_entries_on_start = 100000", "verify_entries_on_start = 0")
    )
    await server.start()
    async with aiohttp.ClientSession() as fresh:
        for _ in range(6):  # new connections, spread over both workers
            async with (
                aiohttp.ClientSession() as one,
                one.get(f"{server.url}/tile/entries/000") as r,
            ):
                assert r.status == 500
                assert marker[:-1] not in await r.read()
        async with fresh.get(f"{server.url}/tile/0/000") as r:
            assert r.status == 200 and len(await r.read()) == 256 * 32


PROOF_SIZE = 300


def ct_urls(leaf_hashes: list[bytes]) -> tuple[list[str], list[str]]:
    """CT API paths a worker answers itself, and paths whose errors come from the log process.

    The published tree has PROOF_SIZE entries; ``leaf_hashes[i]`` is entry ``i``'s."""
    n = PROOF_SIZE

    def by_hash(h: bytes, size: int) -> str:
        return f"/ct/v1/get-proof-by-hash?hash={quote(base64.b64encode(h).decode(), safe='')}" + (
            f"&tree_size={size}"
        )

    served = [
        f"/ct/v1/get-entry-and-proof?leaf_index={i}&tree_size={s}"
        for i, s in [
            (0, 1),
            (0, n),
            (1, 2),
            (5, 7),
            (n - 1, n),
            (n - 2, n - 1),
            (128, 256),
            (255, n),
        ]
    ]
    served += [by_hash(leaf_hashes[i], s) for i, s in [(0, 1), (0, n), (n - 1, n), (77, 100)]]
    served += [
        f"/ct/v1/get-sth-consistency?first={a}&second={b}"
        for a, b in [(1, 1), (1, n), (5, 7), (n - 1, n), (64, 256), (n, n)]
    ]
    served += ["/ct/v1/get-entries?start=0&end=0", "/ct/v1/get-entries?start=10&end=265"]
    served += [f"/ct/v1/get-entries?start=0&end={n + 50}"]  # cut short: no-cache
    fallback = [
        f"/ct/v1/get-entry-and-proof?leaf_index=0&tree_size={n + 1}",  # beyond published
        f"/ct/v1/get-entry-and-proof?leaf_index={n}&tree_size={n}",
        "/ct/v1/get-entry-and-proof?leaf_index=0&tree_size=0",
        "/ct/v1/get-entry-and-proof?leaf_index=x&tree_size=1",
        by_hash(b"\x07" * 32, n),  # unknown hash: 404
        by_hash(leaf_hashes[n - 1], n - 1),  # not in that tree: 404
        f"/ct/v1/get-sth-consistency?first=0&second={n}",
        f"/ct/v1/get-sth-consistency?first=1&second={n + 1}",
        "/ct/v1/get-roots",
    ]
    return served, fallback


async def raw_answer(session: aiohttp.ClientSession, url: str, gzip: bool) -> tuple[Any, ...]:
    """Status, headers (without Date and Server) and the body exactly as sent."""
    coding = "gzip" if gzip else "identity"
    async with session.get(url, headers={"Accept-Encoding": coding}) as r:
        body = await r.read()
        headers = sorted((k, v) for k, v in r.headers.items() if k not in ("Date", "Server"))
        return r.status, headers, body


async def by_label(
    session: aiohttp.ClientSession, server: Server, name: str, label: str
) -> dict[str, float]:
    """The samples of counter ``name`` in /metrics, by the value of ``label``."""
    async with session.get(f"{server.url}/metrics", headers=auth(server)) as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
            out[value] = float(line.rsplit(" ", 1)[1])
    return out


async def proxied(session: aiohttp.ClientSession, server: Server) -> dict[str, float]:
    """translog_proxied_requests_total by route (the /metrics request itself included)."""
    return await by_label(session, server, "translog_proxied_requests_total", "route")


async def test_workers_answer_the_ct_api_themselves_as_the_log_process_does(
    served: tuple[Server, aiohttp.ClientSession],
) -> None:
    server, _ = served
    receipt = await add_all(served, [b"ct-%04d" % i for i in range(PROOF_SIZE)])
    hashes = [base64.b64decode(e["leaf_hash"]) for e in receipt["entries"]]
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def published() -> int:
            async with session.get(f"{server.url}/ct/v1/get-sth") as r:
                return int(json.loads(await r.read())["tree_size"])

        deadline = asyncio.get_running_loop().time() + 20
        while await published() < PROOF_SIZE:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert await published() == PROOF_SIZE  # nothing else is added meanwhile
        good, bad = ct_urls(hashes)
        before = await proxied(session, server)
        workers: dict[tuple[str, bool], tuple[Any, ...]] = {}
        for _ in range(3):  # new connections: both workers
            async with aiohttp.ClientSession(auto_decompress=False) as fresh:
                for url in good + bad:
                    for gz in (False, True):
                        answer = await raw_answer(fresh, server.url + url, gz)
                        assert workers.setdefault((url, gz), answer) == answer, url
        after = await proxied(session, server)
        routes = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        # Every answer above came from a worker; the errors from the log process.
        for name in ("get-entry-and-proof", "get-proof-by-hash", "get-sth-consistency"):
            assert routes.get(f"/ct/v1/{name}", 0) == 6 * sum(name in u for u in bad), name
        assert routes.get("/ct/v1/get-entries", 0) == 0
        assert routes.get("/ct/v1/get-sth", 0) == 0
    for url in good:
        status, headers, _ = workers[url, False]
        control = dict(headers)["Cache-Control"]
        assert status == 200, url
        if url.endswith(f"end={PROOF_SIZE + 50}"):
            assert control == "public, no-cache"
        else:
            assert control == "public, max-age=31536000, immutable", url
    assert dict(workers[good[-1], True][1]).get("Content-Encoding") == "gzip"
    assert [workers[u, False][0] for u in bad] == [400, 400, 400, 400, 404, 404, 400, 400, 404]
    assert server.stop(signal.SIGTERM) == 0

    # The same store, served by one process: the same answers, byte for byte.
    single = Server(server.log, server.workdir, "single", workers=0)
    await single.start()
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as session:
            for url in good + bad:
                for gz in (False, True):
                    assert await raw_answer(session, single.url + url, gz) == workers[url, gz]
            status, headers, _ = await raw_answer(session, single.url + "/ct/v1/get-sth", False)
            assert dict(headers)["Cache-Control"] == "public, max-age=1"
    finally:
        single.kill_if_running()
