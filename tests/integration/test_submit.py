"""In-process tests of the write API: POST /add and /add-batch, receipts, promises, every error.

Every receipt is checked offline with ``translog.formats.receipt.verify_receipt`` and the log's
vkey,
and against the stored tree. Errors are checked for their status, JSON body and a reason that
names what failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from translog.config import Config, LogSection, PublisherSection, SequencerSection, ServerSection
from translog.core.ct import TreeHeadSigner
from translog.core.leaf import (
    KIND_COMMITTED,
    KIND_INLINE,
    MAX_INLINE_PAYLOAD,
    decode_leaf,
    inline_leaf,
)
from translog.core.merkle import (
    MemoryHashes,
    leaf_hash,
    prove_inclusion,
    tree_hash,
    verify_inclusion,
)
from translog.core.range_proof import inclusion_proofs_from_range
from translog.core.signing import NoteSigner
from translog.errors import StorageError, StorageFullError
from translog.formats.receipt import parse_receipt, verify_promise, verify_receipt
from translog.http.app import make_app
from translog.http.keys import LOG, METRICS, SUBMISSIONS
from translog.log.requests import scope_key
from translog.log.sequencer import Log, now_ms
from translog.log.submission import ProofNodes
from translog.log.tokens import TokenStore
from translog.metrics import Metrics
from translog.storage.base import NewEntry, PromisedEntry, WriteBatch
from translog.storage.memory import MemoryStorage

ORIGIN = "submit.example/log"
NDJSON = {"Content-Type": "application/x-ndjson"}
JSON = {"Content-Type": "application/json"}
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Env:
    """A running app, its client, its tokens and the objects the tests check against."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    signer: NoteSigner
    tokens: dict[str, str]

    @property
    def log(self) -> Log:
        return self.app[LOG]

    @property
    def metrics(self) -> Metrics:
        return self.app[METRICS]

    def auth(self, name: str = "alice", **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}", **headers}

    async def post(
        self, path: str, data: Any = b"", *, token: str | None = "alice", **headers: str
    ) -> tuple[int, Any, Any]:
        """POST and return (status, decoded JSON body, headers)."""
        h = self.auth(token, **headers) if token else headers
        resp = await self.client.post(path, data=data, headers=h)
        text = await resp.text()
        assert resp.content_type == "application/json", text
        return resp.status, json.loads(text), resp.headers

    async def error(
        self, status: int, path: str, data: Any = b"", *, token: str | None = "alice", **h: str
    ) -> str:
        """POST, assert the error status and JSON shape, and return the reason."""
        got, body, _ = await self.post(path, data, token=token, **h)
        assert got == status, body
        assert set(body) == {"error", "reason"}, body
        reason: str = body["reason"]
        return reason


@pytest.fixture
def make_env(
    aiohttp_client: ClientFactory, signer: NoteSigner, tree_head_signer: TreeHeadSigner
) -> Callable[..., Awaitable[Env]]:
    async def make(
        *,
        max_pending: int = 100_000,
        merge_delay_ms: int = 5_000,
        storage: MemoryStorage | None = None,
        **server: Any,
    ) -> Env:
        store = TokenStore()
        tokens = {
            "alice": store.create("alice", ("submit", "read")),
            "bob": store.create("bob", ("submit",)),
            "reader": store.create("reader", ("read",)),
            "slow": store.create("slow", ("submit",), rate_per_s=1.0),
            "gone": store.create("gone", ("submit",)),
        }
        store.revoke("gone")
        config = Config(
            log=LogSection(origin=signer.name),
            sequencer=SequencerSection(max_pending=max_pending),
            publisher=PublisherSection(interval_ms=50, max_merge_delay_ms=merge_delay_ms),
            server=ServerSection(**server),
        )
        app = make_app(
            config,
            storage=storage if storage is not None else MemoryStorage(),
            signer=signer,
            tree_head_signer=tree_head_signer,
            tokens=store,
        )
        client = await aiohttp_client(app)
        return Env(client, app, signer, tokens)

    return make


@pytest.fixture
async def env(make_env: Callable[..., Awaitable[Env]]) -> Env:
    return await make_env()


