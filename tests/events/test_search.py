"""Event validation on submission, indexed search with proofs, tenant scoping, reindexing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.events.helpers import (
    ClientFactory,
    EventsEnv,
    make_events,
    start_events,
    submit_events,
    verify_result,
)
from translog.formats.event_builder import encode_event
from translog.formats.event_schema import Query
from translog.http.search import flush
from translog.log import event_index as evindex
from translog.storage.lmdb import LMDBStorage


def _expected(env: EventsEnv, tenant: str, **filters: str) -> list[str]:
    q = Query(tenant, filters)
    return [e["id"] for e in env.sent if q.matches(e)]


async def _all_pages(env: EventsEnv, params: dict[str, str], auth: dict[str, str]) -> list[Any]:
    results: list[Any] = []
    cursor: int | None = None
    pages = 0
    while True:
        query = dict(params)
        if cursor is not None:
            query["cursor"] = str(cursor)
        resp = await env.client.get("/events/search", params=query, headers=auth)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        for r in body["results"]:
            verify_result(r, body["checkpoint"], env.signer.vkey)
        results += body["results"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return results
        assert pages < 200


async def test_bad_events_get_400_naming_the_field(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client)
    token = env.auth(scopes=("submit",))
    good = make_events(1)[0]
    resp = await env.client.post("/add", data=encode_event(good), headers=token)
    assert resp.status == 200
    bad = {**good, "actor": {"type": "user"}}
    resp = await env.client.post("/add", data=json.dumps(bad), headers=token)
    assert resp.status == 400
    assert (await resp.json())["reason"].startswith("event.actor.id: missing")
    body = b"\n".join(
        b'"' + base64.b64encode(p) + b'"' for p in (encode_event(good), b'{"schema": 1}')
    )
    resp = await env.client.post(
        "/add-batch", data=body, headers={**token, "Content-Type": "application/x-ndjson"}
    )
    assert resp.status == 400
    assert (await resp.json())["reason"].startswith("line 2: event.schema:")
    assert env.log.size == 1  # nothing of the refused batch went in


@pytest.mark.parametrize("backend", ["memory", "lmdb"])
async def test_search_by_each_field_with_proofs_and_pages(
    aiohttp_client: ClientFactory, tmp_path: Path, backend: str
) -> None:
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 24) if backend == "lmdb" else None
    env = await start_events(aiohttp_client, storage)
    await submit_events(env, make_events(400))
    acme = env.auth("acme")
    cases: list[dict[str, str]] = [
        {"actor": "alice"},
        {"action": "user.login", "outcome": "failure"},
        {"target": "billing", "actor": "bob"},
        {"category": "configuration"},
        {"id": "ev-7-10"},
        {},
    ]
    for filters in cases:
        want = _expected(env, "acme", **filters)
        got = await _all_pages(env, {"tenant": "acme", "limit": "9", **filters}, acme)
        ids = [r["event"]["id"] for r in got]
        assert ids == list(reversed(want)), filters  # newest first, every match, no extra
        asc = await _all_pages(
            env, {"tenant": "acme", "limit": "13", "order": "asc", **filters}, acme
        )
        assert [r["event"]["id"] for r in asc] == want
    # time range over leaf timestamps: everything is in range, nothing before 1970+1s
    got = await _all_pages(env, {"tenant": "acme", "from": "0", "to": "1000"}, acme)
    assert got == []


async def test_tenant_scoping_and_bad_queries(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client)
    await submit_events(env, make_events(50))
    q = {"tenant": "acme", "actor": "alice"}
    assert (await env.client.get("/events/search", params=q)).status == 401
    resp = await env.client.get("/events/search", params=q, headers=env.auth("globex"))
    assert resp.status == 403
    assert "not scoped to tenant 'acme'" in (await resp.json())["reason"]
    resp = await env.client.get("/events/search", params=q, headers=env.auth())
    assert resp.status == 403
    star = env.auth("*")
    assert (await env.client.get("/events/search", params=q, headers=star)).status == 200
    for params, reason in [
        ({"actor": "alice"}, "tenant: missing"),
        ({**q, "colour": "red"}, "unknown query parameter 'colour'"),
        ({**q, "outcome": "ok"}, "outcome: expected"),
        ({**q, "limit": "0"}, "limit"),
        ({**q, "limit": "x"}, "limit"),
        ({**q, "from": "tomorrow"}, "from:"),
        ({**q, "order": "up"}, "order"),
    ]:
        resp = await env.client.get("/events/search", params=params, headers=star)
        assert resp.status == 400, params
        assert reason in (await resp.json())["reason"]
    # one event by index, tenant-checked
    resp = await env.client.get("/events/3", headers=star)
    body = await resp.json()
    verify_result(body["results"][0], body["checkpoint"], env.signer.vkey)
    tenant = env.sent[3]["tenant"]
    other = "globex" if tenant == "acme" else "acme"
    assert (await env.client.get("/events/3", headers=env.auth(other))).status == 403
    assert (await env.client.get("/events/999", headers=star)).status == 404


async def test_searches_and_payload_reads_are_self_audited(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client)
    await submit_events(env, make_events(20))
    auth = env.auth("acme")
    await env.client.get(
        "/events/search", params={"tenant": "acme", "actor": "carol"}, headers=auth
    )
    reader = {"Authorization": "Bearer " + env.tokens.create("auditor", ("read",))}
    for i in (2, 3, 4, 9):
        assert (await env.client.get(f"/entries/{i}", headers=reader)).status == 200
    assert await flush(env.app) == 2
    audit = await _all_pages(env, {"tenant": "translog"}, env.auth("translog"))
    events = {r["event"]["action"]: r["event"] for r in audit}
    search = events["translog.events.search"]
    assert search["details"]["query"] == {"tenant": "acme", "actor": "carol"}
    assert search["targets"] == [{"type": "subject", "id": "carol"}]
    reads = events["translog.payload.read"]
    assert reads["actor"] == {"type": "token", "id": "auditor"}
    assert reads["details"] == {"entries": [[2, 4], [9, 9]], "count": 4}


async def test_indexes_are_durable_and_rebuildable(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 24)
    env = await start_events(aiohttp_client, storage)
    await submit_events(env, make_events(300))
    size = env.log.size
    q = Query("acme", {"actor": "alice"})

    def everything() -> list[int]:
        page = evindex.search(storage, q, size=size, limit=500)
        return [h.index for h in page.hits]

    before = everything()
    assert before and sorted(before) == evindex.scan(storage, q, size=size)[::1]
    assert evindex.indexed_size(storage) == size
    with storage.index_reader() as r:
        first = r.seek(evindex.POSTING)
    assert first is not None
    evindex.reindex(storage)
    assert everything() == before
    # drop the postings; the index reports it and catch_up rebuilds them
    storage.index_write([(b"s" + b"indexed", (0).to_bytes(8, "big"))], clear_prefix=b"p")
    assert everything() == []
    assert evindex.catch_up(storage) == size
    assert everything() == before


async def test_openapi_documents_the_event_routes(aiohttp_client: ClientFactory) -> None:
    from tests.integration.test_ops import _METHODS, _check_operation, _routes

    env = await start_events(aiohttp_client)
    doc = await (await env.client.get("/openapi.json")).json()
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in _METHODS
    }
    assert _routes(env.app, "") == documented
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in _METHODS:
                _check_operation(doc, path, method, op)


async def test_explorer_files_are_served_with_a_strict_policy(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start_events(aiohttp_client)
    page = await env.client.get("/explorer")
    assert page.status == 200 and "translog explorer" in await page.text()
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = await env.client.get("/explorer/explorer.js")
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert "crypto.subtle.verify" in await script.text()
    assert (await env.client.get("/explorer/index.html")).status == 404
    assert (await env.client.get("/explorer/..%2ftranslog.toml")).status == 404
