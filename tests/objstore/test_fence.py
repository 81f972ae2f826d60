"""The object store fences what a writer shows: receipts, /checkpoint and get-sth carry only
checkpoints the store accepted by its conditional PUT, never one merely signed locally."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.objstore.conftest import until
from tests.objstore.test_directory import FaultyStore, store_app
from translog.config import Config, LogSection, ObjectStoreSection, PublisherSection
from translog.core.signing import NoteSigner
from translog.formats.batch import Batch
from translog.formats.receipt import verify_receipt
from translog.http.app import make_app
from translog.http.keys import LOG
from translog.http.multiprocess.fastpath import FastPath
from translog.log.requests import SubmitRequest
from translog.log.sequencer import Log
from translog.log.tokens import TokenInfo, TokenStore
from translog.publish import layout
from translog.publish.store import DirectoryStore
from translog.storage.memory import MemoryStorage

Client = TestClient[web.Request, web.Application]


class AcceptingStore(FaultyStore):
    """A :class:`FaultyStore` that records every checkpoint body the store accepted."""

    def __init__(self, root: Path) -> None:
        super().__init__(DirectoryStore(root))
        self.accepted: list[bytes] = []

    def put(self, key: str, body: bytes, **kw: Any) -> str:
        etag = super().put(key, body, **kw)
        if key == layout.CHECKPOINT_KEY:
            self.accepted.append(body)
        return etag


async def _serve(
    signer: NoteSigner, store: AcceptingStore, aiohttp_client: Any
) -> tuple[Client, Log, dict[str, str]]:
    tokens = TokenStore()
    auth = {"Authorization": f"Bearer {tokens.create('alice', ('submit', 'read'))}"}
    app, _ = store_app(signer, store, None, tokens)
    client = await aiohttp_client(app)
    return client, app[LOG], auth


async def _add(client: Client, auth: dict[str, str], body: bytes, **h: str) -> tuple[int, Any]:
    resp = await client.post("/add?wait=durable", data=body, headers={**auth, **h})
    return resp.status, (await resp.json(), resp.headers)


async def test_durable_receipts_and_checkpoint_carry_only_store_checkpoints(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    store = AcceptingStore(tmp_path / "www")
    client, log, auth = await _serve(signer, store, aiohttp_client)
    assert log.fenced
    answers = await asyncio.gather(*(_add(client, auth, b"e%d" % i) for i in range(12)))
    for i, (status, (receipt, _)) in enumerate(answers):
        assert status == 200, receipt
        assert receipt["checkpoint"].encode() in store.accepted
        verify_receipt(receipt, signer.vkey, b"e%d" % i)
    note = await (await client.get("/checkpoint")).read()
    assert note in store.accepted
    sth = await (await client.get("/ct/v1/get-sth", headers=auth)).json()
    assert sth["tree_size"] == log.published.size  # type: ignore[union-attr]
    assert log.published is not None and log.published.note in store.accepted


async def test_a_store_that_refuses_writes_gets_503_not_a_local_checkpoint(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    store = AcceptingStore(tmp_path / "www")
    client, log, auth = await _serve(signer, store, aiohttp_client)
    status, (first, _) = await _add(client, auth, b"before")
    assert status == 200
    store.failing = True
    key = {"Idempotency-Key": "k-1"}
    status, (body, headers) = await _add(client, auth, b"during", **key)
    assert status == 503, body
    assert "accepted by the object store" in body["reason"] and headers["Retry-After"]
    # The entry is durable and signed locally, but nothing shown is newer than the store.
    local = log.local_published
    assert local is not None and local.size == 2
    assert log.published is not None and log.published.size == 1
    assert await (await client.get("/checkpoint")).read() == store.accepted[-1]
    store.failing = False
    status, (again, _) = await _add(client, auth, b"during", **key)
    assert status == 200 and again["duplicate"] and again["index"] == 1
    assert again["checkpoint"].encode() in store.accepted
    verify_receipt(again, signer.vkey, b"during")
    assert first["checkpoint"].encode() in store.accepted


async def test_a_checkpoint_replaced_by_another_writer_fences_this_one(
    signer: NoteSigner, aiohttp_client: Any, tmp_path: Path
) -> None:
    """The zombie leader: the new leader's checkpoint replaced ours, so our next conditional
    PUT fails; from then on we show nothing new, and receipts are 503."""
    store = AcceptingStore(tmp_path / "www")
    client, log, auth = await _serve(signer, store, aiohttp_client)
    assert (await _add(client, auth, b"mine"))[0] == 200
    shown = await (await client.get("/checkpoint")).read()
    store.inner.put(
        layout.CHECKPOINT_KEY,
        b"another writer's checkpoint\n",
        content_type=layout.CHECKPOINT_TYPE,
        cache_control=layout.CHECKPOINT_CACHE,
    )
    status, (body, _) = await _add(client, auth, b"after the takeover")
    assert status == 503, body
    await until(lambda: log.local_published is not None and log.local_published.size == 2)
    assert await (await client.get("/checkpoint")).read() == shown
    assert log.published is not None and log.published.size == 1


async def test_without_a_store_durable_receipts_need_no_publication(
    signer: NoteSigner, aiohttp_client: Any
) -> None:
    config = Config(
        log=LogSection(origin=signer.name), publisher=PublisherSection(interval_ms=60_000)
    )
    tokens = TokenStore()
    auth = {"Authorization": f"Bearer {tokens.create('alice', ('submit',))}"}
    app = make_app(config, storage=MemoryStorage(), signer=signer, tokens=tokens)
    client = await aiohttp_client(app)
    status, (receipt, _) = await asyncio.wait_for(_add(client, auth, b"x"), 5)
    assert status == 200 and receipt["index"] == 0 and not app[LOG].fenced
    published = app[LOG].published
    assert published is not None and published.size == 0


class _Hub:
    """What the fast path calls on its hub; records which way a request went."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, kind: str, request: SubmitRequest) -> list[Any]:
        self.calls.append(kind)
        return [200, json.dumps({"via": kind}).encode()]


async def test_workers_send_every_submission_to_the_log_process_with_a_store() -> None:
    hub = _Hub()
    config = Config(objstore=ObjectStoreSection(url="file:///unused"))
    fast = FastPath(config, hub)  # type: ignore[arg-type]
    token = TokenInfo("alice", "", ("submit",), 0)
    answer = await fast.submit(SubmitRequest(token, Batch([b"plain"]), wait="durable"))
    assert json.loads(answer.body) == {"via": "submit"} and hub.calls == ["submit"]
    assert not FastPath(Config(), hub).fenced  # type: ignore[arg-type]