def check_stored(env: Env, receipt: dict[str, Any]) -> None:
    """Every receipt entry is in the stored tree at its index, provable to the current root."""
    parsed = parse_receipt(receipt)
    storage = env.log.storage
    size = storage.size()
    root = tree_hash(size, storage)
    for e in parsed.entries:
        assert storage.get_entries(e.index, e.index + 1)[0].leaf == e.leaf
        proof = prove_inclusion(e.index, size, storage)
        verify_inclusion(e.leaf_hash, e.index, size, proof, root)


# -- single entries ------------------------------------------------------------------------------


async def test_add_returns_a_receipt_that_verifies_offline(env: Env) -> None:
    status, body, headers = await env.post("/add", b"hello world")
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert body["format"] == "translog-receipt/v1"
    assert set(body) == {
        "format",
        "index",
        "leaf",
        "leaf_hash",
        "timestamp",
        "salt",
        "duplicate",
        "inclusion_proof",
        "checkpoint",
    }
    verify_receipt(body, env.signer.vkey, b"hello world")
    assert decode_leaf(base64.b64decode(body["leaf"])).kind == KIND_COMMITTED
    assert body["duplicate"] is False
    check_stored(env, body)
    with pytest.raises(Exception, match="do not match the leaf commitment"):
        verify_receipt(body, env.signer.vkey, b"hello world!")


async def test_receipts_carry_a_batch_checkpoint_and_a_proof_to_it(env: Env) -> None:
    bodies = [(await env.post("/add", b"%d" % i))[1] for i in range(5)]
    assert [b["index"] for b in bodies] == [0, 1, 2, 3, 4]
    for i, body in enumerate(bodies):
        verify_receipt(body, env.signer.vkey, b"%d" % i)
        assert body["checkpoint"].split("\n")[1] == str(i + 1)
        # The newest leaf's path has one left sibling per 1-bit of its index (RFC 9162).
        assert len(body["inclusion_proof"]) == i.bit_count()


async def test_inline_kind_puts_the_payload_in_the_leaf(env: Env) -> None:
    status, body, _ = await env.post("/add?kind=inline", b"inline payload")
    assert status == 200
    assert "salt" not in body
    leaf = decode_leaf(base64.b64decode(body["leaf"]))
    assert leaf.kind == KIND_INLINE and leaf.payload == b"inline payload"
    verify_receipt(body, env.signer.vkey, b"inline payload")


async def test_empty_payload_is_legitimate_data(env: Env) -> None:
    for kind in ("inline", "committed"):
        status, body, _ = await env.post(f"/add?kind={kind}", b"")
        assert status == 200, body
        verify_receipt(body, env.signer.vkey, b"")


async def test_any_content_type_is_a_payload(env: Env) -> None:
    data = bytes(range(256))
    status, body, _ = await env.post("/add", data, **{"Content-Type": "image/png"})
    assert status == 200
    verify_receipt(body, env.signer.vkey, data)


