"""`translog rebuild --from s3://…` on a fresh data directory, then fsck, then the log goes on."""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.objstore.conftest import Gateway, until
from tests.objstore.test_erasure import publish_erase_rebuild
from translog.cli.command import main
from translog.config import ObjectStoreSection, PublisherSection, format_config
from translog.core.leaf import decode_leaf
from translog.core.merkle import leaf_hash, verify_consistency, verify_inclusion
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.objstore import prepare
from translog.log.datadir import init_data_dir, open_data_dir
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.publish.store import S3Store


def _write_config(path: Path, **objstore: Any) -> None:
    data_dir = open_data_dir(path)
    config = replace(
        data_dir.config,
        objstore=ObjectStoreSection(**objstore),
        publisher=PublisherSection(interval_ms=50),
    )
    (path / "translog.toml").write_text(format_config(config))


def _rgw_store(rgw: Gateway, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """A fresh bucket (public prefix ``pub``) and the ``[objstore]`` settings for it."""
    for k, v in rgw.env().items():
        monkeypatch.setenv(k, v)
    bucket = rgw.bucket(public_prefix="pub")
    return bucket, {
        "url": f"s3://{bucket}/pub",
        "private_url": f"s3://{bucket}/private",
        "endpoint": rgw.endpoint,
        "lease_ttl_ms": 4000,
        "lease_renew_ms": 1000,
    }


async def test_rebuild_from_rgw_then_fsck_then_carry_on(
    rgw: Gateway,
    aiohttp_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, store = _rgw_store(rgw, monkeypatch)
    first = tmp_path / "first"
    init_data_dir(first, "rebuild.example/log")
    _write_config(first, **store)
    data_dir = open_data_dir(first)
    storage = data_dir.open_storage()
    role = prepare(data_dir.config, first, storage, data_dir.signer.vkey, standby=False)
    assert role is not None and role.lease is not None
    tokens = TokenStore()
    token = tokens.create("t", ("submit", "read"))
    app = make_app(
        data_dir.config,
        storage=storage,
        signer=data_dir.signer,
        tree_head_signer=data_dir.tree_head_signer,
        tokens=tokens,
    )
    role.attach(app)
    client = await aiohttp_client(app)
    log: Log = app[LOG]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    checkpoints = []
    for batch in range(6):  # 1,500 entries: committed and inline, several checkpoints
        kind = "inline" if batch % 3 == 2 else "committed"
        body = [base64.b64encode(f"ev {batch}-{k}".encode()).decode() for k in range(250)]
        resp = await client.post(f"/add-batch?kind={kind}", data=json.dumps(body), headers=headers)
        assert resp.status == 200, await resp.text()
        await until(
            lambda n=(batch + 1) * 250: log.published is not None and log.published.size == n
        )
        checkpoints.append(log.published)
    assert role.publisher is not None
    publisher = role.publisher
    await until(lambda: publisher.store_size == 1500)
    original = log.entries(0, 1500)
    history = [(c.size, c.note) for c in storage.checkpoints()]
    await client.close()  # drains, uploads the final checkpoint, releases the lease

    # A fresh machine: the operator brings the config and the keys, nothing else.
    second = tmp_path / "second"
    second.mkdir()
    shutil.copy(first / "translog.toml", second / "translog.toml")
    shutil.copytree(first / "keys", second / "keys")
    capsys.readouterr()
    rc = main(["rebuild", "--data", str(second), "--from", f"s3://{bucket}/pub", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "size 0 -> 1500, 1500 entries" in out
    assert "payloads: 1000 restored, 0 not in the store, 0 rejected" in out
    rc = main(["fsck", "--data", str(second), "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and out.startswith("fsck ok: size 1500: 1500 entries")

    rebuilt_dir = open_data_dir(second)
    rebuilt = rebuilt_dir.open_storage()
    assert rebuilt.get_entries(0, 1500) == original
    assert [(c.size, c.note) for c in rebuilt.checkpoints()] == history
    # The rebuilt log carries on: new entries, and every old proof still holds.
    new_log = Log(rebuilt, rebuilt_dir.config.log.origin, rebuilt_dir.signer)
    await new_log.start()
    try:
        appended = await new_log.append(b"after the rebuild")
        assert appended.index == 1500
        cp = await new_log.publish()
        for old in checkpoints:
            proof = new_log.consistency_proof(old.size, cp.size)
            verify_consistency(old.size, cp.size, old.root_hash, cp.root_hash, proof)
        for index in (0, 777, 1499):
            entry = original[index]
            proof = new_log.inclusion_proof(index, cp.size)
            verify_inclusion(leaf_hash(entry.leaf), index, cp.size, proof, cp.root_hash)
        assert decode_leaf(new_log.entries(1500, 1501)[0].leaf).kind == 1
    finally:
        await new_log.close()


async def test_erasure_rewrites_rgw_payload_bundles_and_rebuild_keeps_it_erased(
    rgw: Gateway,
    aiohttp_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bucket, store = _rgw_store(rgw, monkeypatch)
    private = S3Store(bucket, "private", rgw.settings())
    await publish_erase_rebuild(aiohttp_client, tmp_path, capsys, store, private)
