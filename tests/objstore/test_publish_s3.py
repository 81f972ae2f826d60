"""Publication to a real RADOS Gateway: the bucket alone serves the tlog-tiles read path."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.objstore.conftest import Gateway, until
from translog.client import LogClient
from translog.config import Config, LogSection, ObjectStoreSection, PublisherSection
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.core.tiles import TileRef
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.objstore import ObjectStoreRole
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.publish import layout
from translog.publish.store import S3Store
from translog.storage.memory import MemoryStorage


def _config(signer: NoteSigner, url: str, private_url: str, endpoint: str) -> Config:
    return Config(
        log=LogSection(origin=signer.name),
        publisher=PublisherSection(interval_ms=50),
        objstore=ObjectStoreSection(url=url, private_url=private_url, endpoint=endpoint),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _head(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return {k.lower(): v for k, v in resp.headers.items()}


async def test_bucket_alone_serves_the_read_path(
    rgw: Gateway, signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    bucket = rgw.bucket(public_prefix="pub")
    public = S3Store(bucket, "pub", rgw.settings())
    private = S3Store(bucket, "private", rgw.settings())
    config = _config(signer, f"s3://{bucket}/pub", f"s3://{bucket}/private", rgw.endpoint)
    tokens = TokenStore()
    token = tokens.create("t", ("submit", "read"))
    app = make_app(
        config,
        storage=MemoryStorage(),
        signer=signer,
        tree_head_signer=TreeHeadSigner.generate(),
        tokens=tokens,
    )
    role = ObjectStoreRole(config, public, private, None)
    role.attach(app)
    client = await aiohttp_client(app)
    log: Log = app[LOG]
    auth = {"Authorization": f"Bearer {token}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    # 700 entries: full and partial tiles at level 0, a partial at level 1, in several rounds.
    for i in range(7):
        body = json.dumps([_b64(f'{{"n": {i * 100 + k}}}'.encode()) for k in range(100)])
        resp = await client.post("/add-batch?kind=committed", data=body, headers=json_auth)
        assert resp.status == 200, await resp.text()
    assert role.publisher is not None
    publisher = role.publisher
    await until(lambda: log.published is not None and log.published.size == 700)
    await until(lambda: publisher.store_size == 700)
    assert publisher.lag_entries == 0

    base = f"{rgw.endpoint}/{bucket}/pub"
    # Anonymous GETs, with the read path's headers.
    cp_headers = _head(f"{base}/checkpoint")
    assert cp_headers["content-type"] == layout.CHECKPOINT_TYPE
    assert cp_headers["cache-control"] == "public, max-age=1"
    ref = TileRef(0, 1, 256)
    tile_headers = _head(f"{base}/{ref.path}")
    assert tile_headers["content-type"] == "application/octet-stream"
    assert tile_headers["cache-control"] == "public, max-age=31536000, immutable"
    served = await client.get(f"/{ref.path}")
    assert tile_headers["cache-control"] == served.headers["Cache-Control"]
    # The private prefix is not readable anonymously.
    with pytest.raises(urllib.error.HTTPError) as denied:
        _head(f"{rgw.endpoint}/{bucket}/private/checkpoints/{700:020d}")
    assert denied.value.code == 403

    async with LogClient(base, signer.vkey, state_path=tmp_path / "state.json") as reader:
        cp = await reader.checkpoint()
        assert cp.size == 700
        leaves = await reader.leaves(0, 700, checkpoint=cp)
        assert len(leaves) == 700
        proof = await reader.prove(523)
        assert proof.index == 523
        # Growth: a new checkpoint is checked for consistency against the state file.
        resp = await client.post("/add", data=b'{"late": true}', headers=auth)
        assert resp.status == 200
        await until(lambda: publisher.store_size == 701)
        assert (await reader.checkpoint()).size == 701

    # `translog audit` (the monitor's auditor) recomputes the whole tree from the bucket.
    audit = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "translog",
        "audit",
        base,
        "--vkey",
        signer.vkey,
        "-q",
        "--evidence-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(audit.communicate(), timeout=60)
    assert audit.returncode == 0, (out + err).decode()
    assert b"701" in out + err

    # Payloads went to the private prefix only; the bundle decodes to the stored payloads.
    payloads = layout.decode_payloads(private.get(layout.payloads_key(TileRef(0, 0, 256))).body)  # type: ignore[union-attr]
    stored = log.entries(0, 256)
    assert [(p[0], p[1]) for p in payloads] == [(e.salt, e.payload) for e in stored]
    assert not [k for k in public.list("") if "payload" in k or k.startswith("checkpoints")]
    await client.close()
    assert publisher.store_size == log.published.size  # type: ignore[union-attr]
