"""Several logs in one process, freezing, and the published log list."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.objstore.conftest import ROOT
from translog.client import LogClient
from translog.config import format_config
from translog.formats.loglist import current_log, parse_log_list
from translog.http.shards import ShardSpec, build_shards_app, load_shards
from translog.log.datadir import init_data_dir, open_data_dir
from translog.log.tokens import TokenStore


def _make(path: Path, origin: str, max_batch: int) -> tuple[str, str]:
    init_data_dir(path, origin)
    config = open_data_dir(path).config
    config = replace(config, server=replace(config.server, max_batch_entries=max_batch))
    (path / "translog.toml").write_text(format_config(config))
    token = TokenStore(path / "tokens.json").create("t", ("submit", "read"))
    return open_data_dir(path).signer.vkey, token


async def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "translog",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_two_logs_one_process_then_rotation(aiohttp_client: Any, tmp_path: Path) -> None:
    old_vkey, old_token = _make(tmp_path / "h1", "shard.example/2026h1", 5)
    new_vkey, new_token = _make(tmp_path / "h2", "shard.example/2026h2", 100)
    shards_file = tmp_path / "shards.toml"
    shards_file.write_text(
        'listen = "127.0.0.1:0"\n[[log]]\nname = "2026h1"\ndata = "h1"\n'
        '[[log]]\nname = "2026h2"\ndata = "h2"\n'
    )
    listen, specs = load_shards(shards_file)
    assert specs == [ShardSpec("2026h1", tmp_path / "h1"), ShardSpec("2026h2", tmp_path / "h2")]

    app, _ = build_shards_app(specs)
    client = await aiohttp_client(app)
    base = str(client.make_url("")).rstrip("/")
    batch = json.dumps([base64.b64encode(b"x%d" % i).decode() for i in range(10)])
    auth_old = {"Authorization": f"Bearer {old_token}", "Content-Type": "application/json"}
    auth_new = {"Authorization": f"Bearer {new_token}", "Content-Type": "application/json"}
    # Each log has its own limits and its own tokens.
    assert (await client.post("/2026h1/add-batch", data=batch, headers=auth_old)).status == 413
    assert (await client.post("/2026h2/add-batch", data=batch, headers=auth_new)).status == 200
    assert (await client.post("/2026h2/add", data=b"x", headers=auth_old)).status == 401
    async with LogClient(f"{base}/2026h1", old_vkey, token=old_token) as c1:
        for n in range(3):
            await c1.submit(f"first half {n}".encode())
    async with LogClient(f"{base}/2026h2", new_vkey) as c2:
        await asyncio.sleep(1.2)  # a published checkpoint covering the batch
        assert (await c2.checkpoint()).size == 10
    await client.close()

    rc, out, err = await _cli("freeze", "--data", str(tmp_path / "h1"), "--successor", "2026h2")
    assert rc == 0, err
    assert out.startswith("froze shard.example/2026h1 at size 3")
    rc, _, err = await _cli("freeze", "--data", str(tmp_path / "h1"))
    assert rc == 1 and "already frozen" in err

    app, _ = build_shards_app(specs)
    client = await aiohttp_client(app)
    base = str(client.make_url("")).rstrip("/")
    resp = await client.post("/2026h1/add", data=b"late", headers=auth_old)
    assert resp.status == 409
    assert "frozen at size 3" in (await resp.json())["reason"]
    assert "successor is 2026h2" in (await resp.json())["reason"]
    listing = await client.get("/logs.json")
    logs = parse_log_list(await listing.read(), f"{base}/logs.json")
    assert [(x.name, x.state) for x in logs] == [("2026h1", "frozen"), ("2026h2", "active")]
    assert logs[0].final_checkpoint is not None and logs[0].final_checkpoint.size == 3
    assert current_log(logs, "2026h1").origin == "shard.example/2026h2"
    async with LogClient(logs[0].url, logs[0].vkey) as c1:
        assert (await c1.checkpoint()).size == 3  # reads go on
        await c1.prove(2)
    rc, out, err = await _cli("logs", "--url", f"{base}/logs.json", "--check")
    assert rc == 0, err
    assert "2026h1  frozen  shard.example/2026h1" in out
    assert "final size 3, successor 2026h2" in out
    assert "ok: 2026h2 serves a verified checkpoint of size 10" in out
    await client.close()
    del listen