async def test_default_inline_commits_payloads_too_large_for_a_leaf(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(default_kind="inline")
    _, small, _ = await env.post("/add", b"small")
    assert "salt" not in small
    big = b"x" * (MAX_INLINE_PAYLOAD + 1)
    status, body, _ = await env.post("/add", big)
    assert status == 200
    assert "salt" in body
    verify_receipt(body, env.signer.vkey, big)
    status, body, _ = await env.post("/add", b"y" * MAX_INLINE_PAYLOAD)
    assert "salt" not in body, "a payload that fits the leaf stays inline"


# -- batches ---------------------------------------------------------------------------------


def payloads(n: int, tag: str = "p") -> list[bytes]:
    return [f"{tag}-{i}".encode() * (1 + i % 3) for i in range(n)]


async def test_batch_ndjson_of_1200_entries_verifies(env: Env) -> None:
    await env.post("/add", b"first")  # the run does not start at 0
    data = payloads(1200)
    lines = [
        json.dumps(b64(p)) if i % 2 else json.dumps({"payload_b64": b64(p)})
        for i, p in enumerate(data)
    ]
    status, body, _ = await env.post("/add-batch", "\n".join(lines) + "\n", **NDJSON)
    assert status == 200, body
    assert set(body) == {"format", "checkpoint", "entries", "range_proof"}
    assert body["range_proof"]["start"] == 1 and body["range_proof"]["end"] == 1201
    assert [e["index"] for e in body["entries"]] == list(range(1, 1201))
    assert all("inclusion_proof" not in e for e in body["entries"])
    verify_receipt(body, env.signer.vkey, payloads=data)
    check_stored(env, body)
    # A client derives standard inclusion proofs from the range proof.
    parsed = parse_receipt(body)
    size = int(body["checkpoint"].split("\n")[1])
    rp = parsed.range_proof
    assert rp is not None
    derived = inclusion_proofs_from_range(
        rp.start, rp.end, size, [e.leaf_hash for e in parsed.entries], rp.nodes
    )
    for e, proof in zip(parsed.entries, derived, strict=True):
        assert proof == prove_inclusion(e.index, size, env.log.storage)


async def test_ndjson_plain_and_escaped_strings_agree(env: Env) -> None:
    body = '"aGk="\n"aG\\u006b="\n{"payload_b64": "aGk="}\r\n'
    status, receipt, _ = await env.post("/add-batch?kind=inline", body, **NDJSON)
    assert status == 200, receipt
    verify_receipt(receipt, env.signer.vkey, payloads=[b"hi", b"hi", b"hi"])


async def test_batch_json_array_of_1000_entries_verifies(env: Env) -> None:
    data = payloads(1000, "json")
    status, body, _ = await env.post("/add-batch", json.dumps([b64(p) for p in data]), **JSON)
    assert status == 200, body
    assert len(body["entries"]) == 1000
    verify_receipt(body, env.signer.vkey, payloads=data)


async def test_batch_kind_inline_and_committed(env: Env) -> None:
    data = payloads(3)
    _, body, _ = await env.post(
        "/add-batch?kind=inline", json.dumps([b64(p) for p in data]), **JSON
    )
    assert all("salt" not in e for e in body["entries"])
    verify_receipt(body, env.signer.vkey, payloads=data)
    _, body, _ = await env.post("/add-batch", json.dumps([b64(p) for p in data]), **JSON)
    assert all("salt" in e for e in body["entries"])


async def test_batch_mixing_sizes_keeps_timestamps_ordered(
    make_env: Callable[..., Awaitable[Env]],
) -> None:
    env = await make_env(default_kind="inline")
    data = [b"a", b"b" * (MAX_INLINE_PAYLOAD + 5), b"c", b"d" * (MAX_INLINE_PAYLOAD + 1), b"e"]
    _, body, _ = await env.post("/add-batch", json.dumps([b64(p) for p in data]), **JSON)
    kinds = ["salt" in e for e in body["entries"]]
    assert kinds == [False, True, False, True, False]
    stamps = [e["timestamp"] for e in body["entries"]]
    assert stamps == sorted(stamps)
    verify_receipt(body, env.signer.vkey, payloads=data)


async def test_batch_duplicates_outside_the_run_carry_inclusion_proofs(env: Env) -> None:
    _, first, _ = await env.post("/add", b"old", **{"Idempotency-Key": "k-old"})
    for i in range(3):
        await env.post("/add", b"filler %d" % i)
    entries = [
        {"payload_b64": b64(b"new 0")},
        {"payload_b64": b64(b"other"), "idempotency_key": "k-old"},
        {"payload_b64": b64(b"new 1"), "idempotency_key": "k-new"},
        {"payload_b64": b64(b"again"), "idempotency_key": "k-new"},
    ]
    status, body, _ = await env.post("/add-batch", json.dumps(entries), **JSON)
    assert status == 200, body
    got = body["entries"]
    assert [e["index"] for e in got] == [4, first["index"], 5, 5]
    assert [e["duplicate"] for e in got] == [False, True, False, True]
    assert body["range_proof"]["start"] == 4 and body["range_proof"]["end"] == 6
    assert [("inclusion_proof" in e) for e in got] == [False, True, False, False]
    assert got[1]["leaf"] == first["leaf"] and got[1]["salt"] == first["salt"]
    verify_receipt(body, env.signer.vkey, payloads=[b"new 0", b"old", b"new 1", b"new 1"])
    assert env.log.storage.size() == 6
    assert env.metrics.value("translog_duplicates_total") == 2


async def test_retried_batch_is_all_duplicates_and_still_one_range(env: Env) -> None:
    entries = [{"payload_b64": b64(b"%d" % i), "idempotency_key": f"r{i}"} for i in range(10)]
    _, first, _ = await env.post("/add-batch", json.dumps(entries), **JSON)
    await env.post("/add", b"between")
    _, again, _ = await env.post("/add-batch", json.dumps(entries), **JSON)
    assert [e["index"] for e in again["entries"]] == [e["index"] for e in first["entries"]]
    assert all(e["duplicate"] for e in again["entries"])
    assert again["range_proof"]["start"] == 0 and again["range_proof"]["end"] == 10
    verify_receipt(again, env.signer.vkey)
    assert env.log.storage.size() == 11


# -- idempotency -----------------------------------------------------------------------------


async def test_same_key_gives_the_same_entry(env: Env) -> None:
    key = {"Idempotency-Key": "order-42"}
    _, a, _ = await env.post("/add", b"payload", **key)
    _, b, _ = await env.post("/add", b"payload retried", **key)
    assert a["index"] == b["index"] and a["leaf"] == b["leaf"]
    assert (a["duplicate"], b["duplicate"]) == (False, True)
    verify_receipt(b, env.signer.vkey, b"payload")
    assert env.log.storage.size() == 1


async def test_concurrent_same_key_gives_one_entry(env: Env) -> None:
    key = {"Idempotency-Key": "race"}
    results = await asyncio.gather(*(env.post("/add", b"x%d" % i, **key) for i in range(8)))
    assert {r[1]["index"] for r in results} == {0}
    assert sorted(r[1]["duplicate"] for r in results) == [False] + [True] * 7
    assert env.log.storage.size() == 1


async def test_keys_are_scoped_by_token(env: Env) -> None:
    _, a, _ = await env.post("/add", b"same", **{"Idempotency-Key": "k"})
    _, b, _ = await env.post("/add", b"same", token="bob", **{"Idempotency-Key": "k"})
    assert a["index"] != b["index"]
    assert not b["duplicate"]
    assert env.log.storage.lookup_dedupe(scope_key("alice", "k")) == a["index"]
    assert env.log.storage.lookup_dedupe(scope_key("bob", "k")) == b["index"]
    assert scope_key("alice", "k") != scope_key("bob", "k")


@pytest.mark.parametrize(
    "key", ["", "x" * 256, "tab\there", "é"], ids=["empty", "too-long", "control", "non-ascii"]
)
async def test_bad_idempotency_keys(env: Env, key: str) -> None:
    resp = await env.client.post(
        "/add", data=b"x", headers=env.auth(**{"Idempotency-Key": key.encode().decode("latin-1")})
    )
    assert resp.status == 400
    assert "Idempotency-Key header: must be 1-255 printable ASCII" in (await resp.json())["reason"]


async def test_batch_rejects_the_idempotency_header(env: Env) -> None:
    reason = await env.error(
        400, "/add-batch", json.dumps(["aGk="]), **JSON, **{"Idempotency-Key": "k"}
    )
    assert "give each entry an idempotency_key" in reason


# -- wait modes ------------------------------------------------------------------------------


async def test_wait_published_carries_a_published_checkpoint(env: Env) -> None:
    status, body, _ = await env.post("/add?wait=published", b"published")
    assert status == 200
    verify_receipt(body, env.signer.vkey, b"published")
    note = body["checkpoint"].encode()
    history = [c.note for c in env.log.storage.checkpoints()]
    latest = env.log.storage.latest_checkpoint()
    assert note in history or (latest is not None and latest.note == note)
    _, batch, _ = await env.post("/add-batch?wait=published", json.dumps(["aGk="] * 3), **JSON)
    verify_receipt(batch, env.signer.vkey)


async def test_durable_receipt_checkpoint_is_not_the_published_one(env: Env) -> None:
    # Receipts never wait for the interval: the batch checkpoint is signed at commit.
    _, body, _ = await env.post("/add", b"fast")
    published = env.log.published
    assert published is None or published.note != body["checkpoint"].encode()


async def wait_for_watchers(env: Env) -> None:
    watchers = set(env.app[SUBMISSIONS].promises.watchers)
    if watchers:
        await asyncio.wait(watchers, timeout=10)


async def test_wait_0_promise_verifies_and_is_kept(env: Env) -> None:
    status, body, _ = await env.post("/add?wait=0", b"promised")
    assert status == 202
    assert body["format"] == "translog-promise/v1"
    assert body["deadline"] == body["timestamp"] + 5_000
    verify_promise(body, env.signer.vkey)
    await wait_for_watchers(env)
    index = env.log.storage.find_leaf_hash(base64.b64decode(body["leaf_hash"]))
    assert index is not None
    assert env.metrics.value("translog_promises_total") == 1
    assert env.metrics.value("translog_promises_broken_total") == 0
    with pytest.raises(Exception, match="signature"):
        verify_promise(body, NoteSigner.generate(ORIGIN).vkey)


async def test_wait_0_with_a_repeated_key_promises_the_first_leaf(env: Env) -> None:
    key = {"Idempotency-Key": "p-1"}
    _, first, _ = await env.post("/add?wait=0", b"one", **key)
    _, second, _ = await env.post("/add?wait=0", b"two", **key)  # still in flight or durable
    assert second["leaf_hash"] == first["leaf_hash"] and second["duplicate"] is True
    await wait_for_watchers(env)
    _, third, _ = await env.post("/add?wait=0", b"three", **key)  # durable by now
    assert third["leaf_hash"] == first["leaf_hash"] and third["duplicate"] is True
    verify_promise(third, env.signer.vkey)
    assert env.log.storage.size() == 1
    assert env.metrics.value("translog_promises_broken_total") == 0


async def test_wait_0_key_shared_with_an_inflight_durable_request(env: Env) -> None:
    key = {"Idempotency-Key": "mixed"}
    durable = asyncio.ensure_future(env.post("/add", b"durable", **key))
    await asyncio.sleep(0)
    results = await asyncio.gather(durable, env.post("/add?wait=0", b"promise", **key))
    receipt, promise = results[0][1], results[1][1]
    assert promise["leaf_hash"] == receipt["leaf_hash"]
    await wait_for_watchers(env)
    assert env.log.storage.size() == 1
    assert env.metrics.value("translog_promises_broken_total") == 0


async def test_wait_0_batch_returns_a_promise_per_entry(env: Env) -> None:
    entries = [{"payload_b64": b64(b"%d" % i), "idempotency_key": f"b{i % 4}"} for i in range(10)]
    status, body, _ = await env.post("/add-batch?wait=0", json.dumps(entries), **JSON)
    assert status == 202
    assert list(body) == ["promises"] and len(body["promises"]) == 10
    for p in body["promises"]:
        verify_promise(p, env.signer.vkey)
    assert [p["duplicate"] for p in body["promises"]] == [False] * 4 + [True] * 6
    await wait_for_watchers(env)
    assert env.log.storage.size() == 4
    for p in body["promises"]:
        assert env.log.storage.find_leaf_hash(base64.b64decode(p["leaf_hash"])) is not None
    assert env.metrics.value("translog_promises_broken_total") == 0


async def test_no_promise_without_a_durable_record(env: Env) -> None:
    storage = env.log.storage
    assert isinstance(storage, MemoryStorage)
    storage.fail_next = "full"  # the promise record itself cannot be written
    status, _, _ = await env.post("/add?wait=0", b"doomed")
    assert status == 507
    assert env.metrics.value("translog_promises_total") == 0


async def test_promise_is_recorded_before_it_is_given(env: Env) -> None:
    storage = env.log.storage
    assert isinstance(storage, MemoryStorage)
    before = storage.appends
    status, body, _ = await env.post("/add?wait=0", b"kept")
    assert status == 202
    recorded = [p.entry.leaf for p in storage.promised()] + [
        e.leaf for e in storage.get_entries(0, storage.size())
    ]
    assert base64.b64decode(body["leaf"]) in recorded
    await wait_for_watchers(env)
    assert storage.appends > before and storage.promised() == []


async def test_broken_promises_are_counted(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = env.log.storage
    assert isinstance(storage, MemoryStorage)

    def refuse(batch: object) -> None:
        raise StorageError("injected: the disk failed")

    monkeypatch.setattr(storage, "append", refuse)
    status, _, _ = await env.post("/add?wait=0", b"doomed")
    assert status == 202  # the promise was recorded durably, then sequencing failed
    await wait_for_watchers(env)
    assert env.metrics.value("translog_promises_broken_total") == 1
    assert len(storage.promised()) == 1  # still recorded: a restart re-sequences it


async def test_promises_are_kept_through_a_full_disk(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch refused for lack of space keeps its promised entries and retries them."""
    storage = env.log.storage
    assert isinstance(storage, MemoryStorage)
    real = storage.append
    calls: list[object] = []

    def full_once(batch: Any) -> None:
        calls.append(batch)
        if len(calls) == 1:
            raise StorageFullError("injected: no space left on device")
        real(batch)

    monkeypatch.setattr(storage, "append", full_once)
    status, body, _ = await env.post("/add?wait=0", b"kept")
    assert status == 202
    await wait_for_watchers(env)
    assert len(calls) >= 2
    assert env.metrics.value("translog_promises_broken_total") == 0
    assert storage.promised() == []
    assert storage.find_leaf_hash(base64.b64decode(body["leaf_hash"])) is not None


async def test_retry_of_a_promise_left_by_a_crash_is_promised_the_recovered_leaf(
    make_env: Callable[..., Awaitable[Env]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after a promise was recorded but before its answer reached the client: the
    client retries with the same key while the restarted log is still sequencing the
    recovered entry. The retry must be promised the recovered leaf, which is the one the log
    keeps, not a new leaf the sequencer then drops as a duplicate (a broken promise: its leaf
    hash would never be in the tree). The crash harness once counted such a retry as lost.
    """
    storage = MemoryStorage()
    recovered = inline_leaf(now_ms() - 1_000, b"promised before the crash")
    key = scope_key("alice", "retried-promise")
    storage.put_promised([PromisedEntry(0, key, NewEntry(recovered))])
    # Hold the restarted log's first batch (the recovered entry) until the retry is answered.
    gate = threading.Event()
    real_append = storage.append

    def held_append(batch: WriteBatch) -> None:
        gate.wait(10)
        real_append(batch)

    monkeypatch.setattr(storage, "append", held_append)
    env = await make_env(storage=storage, merge_delay_ms=60_000)
    retry = asyncio.ensure_future(
        env.post(
            "/add?wait=0", b"promised before the crash", **{"Idempotency-Key": "retried-promise"}
        )
    )
    try:
        # Until the retry is answered, or (the bug) enqueued as a new entry behind the gate.
        while not retry.done() and env.log.stats["submitted"] == 0:
            await asyncio.sleep(0.01)
        assert storage.size() == 0, "the recovered entry must still be in flight"
    finally:
        gate.set()
    status, promise, _ = await retry
    assert status == 202
    verify_promise(promise, env.signer.vkey)
    assert base64.b64decode(promise["leaf"]) == recovered, "promised a leaf the log then drops"
    assert promise["duplicate"] is True
    await wait_for_watchers(env)
    while storage.size() == 0:
        await asyncio.sleep(0.01)
    assert storage.size() == 1 and storage.promised() == []
    assert storage.find_leaf_hash(base64.b64decode(promise["leaf_hash"])) == 0
    assert env.metrics.value("translog_promises_broken_total") == 0
    # A durable retry of the same key gets a receipt for the same entry.
    status, receipt, _ = await env.post("/add", b"again", **{"Idempotency-Key": "retried-promise"})
    assert status == 200 and receipt["index"] == 0 and receipt["duplicate"] is True
    assert env.log.requeued(key) is None


# -- authentication and scopes ---------------------------------------------------------------


async def test_no_token_is_401(env: Env) -> None:
    resp = await env.client.post("/add", data=b"x")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["reason"] == "missing bearer token"


@pytest.mark.parametrize("header", ["Bearer tl_nope", "Basic YWxpY2U6cHc=", "Bearer "])
async def test_bad_token_is_401(env: Env, header: str) -> None:
    resp = await env.client.post("/add-batch", data=b"x", headers={"Authorization": header})
    assert resp.status == 401


async def test_revoked_token_is_401(env: Env) -> None:
    assert "revoked" in await env.error(401, "/add", b"x", token="gone")


async def test_token_without_submit_scope_is_403(env: Env) -> None:
    reason = await env.error(403, "/add", b"x", token="reader")
    assert reason == "token 'reader' lacks the 'submit' scope"


# -- limits ----------------------------------------------------------------------------------


async def test_body_too_large_is_413(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_body_bytes=1000, max_payload_bytes=1000)
    reason = await env.error(413, "/add", b"x" * 1001)
    assert reason == "request body of 1001 bytes exceeds the 1000-byte limit"

    async def chunks() -> Any:
        for _ in range(11):
            yield b"y" * 100

    resp = await env.client.post("/add", data=chunks(), headers=env.auth())
    assert resp.status == 413
    assert "exceeds the 1000-byte limit" in (await resp.json())["reason"]
    assert env.log.storage.size() == 0


async def test_payload_too_large_is_413(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_payload_bytes=100)
    reason = await env.error(413, "/add", b"x" * 101)
    assert reason == "payload: payload of 101 bytes exceeds the 100-byte limit"
    body = "\n".join([json.dumps(b64(b"ok")), json.dumps(b64(b"z" * 101))])
    reason = await env.error(413, "/add-batch", body, **NDJSON)
    assert reason.startswith("line 2: payload of 101 bytes")
    assert env.log.storage.size() == 0


async def test_inline_too_large_is_413(env: Env) -> None:
    big = b"x" * (MAX_INLINE_PAYLOAD + 1)
    reason = await env.error(413, "/add?kind=inline", big)
    assert "65526 bytes exceeds the 65525-byte leaf limit; use kind=committed" in reason
    reason = await env.error(413, "/add-batch?kind=inline", json.dumps(["", b64(big)]), **JSON)
    assert reason.startswith("element 1: inline payload")


async def test_batch_too_large_is_413(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_batch_entries=1000)
    ok = await env.post("/add-batch", json.dumps(["aGk="] * 1000), **JSON)
    assert ok[0] == 200
    reason = await env.error(413, "/add-batch", json.dumps(["aGk="] * 1001), **JSON)
    assert reason == "batch of 1001 entries exceeds the limit of 1000"
    reason = await env.error(413, "/add-batch", "\n".join(['"aGk="'] * 1001), **NDJSON)
    assert reason == "batch holds more than 1000 entries (line 1001)"


async def test_full_pool_is_503_with_retry_after(make_env: Callable[..., Awaitable[Env]]) -> None:
    env = await make_env(max_pending=5)
    got, body, headers = await env.post("/add-batch", json.dumps(["aGk="] * 6), **JSON)
    assert got == 503, body
    assert body["error"] == "pushback" and "pending pool is full" in body["reason"]
    assert int(headers["Retry-After"]) >= 1
    assert env.metrics.value("translog_submissions_rejected_total", reason="pushback") == 1


async def test_rate_limit_is_429_with_retry_after(env: Env) -> None:
    assert (await env.post("/add", b"1", token="slow"))[0] == 200
    got, body, headers = await env.post("/add", b"2", token="slow")
    assert got == 429
    assert body == {
        "error": "rate_limited",
        "reason": "token 'slow' is limited to 1 entries per second",
    }
    assert int(headers["Retry-After"]) >= 1
    assert (await env.post("/add", b"3", token="bob"))[0] == 200, "other tokens are not limited"


# -- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("wait=1", "wait: expected durable, published or 0, got '1'"),
        ("wait=", "wait: expected durable, published or 0, got ''"),
        ("kind=raw", "kind: expected committed or inline, got 'raw'"),
        ("wait=0&wait=durable", "wait: given 2 times"),
        ("token=secret", "unknown query parameter 'token'; use wait or kind"),
    ],
)
async def test_bad_query_is_400(env: Env, query: str, reason: str) -> None:
    assert await env.error(400, f"/add?{query}", b"x") == reason
    assert await env.error(400, f"/add-batch?{query}", b'["aGk="]', **JSON) == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (
            '"aGk="\n"aGk="\n{"payload_b64": \n',
            "line 3: invalid JSON: Expecting value at column 16",
        ),
        ('"aGk="\n"not base64!"\n', "line 2: payload_b64 is not valid base64"),
        ('{"payload_b64": "aGk=", "extra": 1}\n', "line 1: unknown field 'extra'"),
        ('{"idempotency_key": "k"}\n', "line 1: payload_b64 must be a base64 string"),
        (
            '{"payload_b64": "aGk=", "idempotency_key": 7}\n',
            "line 1: idempotency_key must be a string",
        ),
        ("42\n", "line 1: expected a base64 string or an object with payload_b64"),
        ("\n\n  \n", "batch holds no entries"),
        ("", "batch holds no entries"),
        ('"aGk="\n\xff\n', "line 2: not valid UTF-8 at byte 0"),
        ("[" * 100_000 + "\n", "line 1: JSON nested too deeply"),
    ],
)
async def test_malformed_ndjson_is_400(env: Env, body: str, reason: str) -> None:
    data = body.encode("latin-1") if "\xff" in body else body.encode()
    assert await env.error(400, "/add-batch", data, **NDJSON) == reason
    assert env.log.storage.size() == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('{"entries": []}', "body: expected a JSON array of entries"),
        ("[", "body: invalid JSON: Expecting value at line 1 column 2"),
        ("[]", "batch holds no entries"),
        ('["aGk=", "aGk=", "a"]', "element 2: payload_b64 is not valid base64"),
        ('["aGk=", null]', "element 1: expected a base64 string or an object with payload_b64"),
        (
            '[{"payload_b64": "aGk=", "idempotency_key": ""}]',
            "element 0: idempotency_key: must be 1-255 printable ASCII characters",
        ),
    ],
)
async def test_malformed_json_is_400(env: Env, body: str, reason: str) -> None:
    assert await env.error(400, "/add-batch", body, **JSON) == reason


