"""`translog mirror`: follows a live log, verifies, republishes, serves; never copies bad data."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from translog.client import LogClient
from translog.config import Config, LogSection, PublisherSection
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.errors import StorageCorruptError, TileMismatchError, TranslogError
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.mirror import mirror_app
from translog.log.sequencer import Log
from translog.publish.mirror import Mirror
from translog.publish.store import DirectoryStore
from translog.storage.memory import MemoryStorage

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tamper(paths: set[str]) -> tuple[Any, dict[str, bool]]:
    switch = {"on": False}

    @web.middleware
    async def flip(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if switch["on"] and request.path in paths:
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            body = bytearray(resp.body)
            body[-1] ^= 0x01
            resp.body = bytes(body)
            resp.headers.pop("Content-Encoding", None)
        return resp

    return flip, switch


async def _source(signer: NoteSigner, aiohttp_client: Any, middleware: Any) -> tuple[Log, str]:
    config = Config(log=LogSection(origin=signer.name), publisher=PublisherSection(interval_ms=30))
    app = make_app(
        config, storage=MemoryStorage(), signer=signer, tree_head_signer=TreeHeadSigner.generate()
    )
    app.middlewares.insert(0, middleware)
    client = await aiohttp_client(app)
    return app[LOG], str(client.make_url("")).rstrip("/")


async def _fill(log: Log, n: int) -> None:
    await log.submit([f"entry {log.size + k}".encode() for k in range(n)])
    await log.publish()


async def test_mirror_follows_verifies_republishes_and_serves(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    flip, switch = _tamper({"/tile/0/002", "/tile/entries/003.p/32"})
    log, url = await _source(signer, aiohttp_client, flip)
    await _fill(log, 600)
    target = DirectoryStore(tmp_path / "copy")
    mirror = Mirror(url, signer.vkey, MemoryStorage(), tmp_path / "state", target=target)
    async with LogClient(url, signer.vkey, state_path=mirror.state_path) as source:
        assert await mirror.follow_once(source) == 600
        await _fill(log, 100)
        assert await mirror.follow_once(source) == 700
        copied = target.get("checkpoint")
        assert copied is not None and copied.body == log.published.note  # type: ignore[union-attr]

        # The mirror serves the read path of its verified copy; the client passes against it.
        served = await aiohttp_client(mirror_app(mirror))
        mirror_url = str(served.make_url("")).rstrip("/")
        async with LogClient(mirror_url, signer.vkey, state_path=tmp_path / "r") as reader:
            cp = await reader.checkpoint()
            assert cp.size == 700
            assert len(await reader.leaves(0, 700, checkpoint=cp)) == 700
            await reader.prove(650)

        # The source serves a bad tile and a bad bundle: nothing new is stored or published.
        await _fill(log, 100)
        switch["on"] = True
        with pytest.raises(TranslogError):
            await mirror.follow_once(source)
        assert mirror.published is not None and mirror.published.size == 700
        assert target.get("checkpoint") == copied
        assert (await served.get("/checkpoint")).status == 200
        assert mirror.size == 700  # the bad bundle never reached the storage
        switch["on"] = False
        assert await mirror.follow_once(source) == 800
        assert target.get("checkpoint").body == log.published.note  # type: ignore[union-attr]
    mirror.close()

    # The command: one verified round into its own data directory and a published directory.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "translog",
        "mirror",
        "--url",
        url,
        "--vkey",
        signer.vkey,
        "--data",
        str(tmp_path / "m"),
        "--to",
        str(tmp_path / "copy2"),
        "--once",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == f"mirrored {signer.name}: verified size 800"
    assert (tmp_path / "copy2" / "checkpoint").read_bytes() == log.published.note  # type: ignore[union-attr]


async def test_mirror_refuses_a_tile_that_does_not_match_the_entries(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    flip, switch = _tamper({"/tile/0/000"})
    log, url = await _source(signer, aiohttp_client, flip)
    await _fill(log, 300)
    switch["on"] = True
    target = DirectoryStore(tmp_path / "copy")
    mirror = Mirror(url, signer.vkey, MemoryStorage(), tmp_path / "state", target=target)
    async with LogClient(url, signer.vkey, state_path=mirror.state_path) as source:
        with pytest.raises(TileMismatchError, match="tile/0/000 differs"):
            await mirror.follow_once(source)
    assert mirror.published is None
    assert target.get("checkpoint") is None
    served = await aiohttp_client(mirror_app(mirror))
    resp = await served.get("/checkpoint")
    assert resp.status == 404
    assert await resp.json() == {"error": "not_found", "reason": "nothing verified yet"}
    resp = await served.get("/tile/0/000")
    assert resp.status == 404
    assert await resp.json() == {
        "error": "not_found",
        "reason": "tile tile/0/000 needs 256 leaves, tree size is 0",
    }
    resp = await served.get("/tile/0/0x0")
    assert resp.status == 400
    assert (await resp.json())["error"] == "malformed"
    mirror.close()


async def test_mirror_refuses_entries_that_do_not_hash_to_the_checkpoint(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    flip, switch = _tamper({"/tile/entries/000.p/10"})
    log, url = await _source(signer, aiohttp_client, flip)
    await _fill(log, 10)
    switch["on"] = True
    storage = MemoryStorage()
    mirror = Mirror(url, signer.vkey, storage, tmp_path / "state")
    async with LogClient(url, signer.vkey, state_path=mirror.state_path) as source:
        with pytest.raises(StorageCorruptError, match="nothing was written"):
            await mirror.follow_once(source)
    assert storage.size() == 0
    mirror.close()
