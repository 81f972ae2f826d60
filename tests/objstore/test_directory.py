"""Publication to a directory served by nginx, and a store that fails or stalls."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.objstore.conftest import Nginx, until
from translog.client import LogClient
from translog.config import Config, LogSection, ObjectStoreSection, PublisherSection
from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.core.tiles import TileRef
from translog.errors import ObjectStoreError
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.objstore import ObjectStoreRole
from translog.log.sequencer import Log
from translog.log.tokens import TokenStore
from translog.publish import layout
from translog.publish.store import DirectoryStore, ObjectStore, StoredObject
from translog.storage.memory import MemoryStorage


class FaultyStore:
    """A real store that can be made to fail or to stall every write (a failing network)."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.url = inner.url
        self.failing = False
        self.open = threading.Event()
        self.open.set()
        self.puts = 0

    def put(self, key: str, body: bytes, **kw: Any) -> str:
        self.open.wait(timeout=30)
        if self.failing:
            raise ObjectStoreError(f"{self.url}: put {key!r} failed: HTTP 503 SlowDown")
        self.puts += 1
        return self.inner.put(key, body, **kw)

    def get(self, key: str) -> StoredObject | None:
        return self.inner.get(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def store_app(
    signer: NoteSigner,
    public: ObjectStore,
    private: ObjectStore | None,
    tokens: TokenStore | None = None,
    **o: Any,
) -> tuple[web.Application, ObjectStoreRole]:
    """An app over a memory log publishing to ``public`` (publisher interval 50 ms)."""
    config = Config(
        log=LogSection(origin=signer.name),
        publisher=PublisherSection(interval_ms=50),
        objstore=ObjectStoreSection(url="file:///unused", **o),
    )
    app = make_app(
        config,
        storage=MemoryStorage(),
        signer=signer,
        tree_head_signer=TreeHeadSigner.generate(),
        tokens=tokens,
    )
    role = ObjectStoreRole(config, public, private, None)
    role.attach(app)
    return app, role


async def test_directory_behind_nginx_serves_the_read_path(
    signer: NoteSigner,
    aiohttp_client: Any,
    tmp_path: Path,
    nginx_factory: Callable[[Path], Nginx],
) -> None:
    root = tmp_path / "www"
    app, role = store_app(signer, DirectoryStore(root), DirectoryStore(tmp_path / "private"))
    await aiohttp_client(app)
    log: Log = app[LOG]
    for n in range(3):
        await log.submit([f"event {n}-{k}".encode() for k in range(300)])
    await until(lambda: log.published is not None and log.published.size == 900)
    assert role.publisher is not None
    publisher = role.publisher
    await until(lambda: publisher.store_size == 900)
    root.chmod(0o755)
    nginx = nginx_factory(root)
    with urllib.request.urlopen(nginx.url + "/checkpoint", timeout=5) as resp:
        assert resp.headers["Content-Type"] == layout.CHECKPOINT_TYPE
        assert resp.headers["Cache-Control"] == layout.CHECKPOINT_CACHE
    with urllib.request.urlopen(nginx.url + "/tile/entries/000", timeout=5) as resp:
        assert resp.headers["Cache-Control"] == layout.TILE_CACHE
    async with LogClient(nginx.url, signer.vkey, state_path=tmp_path / "state") as reader:
        cp = await reader.checkpoint()
        assert cp.size == 900
        assert len(await reader.leaves(250, 900, checkpoint=cp)) == 650
        await reader.prove(899)
        await log.submit([b"one more"])
        await until(lambda: publisher.store_size == 901)
        assert (await reader.checkpoint()).size == 901
    # Nothing private and no temporary file is in the public directory.
    names = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert "checkpoint" in names
    assert {n for n in names if n.startswith(".")} == {".translog-lock"}  # denied by nginx
    names -= {".translog-lock"}
    assert all(n == "checkpoint" or n.startswith("tile/") for n in names), names
    assert (tmp_path / "private" / layout.payloads_key(TileRef(0, 0, 256))).exists()


async def test_a_failing_store_never_blocks_sequencing_and_publication_catches_up(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    store = FaultyStore(DirectoryStore(tmp_path / "www"))
    app, role = store_app(signer, store, None, max_lag_ms=300)
    client = await aiohttp_client(app)
    log: Log = app[LOG]
    assert role.publisher is not None
    publisher = role.publisher
    await until(lambda: publisher.store_size == 0 and publisher.rounds >= 1)
    store.failing = True
    for n in range(20):  # sequencing and receipts go on while every upload fails
        result = await asyncio.wait_for(log.submit([f"e{n}".encode()]), timeout=2)
        assert result[0].index == n
    await until(lambda: publisher.failures >= 2)
    assert publisher.lag_entries == 20
    await until(lambda: publisher.lag_seconds > 0.3)
    health = await client.get("/healthz")
    assert health.status == 503
    reasons = (await health.json())["reasons"]
    assert any("object store publication is" in r and "SlowDown" in r for r in reasons), reasons
    metrics = await (await client.get("/metrics")).text()
    assert "translog_objstore_lag_entries 20" in metrics

    # A stalled store (requests hang) does not hold up the sequencer either.
    store.failing = False
    store.open.clear()
    for n in range(20, 30):
        await asyncio.wait_for(log.submit([f"e{n}".encode()]), timeout=2)
    store.open.set()
    await until(lambda: publisher.store_size == 30, timeout=40)
    assert publisher.lag_entries == 0
    assert (await client.get("/healthz")).status == 200
    note = (tmp_path / "www" / "checkpoint").read_bytes()
    assert note == log.published.note  # type: ignore[union-attr]


async def test_an_unpublished_tile_left_by_another_writer_is_replaced(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    # What a leader that lost its lease mid-round leaves: a tile no checkpoint refers to
    # (issue 18, scenario 2). It used to halt the new leader's publication for good.
    root = tmp_path / "www"
    tile = root / "tile" / "0" / "000.p" / "3"
    tile.parent.mkdir(parents=True)
    tile.write_bytes(bytes(96))
    app, role = store_app(signer, DirectoryStore(root), None)
    client = await aiohttp_client(app)
    log: Log = app[LOG]
    await log.submit([b"a", b"b", b"c"])
    assert role.publisher is not None
    publisher = role.publisher
    await until(lambda: publisher.store_size == 3)
    assert publisher.halted is None and publisher.replaced == 1
    assert tile.read_bytes() != bytes(96)
    health = await client.get("/healthz")
    assert health.status == 200