async def test_unsupported_batch_content_type_is_415(env: Env) -> None:
    reason = await env.error(415, "/add-batch", "aGk=", **{"Content-Type": "text/plain"})
    assert "add-batch takes application/x-ndjson or application/json" in reason


@pytest.mark.parametrize("path", ["/add", "/add-batch"])
async def test_wrong_method_is_405_json(env: Env, path: str) -> None:
    resp = await env.client.get(path)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert (await resp.json())["error"] == "method_not_allowed"


async def test_truncated_and_garbage_bodies_never_cause_500(env: Env) -> None:
    valid = "\n".join(json.dumps({"payload_b64": b64(b"entry %d" % i)}) for i in range(20))
    rng = random.Random(6962)
    bodies = [valid.encode()[:cut] for cut in range(0, len(valid), 7)]
    bodies += [rng.randbytes(rng.randrange(1, 200)) for _ in range(60)]
    bodies += [valid.encode().replace(b'"', b"", k) for k in range(1, 6)]
    statuses = set()
    for i, data in enumerate(bodies):
        ctype = NDJSON if i % 2 else JSON
        resp = await env.client.post("/add-batch", data=data, headers=env.auth(**ctype))
        statuses.add(resp.status)
        assert resp.status in (200, 400), (data, await resp.text())
    assert statuses == {200, 400}


