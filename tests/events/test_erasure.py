"""Erasure, legal holds and retention: payloads go, leaves and proofs stay, and it is logged."""

from __future__ import annotations

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
from translog.core.vkey import parse_vkey
from translog.formats.event_builder import build_event
from translog.formats.event_schema import parse_event
from translog.log import event_index as evindex
from translog.log.fsck import fsck
from translog.storage.lmdb import LMDBStorage


async def _post(
    env: EventsEnv, path: str, body: Any, auth: dict[str, str], status: int = 200
) -> Any:
    resp = await env.client.post(path, data=json.dumps(body), headers=auth)
    assert resp.status == status, await resp.text()
    return await resp.json()


def _event_at(env: EventsEnv, index: int) -> dict[str, Any]:
    return dict(parse_event(env.log.entries(index, index + 1)[0].payload or b""))


async def _lmdb_env(aiohttp_client: ClientFactory, tmp_path: Path, **events: Any) -> EventsEnv:
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 26)
    return await start_events(aiohttp_client, storage, **events)


def _fsck_ok(env: EventsEnv) -> None:
    report = fsck(env.log.storage, parse_vkey(env.signer.vkey), env.log.origin)
    assert report.ok, report.problems


async def test_erase_one_entry_keeps_proofs_and_logs_who_when_why(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    env = await _lmdb_env(aiohttp_client, tmp_path)
    await submit_events(env, make_events(120))
    await env.log.publish()
    admin = env.auth("*", scopes=("admin", "read"))
    target = 5
    event = env.sent[target]
    root_before = env.log.root_at(env.log.size)
    body = await _post(env, "/admin/erase", {"index": target, "reason": "GDPR art. 17 #42"}, admin)
    assert body["erased"] == 1 and body["entries"] == [[target, target]]
    erasure = _event_at(env, body["erasure_entry"])
    assert erasure["action"] == "translog.erasure.entry"
    assert (
        erasure["actor"]["type"] == "token" and erasure["outcome"]["reason"] == "GDPR art. 17 #42"
    )
    assert erasure["details"]["entries"] == [[target, target]]
    # the tree did not change: same root over the old size, fsck and every proof still pass
    assert env.log.root_at(120) == root_before
    _fsck_ok(env)
    # a query for the erased entry says so, with its proof
    resp = await env.client.get(f"/events/{target}", headers=admin)
    result = (body := await resp.json())["results"][0]
    assert result["status"] == "erased" and "payload" not in result and "event" not in result
    assert result["erasure"]["reason"] == "GDPR art. 17 #42"
    assert result["erasure"]["erasure_entry"] == erasure_index(env)
    verify_result(result, body["checkpoint"], env.signer.vkey)
    # by id it is still found (erased); by actor it is not
    found = await env.client.get(
        "/events/search", params={"tenant": event["tenant"], "id": event["id"]}, headers=admin
    )
    assert [r["status"] for r in (await found.json())["results"]] == ["erased"]
    by_actor = await env.client.get(
        "/events/search",
        params={"tenant": event["tenant"], "actor": event["actor"]["id"], "limit": "500"},
        headers=admin,
    )
    assert target not in [r["index"] for r in (await by_actor.json())["results"]]
    entry = await (await env.client.get(f"/entries/{target}", headers=admin)).json()
    assert entry["erased"] is True
    # erasing again is a no-op, reported
    again = await _post(env, "/admin/erase", {"index": target, "reason": "again"}, admin)
    assert again["erased"] == 0 and again["skipped"] == {str(target): "already erased"}
    # fsck still catches tampering with an erased entry's leaf
    storage = env.log.storage
    assert isinstance(storage, LMDBStorage)
    db = storage.db_handles()["entries"]
    with storage.raw_env().begin(write=True) as txn:
        raw = bytearray(txn.get(target.to_bytes(8, "big"), db=db))
        raw[-1] ^= 1
        txn.put(target.to_bytes(8, "big"), bytes(raw), db=db)
    report = fsck(storage, parse_vkey(env.signer.vkey), env.log.origin)
    assert not report.ok and str(target) in report.problems[0]


def erasure_index(env: EventsEnv) -> int:
    size = env.log.size
    for i in range(size - 1, -1, -1):
        payload = env.log.entries(i, i + 1)[0].payload
        if payload and b"translog.erasure" in payload:
            return i
    raise AssertionError("no erasure entry")


async def test_subject_erasure_hold_and_permissions(aiohttp_client: ClientFactory) -> None:
    env = await start_events(aiohttp_client)
    await submit_events(env, make_events(150))
    reader = env.auth("acme")
    await env.client.get(
        "/events/search", params={"tenant": "acme", "actor": "alice"}, headers=reader
    )
    from translog.http.search import flush

    await flush(env.app)
    alice_acme = [
        i for i, e in enumerate(env.sent) if e["tenant"] == "acme" and e["actor"]["id"] == "alice"
    ]
    alice_globex = [
        i for i, e in enumerate(env.sent) if e["tenant"] == "globex" and e["actor"]["id"] == "alice"
    ]
    assert alice_acme and alice_globex
    # a token of another tenant, or without admin, may not erase
    await _post(
        env,
        "/admin/erase",
        {"tenant": "acme", "subject": "alice", "reason": "x"},
        env.auth("globex", scopes=("admin",)),
        403,
    )
    await _post(env, "/admin/erase", {"index": 0, "reason": "x"}, env.auth("*"), 403)
    admin = env.auth("acme", "translog", scopes=("admin", "read"))
    # a legal hold on alice blocks it, naming the hold
    hold = await _post(
        env,
        "/admin/holds",
        {"name": "case-7", "tenant": "acme", "subject": "alice", "reason": "SEC"},
        admin,
    )
    assert _event_at(env, hold["entry"])["action"] == "translog.hold.set"
    resp = await env.client.post(
        "/admin/erase",
        data=json.dumps({"tenant": "acme", "subject": "alice", "reason": "dsr"}),
        headers=admin,
    )
    assert resp.status == 409 and "case-7" in (await resp.json())["reason"]
    listed = await (await env.client.get("/admin/holds", headers=admin)).json()
    assert [h["name"] for h in listed["holds"]] == ["case-7"]
    released = await env.client.delete("/admin/holds/case-7", headers=admin)
    assert released.status == 200
    body = await _post(
        env, "/admin/erase", {"tenant": "acme", "subject": "alice", "reason": "DSR 2026-118"}, admin
    )
    erasure = _event_at(env, body["erasure_entry"])
    assert erasure["action"] == "translog.erasure.subject"
    assert "alice" not in json.dumps(erasure)  # the subject is named by hash only
    for i in alice_acme:
        assert env.log.entries(i, i + 1)[0].payload is None
    for i in alice_globex:
        assert env.log.entries(i, i + 1)[0].payload is not None
    # the self-audit record of the search for alice went too
    searched = [
        i
        for i in range(env.log.size)
        if (p := env.log.entries(i, i + 1)[0]) is not None
        and p.payload is None
        and i >= len(env.sent)
    ]
    assert searched, "the search naming alice was not erased"
    _fsck_ok(env)
    # malformed requests
    for bad, reason in [
        ({"reason": "x"}, "index: missing"),
        ({"index": -1, "reason": "x"}, "index"),
        ({"index": 0}, "reason"),
        ({"index": 0, "reason": "x", "colour": 1}, "colour"),
    ]:
        resp = await env.client.post("/admin/erase", data=json.dumps(bad), headers=admin)
        assert resp.status == 400 and reason in (await resp.json())["reason"], bad
    resp = await env.client.post("/admin/erase", data=b"{", headers=admin)
    assert resp.status == 400


async def test_retention_by_category_respects_holds(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_events(
        aiohttp_client,
        retention="hipaa",
        retention_by_category={"configuration": "soc2"},
        retention_interval_s=0,
    )
    await submit_events(env, make_events(80))
    admin = env.auth("*", scopes=("admin",))
    nothing = await _post(env, "/admin/retention/run", {}, admin)
    assert nothing["erased"] == 0
    await _post(
        env, "/admin/holds", {"name": "globex-audit", "tenant": "globex", "reason": "audit"}, admin
    )
    import translog.http.admin_events as admin_events

    real_now = admin_events.now_ms()
    monkeypatch.setattr(admin_events, "now_ms", lambda: real_now + 400 * 86_400_000)
    swept = await _post(env, "/admin/retention/run", {}, admin)
    config_acme = [
        i
        for i, e in enumerate(env.sent)
        if e["category"] == "configuration" and e["tenant"] == "acme"
    ]
    assert swept["erased"] == len(config_acme) and swept["by_category"] == {
        "configuration": len(config_acme)
    }
    assert swept["held"] > 0  # globex configuration events are held
    for i, e in enumerate(env.sent):
        gone = env.log.entries(i, i + 1)[0].payload is None
        assert gone == (i in config_acme), (i, e["category"], e["tenant"])
    sweep = _event_at(env, swept["entry"])
    assert sweep["action"] == "translog.retention.sweep"
    assert sweep["details"]["periods_days"]["configuration"] == 366
    assert sweep["details"]["periods_days"]["authentication"] == 6 * 366
    _fsck_ok(env)


async def test_erased_disk_space_is_reused(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    env = await _lmdb_env(aiohttp_client, tmp_path)
    storage = env.log.storage
    assert isinstance(storage, LMDBStorage)

    def big(n: int, seed: int) -> list[dict[str, Any]]:
        return [
            build_event(
                "file.upload",
                actor=("user", f"u{seed}"),
                category="data_access",
                tenant="acme",
                service="files",
                details={"blob": "x" * 16_000},
                event_id=f"big-{seed}-{i}",
            )
            for i in range(n)
        ]

    await submit_events(env, big(200, 1))
    used_full = storage.raw_env().info()["last_pgno"]
    admin = env.auth("*", scopes=("admin",))
    await _post(env, "/admin/erase", {"indexes": list(range(200)), "reason": "space"}, admin)
    await submit_events(env, big(200, 2))
    used_after = storage.raw_env().info()["last_pgno"]
    # 200 more 16 KB payloads fit in the pages the erased ones freed: the file barely grows
    assert used_after < used_full * 1.2, (used_full, used_after)
    assert evindex.indexed_size(storage) == env.log.size
