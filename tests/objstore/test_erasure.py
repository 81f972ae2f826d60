"""Erasure reaches the object store: published payload bundles are rewritten without the payload,
durably queued across a crash, and a rebuild from the store gives the entry as erased."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.events.helpers import make_events
from tests.objstore.conftest import until
from translog.cli.command import main
from translog.config import EventsSection, ObjectStoreSection, PublisherSection, format_config
from translog.core.merkle import leaf_hash, verify_inclusion
from translog.formats.event_builder import encode_event
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.objstore import prepare
from translog.log.datadir import init_data_dir, open_data_dir
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.publish import layout
from translog.publish.publisher import Publisher
from translog.publish.store import DirectoryStore, ObjectStore
from translog.storage.lmdb import LMDBStorage

TARGET = 50


def _write_config(path: Path, store: dict[str, Any]) -> None:
    data_dir = open_data_dir(path)
    config = replace(
        data_dir.config,
        objstore=ObjectStoreSection(**store),
        publisher=PublisherSection(interval_ms=50),
        events=EventsSection(enabled=True),
    )
    (path / "translog.toml").write_text(format_config(config))


def _private_objects(private: ObjectStore) -> dict[str, bytes]:
    out = {}
    for key in private.list("payloads/"):
        obj = private.get(key)
        assert obj is not None
        out[key] = obj.body
    return out


async def publish_erase_rebuild(
    aiohttp_client: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    store: dict[str, Any],
    private: ObjectStore,
) -> None:
    """Publish 300 events (several partial bundles), erase one, check the store, rebuild."""
    first = tmp_path / "first"
    init_data_dir(first, "erase.example/log")
    _write_config(first, store)
    data_dir = open_data_dir(first)
    storage = data_dir.open_storage()
    role = prepare(data_dir.config, first, storage, data_dir.signer.vkey, standby=False)
    assert role is not None
    tokens = TokenStore()
    submit = tokens.create("s", ("submit",))
    admin = tokens.create("a", ("admin", "read"), tenants=("*",))
    app = make_app(
        data_dir.config,
        storage=storage,
        signer=data_dir.signer,
        tree_head_signer=data_dir.tree_head_signer,
        tokens=tokens,
    )
    role.attach(app)
    assert role.publisher is not None
    publisher = role.publisher
    client = await aiohttp_client(app)
    log: Log = app[LOG]
    events = make_events(300)
    for part in (events[:100], events[100:]):
        body = b"\n".join(b'"' + base64.b64encode(encode_event(e)) + b'"' for e in part)
        resp = await client.post(
            "/add-batch",
            data=body,
            headers={"Authorization": f"Bearer {submit}", "Content-Type": "application/x-ndjson"},
        )
        assert resp.status == 200, await resp.text()
        await until(lambda n=log.size: publisher.store_size == n)
    entry = log.entries(TARGET, TARGET + 1)[0]
    assert entry.salt is not None and entry.payload is not None
    secret, salt = entry.payload, entry.salt
    before = _private_objects(private)
    # The entry sits in a partial bundle of width 100 and in the full bundle of tile 0.
    holding = sorted(k for k, v in before.items() if secret in v)
    assert holding == ["payloads/000", "payloads/000.p/100"], holding

    resp = await client.post(
        "/admin/erase",
        data=json.dumps({"index": TARGET, "reason": "GDPR art. 17"}),
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["erased"] == 1
    await until(lambda: not storage.pending_rewrites() and publisher.store_size == log.size)
    after = _private_objects(private)
    for key, body in after.items():
        assert secret not in body and salt not in body, key
    assert publisher.rewrites >= 2
    for key in holding:
        records = layout.decode_payloads(after[key])
        assert records[TARGET] == (None, None, True)
        # Every other entry is untouched.
        old = layout.decode_payloads(before[key])
        assert [r for i, r in enumerate(records) if i != TARGET] == [
            r for i, r in enumerate(old) if i != TARGET
        ]
    size = log.size
    original = log.entries(0, size)
    await client.close()

    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "translog.toml", second / "translog.toml")
    shutil.copytree(first / "keys", second / "keys")
    capsys.readouterr()
    assert main(["rebuild", "--data", str(second), "--from", store["url"], "-q"]) == 0
    out = capsys.readouterr().out
    assert f"size 0 -> {size}, {size} entries" in out
    assert (
        f"payloads: {size - 1} restored, 0 not in the store, "
        "0 rejected (commitment mismatch), 1 erased" in out
    ), out
    assert main(["fsck", "--data", str(second), "-q"]) == 0
    assert capsys.readouterr().out.startswith(f"fsck ok: size {size}: {size} entries")
    rebuilt_dir = open_data_dir(second)
    rebuilt = rebuilt_dir.open_storage()
    try:
        got = rebuilt.get_entries(0, size)
        assert got[TARGET].salt is None and got[TARGET].payload is None
        assert got[TARGET].leaf == original[TARGET].leaf
        assert got == original
        new_log = Log(rebuilt, rebuilt_dir.config.log.origin, rebuilt_dir.signer)
        await new_log.start()
        try:
            cp = await new_log.publish()
            proof = new_log.inclusion_proof(TARGET, cp.size)
            verify_inclusion(leaf_hash(got[TARGET].leaf), TARGET, cp.size, proof, cp.root_hash)
        finally:
            await new_log.close()
    finally:
        rebuilt.close()


async def test_erasure_rewrites_directory_payload_bundles_and_rebuild_keeps_it_erased(
    aiohttp_client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = {"url": str(tmp_path / "pub"), "private_url": str(tmp_path / "private")}
    await publish_erase_rebuild(
        aiohttp_client, tmp_path, capsys, store, DirectoryStore(tmp_path / "private")
    )


async def test_an_erasure_before_a_crash_is_rewritten_on_the_next_start(tmp_path: Path) -> None:
    from translog.core.signing import NoteSigner

    signer = NoteSigner.generate("crash.example/log")
    public, private = DirectoryStore(tmp_path / "pub"), DirectoryStore(tmp_path / "private")
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 24)
    log = Log(storage, signer.name, signer)
    await log.start()
    for k in range(20):
        await log.append(b"payload-%03d-secret" % k, committed=True)
    cp = await log.publish()
    assert cp is not None
    publisher = Publisher(log, signer.vkey, public, private)
    publisher.load_store_state()
    publisher.publish_now(cp)
    publisher.shutdown()
    key = "payloads/000.p/20"
    assert b"payload-007-secret" in (private.get(key) or pytest.fail()).body
    # Erase, then "crash": nothing publishes, the process ends.
    assert storage.index_write(erase=[7]) == 1
    await log.close()
    storage.close()

    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 24)
    assert storage.pending_rewrites() == [(0, 1)]
    log = Log(storage, signer.name, signer)
    await log.start()
    publisher = Publisher(log, signer.vkey, public, private)
    await publisher.start()
    try:
        await until(lambda: not storage.pending_rewrites())
    finally:
        await publisher.close()
        await log.close()
    body = (private.get(key) or pytest.fail()).body
    assert b"payload-007-secret" not in body and b"payload-008-secret" in body
    assert layout.decode_payloads(body)[7] == (None, None, True)
    assert publisher.rewrites == 1
    storage.close()