async def test_truncated_body_on_the_wire_does_not_break_the_server(env: Env) -> None:
    server = env.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        "POST /add HTTP/1.1\r\nHost: test\r\n"
        f"Authorization: Bearer {env.tokens['alice']}\r\nContent-Length: 100\r\n\r\n"
    )
    writer.write(head.encode() + b"x" * 50)
    writer.write_eof()
    assert b"500" not in await reader.read()
    writer.close()
    status, body, _ = await env.post("/add", b"after")
    assert status == 200 and body["index"] == 0, "the truncated entry was never submitted"


# -- metrics ---------------------------------------------------------------------------------


async def test_metrics_count_submissions_and_rejections(env: Env) -> None:
    await env.post("/add", b"a")
    await env.post("/add?wait=0", b"b")
    await env.post("/add-batch", '["aGk="]', **JSON)
    await env.post("/add", b"c", token=None)
    await env.post("/add", b"d", token="reader")
    m = env.metrics
    assert m.value("translog_submissions_total", mode="single", wait="durable") == 1
    assert m.value("translog_submissions_total", mode="single", wait="0") == 1
    assert m.value("translog_submissions_total", mode="batch", wait="durable") == 1
    assert m.value("translog_submissions_rejected_total", reason="unauthorized") == 1
    assert m.value("translog_submissions_rejected_total", reason="forbidden") == 1
    assert m.histograms["translog_receipt_seconds"].count == 2
    text = m.render()
    assert 'translog_submissions_rejected_total{reason="forbidden"} 1' in text
    assert env.tokens["alice"] not in text
    await wait_for_watchers(env)


# -- receipt proof nodes ---------------------------------------------------------------------


def test_proof_nodes_serve_what_the_storage_holds_across_evictions() -> None:
    tree = MemoryHashes(leaf_hash(b"%d" % i) for i in range(300))
    nodes = ProofNodes(tree, limit=8)  # tiny, so it is emptied between and within proofs
    for size in (1, 2, 7, 64, 255, 300):
        for index in range(0, size, 3):
            assert prove_inclusion(index, size, nodes) == prove_inclusion(index, size, tree)
