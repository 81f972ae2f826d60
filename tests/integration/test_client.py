"""``translog.client`` against in-process servers: verification, state file, rollback, fork.

Servers are ``make_app`` over ``MemoryStorage`` behind aiohttp's ``TestServer``. Misbehaving
logs are built from honest ones: a second app with the same signer and other entries (a fork),
a state file holding a larger checkpoint (a rollback), and outermost middlewares that flip
bytes in tiles or bundles, drop responses after the log processed them, or add cosignatures.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.logservers import ThreadedServer, build_app
from translog.client import LogClient, SyncLogClient, VerifiedCheckpoint
from translog.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.merkle import leaf_hash, prove_consistency, verify_consistency
from translog.core.policy import parse_policy
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.core.tiles import TileRef
from translog.core.vkey import parse_vkey
from translog.errors import (
    AuthError,
    InconsistencyError,
    MalformedError,
    NetworkError,
    NotFoundError,
    VerificationError,
)
from translog.formats.proof import format_proof, parse_proof, verify_proof
from translog.formats.receipt import verify_receipt
from translog.http.keys import LOG
from translog.log.sequencer import Log

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Env:
    """One running log server."""

    app: web.Application
    server: TestServer
    token: str

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def log(self) -> Log:
        return self.app[LOG]

    async def fill(self, n: int, tag: str = "e") -> None:
        """Append ``n`` inline entries and publish a checkpoint covering them."""
        payloads = [f"{tag}{i}".encode() for i in range(n)]
        await self.log.submit(payloads, committed=False)
        await self.log.publish()


@dataclass
class Servers:
    signer: NoteSigner
    started: list[TestServer] = field(default_factory=list)

    async def start(self, *, middlewares: Iterable[Any] = (), **server: Any) -> Env:
        app, token = build_app(self.signer, interval_ms=60_000, middlewares=middlewares, **server)
        ts = TestServer(app, host="127.0.0.1")
        await ts.start_server()
        self.started.append(ts)
        return Env(app, ts, token)


@pytest.fixture
async def servers(signer: NoteSigner) -> AsyncIterator[Servers]:
    s = Servers(signer)
    yield s
    for ts in s.started:
        await ts.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "client" / "state.json"


def client_for(env: Env, signer: NoteSigner, state: Path | None, **kw: Any) -> LogClient:
    return LogClient(
        env.url, signer.vkey, token=env.token, read_token=env.token, state_path=state, **kw
    )


def stored(state: Path, origin: str) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(state.read_text())["logs"][origin]
    return entry


# --------------------------------------------------------------------- honest round trips


async def test_checkpoint_verified_and_state_file_written_0600(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    await env.fill(5)
    async with client_for(env, signer, state) as client:
        cp = await client.checkpoint()
    assert isinstance(cp, VerifiedCheckpoint)
    assert (cp.size, cp.root_hash) == (5, env.log.root_at(5))
    assert cp.note == env.log.published.note  # type: ignore[union-attr]
    assert cp.cosigners == frozenset()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    entry = stored(state, signer.name)
    assert entry == {
        "size": 5,
        "root_hash": base64.b64encode(cp.root_hash).decode(),
        "note": cp.note.decode(),
    }
    assert not [p for p in state.parent.iterdir() if p.name.endswith(".tmp")]


async def test_checkpoint_with_a_wrong_key_is_rejected(servers: Servers) -> None:
    env = await servers.start()
    other = NoteSigner.generate(env.log.origin)
    async with LogClient(env.url, other.vkey) as client:
        with pytest.raises(VerificationError, match="no signature by log key"):
            await client.checkpoint()


async def test_submit_single_receipts_verified_and_stored(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    async with client_for(env, signer, state) as client:
        committed = await client.submit(b"alpha", kind="committed")
        inline = await client.submit(b"beta", kind="inline", idempotency_key="k-beta")
        again = await client.submit(b"beta", kind="inline", idempotency_key="k-beta")
    verify_receipt(committed, signer.vkey, b"alpha")
    assert committed.entries[0].salt is not None
    assert inline.entries[0].salt is None and decode_leaf(inline.entries[0].leaf).payload == b"beta"
    assert again.entries[0].duplicate and again.entries[0].index == inline.entries[0].index
    assert env.log.size == 2
    assert stored(state, signer.name)["size"] == 2  # the receipt's checkpoint was kept


async def test_submit_batch_and_promise_verified(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    payloads = [f"event {i}".encode() for i in range(40)]
    keys = [f"key-{i}" for i in range(40)]
    async with client_for(env, signer, state) as client:
        receipt = await client.submit_batch(payloads, idempotency_keys=keys)
        replay = await client.submit_batch(payloads, idempotency_keys=keys)
        promise = await client.promise(b"later", kind="inline")
        with pytest.raises(MalformedError, match="2 idempotency keys for 40 payloads"):
            await client.submit_batch(payloads, idempotency_keys=keys[:2])
    assert receipt.batch and [e.index for e in receipt.entries] == list(range(40))
    verify_receipt(receipt, signer.vkey, payloads=payloads)
    assert all(e.duplicate for e in replay.entries)
    assert decode_leaf(promise.leaf).payload == b"later"
    await env.log.publish()
    assert env.log.size == 41


async def test_tiles_and_ct_api_proofs_agree(servers: Servers, signer: NoteSigner) -> None:
    env = await servers.start()
    await env.fill(300)  # two level-0 tiles and a level-1 tile
    tiles_client = client_for(env, signer, None)
    ct_client = client_for(env, signer, None, use_ct_api=True)
    async with tiles_client, ct_client:
        cp = await tiles_client.checkpoint()
        for index in (0, 1, 255, 256, 299):
            lh = leaf_hash(env.log.entries(index, index + 1)[0].leaf)
            a = await tiles_client.inclusion_proof(index, 300, leaf_hash=lh, root_hash=cp.root_hash)
            b = await ct_client.inclusion_proof(index, 300, leaf_hash=lh, root_hash=cp.root_hash)
            assert a == b == env.log.inclusion_proof(index, 300)
        for old in (1, 7, 256, 257, 299):
            a = await tiles_client.consistency_proof(old, 300)
            b = await ct_client.consistency_proof(old, 300)
            assert a == b == env.log.consistency_proof(old, 300)


async def test_ct_api_client_checks_growth_with_get_sth_consistency(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.path)
        return await handler(request)

    env = await servers.start(middlewares=[record])
    await env.fill(3)
    async with client_for(env, signer, state, use_ct_api=True) as client:
        await client.checkpoint()
        await env.fill(4, "more")
        cp = await client.checkpoint()
    assert cp.size == 7
    assert "/ct/v1/get-sth-consistency" in seen
    assert not [p for p in seen if p.startswith("/tile/")]


async def test_leaves_entry_find_and_search_are_verified(
    servers: Servers, signer: NoteSigner
) -> None:
    env = await servers.start()
    await env.fill(260)
    async with client_for(env, signer, None) as client:
        committed = await client.submit(b"secret payload", kind="committed")
        await env.log.publish()
        cp = await client.checkpoint()
        leaves = await client.leaves(250, 261, checkpoint=cp)
        entry = await client.entry(260)
        found = await client.find_index(committed.entries[0].leaf_hash)
        middle_ts = decode_leaf(env.log.entries(200, 201)[0].leaf).timestamp_ms
        first = await client.first_index_at_or_after(middle_ts, checkpoint=cp)
        after_all = await client.first_index_at_or_after(2**62, checkpoint=cp)
        with pytest.raises(MalformedError, match=r"outside the checkpoint of size 261"):
            await client.leaves(0, 262, checkpoint=cp)
    assert leaves == [e.leaf for e in env.log.entries(250, 261)]
    assert entry["payload"] == b"secret payload" and entry["kind"] == "committed"
    assert entry["salt"] == committed.entries[0].salt and entry["erased"] is False
    assert found == 260
    timestamps = [decode_leaf(e.leaf).timestamp_ms for e in env.log.entries(0, 261)]
    assert first == timestamps.index(middle_ts) and after_all == 261


async def test_prove_gives_an_offline_verifiable_proof_file(
    servers: Servers, signer: NoteSigner
) -> None:
    env = await servers.start()
    await env.fill(20)
    async with client_for(env, signer, None) as client:
        proof = await client.prove(13)
    parsed = parse_proof(format_proof(proof))
    cp = verify_proof(parsed, parse_vkey(signer.vkey))
    assert cp.size == 20 and parsed.extra == env.log.entries(13, 14)[0].leaf


async def test_prove_waits_for_a_checkpoint_covering_a_fresh_entry(
    signer: NoteSigner,
) -> None:
    app, token = build_app(signer, interval_ms=100)
    ts = TestServer(app, host="127.0.0.1")
    await ts.start_server()
    try:
        url = str(ts.make_url("")).rstrip("/")
        async with LogClient(url, signer.vkey, token=token) as client:
            receipt = await client.submit(b"fresh")  # durable, not yet published
            proof = await client.prove(receipt.entries[0].index)
        verify_proof(proof, parse_vkey(signer.vkey))
    finally:
        await ts.close()


def request_counter() -> tuple[Any, dict[str, int]]:
    """A middleware counting requests per first path segment (``entries``, ``tile``, ...)."""
    counts: dict[str, int] = {}

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.path.strip("/").split("/")[0]
        counts[key] = counts.get(key, 0) + 1
        return await handler(request)

    return count, counts


async def test_entries_reads_a_verified_range_with_payloads(
    servers: Servers, signer: NoteSigner
) -> None:
    count, counts = request_counter()
    env = await servers.start(middlewares=[count])
    await env.fill(250)  # inline; the range below crosses into the second bundle
    committed = [f"secret {i}".encode() for i in range(20)]
    await env.log.submit(committed, committed=True)
    await env.log.publish()
    assert env.log.storage.erase_payload(260)
    async with client_for(env, signer, None) as client:
        cp = await client.checkpoint()
        counts.clear()
        entries = await client.entries(240, 270, checkpoint=cp)
        assert counts.get("checkpoint", 0) == 0  # no per-entry checkpoint fetch or proof
        assert counts["entries"] == 20  # only the committed entries are read
        singles = [await client.entry(i) for i in (245, 255, 260)]
        assert await client.entries(7, 7, checkpoint=cp) == []
        with pytest.raises(MalformedError, match="outside the checkpoint of size 270"):
            await client.entries(260, 271, checkpoint=cp)
    assert [e["index"] for e in entries] == list(range(240, 270))
    assert [e["leaf"] for e in entries] == [e.leaf for e in env.log.entries(240, 270)]
    assert entries[5] == singles[0] and entries[15] == singles[1] and entries[20] == singles[2]
    assert entries[0]["kind"] == "inline" and entries[0]["payload"] == b"e240"
    assert entries[0]["salt"] is None and entries[0]["erased"] is False
    assert entries[10]["kind"] == "committed" and entries[10]["payload"] == b"secret 0"
    assert entries[10]["salt"] == env.log.entries(250, 251)[0].salt
    assert entries[20]["payload"] is None and entries[20]["erased"] is True


async def test_entries_rejects_an_answer_for_another_leaf_and_a_refused_token(
    servers: Servers, signer: NoteSigner
) -> None:
    @web.middleware
    async def swap(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if request.path == "/entries/3":  # entry 4's answer, self-consistent, as entry 3's
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            other = request.app[LOG].entries(4, 5)[0]
            body = json.loads(resp.body)
            body["leaf"] = base64.b64encode(other.leaf).decode()
            body["leaf_hash"] = base64.b64encode(leaf_hash(other.leaf)).decode()
            body["timestamp"] = decode_leaf(other.leaf).timestamp_ms
            body["payload"] = base64.b64encode(other.payload or b"").decode()
            body["salt"] = base64.b64encode(other.salt or b"").decode()
            resp.body = json.dumps(body).encode()
        return resp

    env = await servers.start(middlewares=[swap])
    await env.log.submit([f"c{i}".encode() for i in range(6)], committed=True)
    await env.log.publish()
    async with client_for(env, signer, None) as client:
        with pytest.raises(VerificationError, match="entry 3: the log's answer holds another leaf"):
            await client.entries(0, 6)
    async with LogClient(env.url, signer.vkey) as anonymous:  # no read token
        with pytest.raises(AuthError, match="http 401"):
            await anonymous.entries(0, 2)
        assert len(await anonymous.leaves(0, 6)) == 6


async def test_prove_beyond_the_durable_size_fails_fast(signer: NoteSigner) -> None:
    app, token = build_app(signer, interval_ms=60_000)
    ts = TestServer(app, host="127.0.0.1")
    await ts.start_server()
    try:
        url = str(ts.make_url("")).rstrip("/")
        async with LogClient(url, signer.vkey, token=token) as client:
            await client.submit(b"durable, never published")
            started = time.monotonic()
            with pytest.raises(NotFoundError, match="entry 5 is not in the latest checkpoint"):
                await client.prove(5)
            assert time.monotonic() - started < 2.0  # PUBLISH_WAIT is 10 s
    finally:
        await ts.close()


# ------------------------------------------------------------------ rollback and forks


async def test_rollback_detected_from_a_larger_stored_checkpoint(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    await env.fill(5)
    bigger = sign_checkpoint(Checkpoint(signer.name, 100, bytes(range(32))), signer)
    state.parent.mkdir(parents=True)
    state.write_text(
        json.dumps(
            {
                "logs": {
                    signer.name: {
                        "size": 100,
                        "root_hash": base64.b64encode(bytes(range(32))).decode(),
                        "note": bigger.decode(),
                    }
                }
            }
        )
    )
    async with client_for(env, signer, state) as client:
        with pytest.raises(InconsistencyError, match="rollback") as info:
            await client.checkpoint()
    assert info.value.older == bigger
    assert info.value.newer == env.log.published.note  # type: ignore[union-attr]
    assert stored(state, signer.name)["size"] == 100  # evidence kept, nothing overwritten


async def test_rollback_detected_after_seeing_a_bigger_log(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    big, small = await servers.start(), await servers.start()
    await big.fill(8, "big")
    await small.fill(5, "small")
    async with client_for(big, signer, state) as client:
        seen = await client.checkpoint()
    async with client_for(small, signer, state) as client:
        with pytest.raises(InconsistencyError, match="rollback") as info:
            await client.checkpoint()
    assert info.value.older == seen.note
    assert info.value.newer == small.log.published.note  # type: ignore[union-attr]


async def test_fork_detected_with_proof(servers: Servers, signer: NoteSigner, state: Path) -> None:
    a, b = await servers.start(), await servers.start()
    await a.fill(5, "a")
    await b.fill(8, "b")
    async with client_for(a, signer, state) as client:
        seen_a = await client.checkpoint()
    async with client_for(b, signer, state) as client:
        with pytest.raises(InconsistencyError, match="forked") as info:
            await client.checkpoint()
    err = info.value
    assert err.older == seen_a.note
    assert err.newer == b.log.published.note  # type: ignore[union-attr]
    # The proof is real evidence: it joins B's own size-5 root, not A's, to B's size-8 root.
    assert err.proof == list(prove_consistency(5, 8, b.log.storage))
    verify_consistency(5, 8, b.log.root_at(5), b.log.root_at(8), err.proof)
    assert b.log.root_at(5) != seen_a.root_hash
    assert stored(state, signer.name)["size"] == 5


async def test_same_size_different_root_detected(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    a, b = await servers.start(), await servers.start()
    await a.fill(5, "a")
    await b.fill(5, "b")
    async with client_for(a, signer, state) as client:
        seen_a = await client.checkpoint()
    async with client_for(b, signer, state) as client:
        with pytest.raises(InconsistencyError, match="two different roots for tree size 5") as e:
            await client.checkpoint()
    assert (e.value.older, e.value.proof) == (seen_a.note, [])


async def test_receipt_from_a_fork_is_detected(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    a, b = await servers.start(), await servers.start()
    await a.fill(5, "a")
    await b.fill(5, "b")
    async with client_for(a, signer, state) as client:
        await client.checkpoint()
    async with client_for(b, signer, state) as client:
        with pytest.raises(InconsistencyError):
            await client.submit(b"into the fork")


async def test_an_older_published_checkpoint_is_not_a_rollback(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()  # publishes only when told to
    await env.fill(2)
    async with client_for(env, signer, state) as client:
        await client.submit_batch([b"x", b"y", b"z"])  # receipt checkpoint: size 5
        assert stored(state, signer.name)["size"] == 5
        cp = await client.checkpoint()  # the published one is still size 2
    assert cp.size == 2
    assert stored(state, signer.name)["size"] == 5


async def test_state_file_is_shared_between_clients_and_kept_monotonic(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    await env.fill(3)
    first, second = client_for(env, signer, state), client_for(env, signer, state)
    async with first, second:
        await first.checkpoint()
        await env.fill(3, "more")
        results = await asyncio.gather(first.checkpoint(), second.checkpoint())
    assert [r.size for r in results] == [6, 6]
    assert stored(state, signer.name)["size"] == 6


async def test_edited_state_file_is_refused(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    await env.fill(3)
    async with client_for(env, signer, state) as client:
        await client.checkpoint()
    data = json.loads(state.read_text())
    data["logs"][signer.name]["size"] = 2
    state.write_text(json.dumps(data))
    async with client_for(env, signer, state) as client:
        with pytest.raises(VerificationError, match="differ from the signed note"):
            await client.checkpoint()


async def test_check_consistent_proves_a_held_checkpoint_without_the_state(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    env = await servers.start()
    await env.fill(5)
    old = env.log.published.note  # type: ignore[union-attr]
    await env.fill(300, "more")
    async with client_for(env, signer, state) as client:
        current = await client.check_consistent(old)
        assert current.size == 305 and current.note == env.log.published.note  # type: ignore[union-attr]
        assert (await client.check_consistent(current.note)).size == 305
        assert not state.exists()  # neither read nor written
        receipt = await client.submit(b"newer than the published checkpoint")
        assert (await client.check_consistent(receipt.checkpoint)).size == 305


async def test_check_consistent_detects_forks_and_rollbacks(
    servers: Servers, signer: NoteSigner
) -> None:
    a, b = await servers.start(), await servers.start()
    await a.fill(5, "a")
    await b.fill(8, "b")
    forked = a.log.published.note  # type: ignore[union-attr]
    bigger = sign_checkpoint(Checkpoint(signer.name, 100, bytes(range(32))), signer)
    async with client_for(b, signer, None) as client:
        with pytest.raises(InconsistencyError, match="forked") as fork:
            await client.check_consistent(forked)
        with pytest.raises(InconsistencyError, match="rollback") as rollback:
            await client.check_consistent(bigger)
    assert fork.value.older == forked and fork.value.newer == b.log.published.note  # type: ignore[union-attr]
    assert fork.value.proof == list(prove_consistency(5, 8, b.log.storage))
    assert rollback.value.older == bigger


async def test_check_consistent_verifies_the_note(servers: Servers, signer: NoteSigner) -> None:
    witness = CosignatureSigner.generate("witness.example/w1")
    policy = parse_policy(f"log {signer.vkey}\nwitness w1 {witness.vkey}\nquorum w1\n")
    env = await servers.start()
    await env.fill(3)
    note = env.log.published.note  # type: ignore[union-attr]
    other = NoteSigner.generate(signer.name)
    async with client_for(env, signer, None) as client:
        with pytest.raises(VerificationError, match="no signature by log key"):
            await client.check_consistent(
                sign_checkpoint(Checkpoint(signer.name, 3, b"x" * 32), other)
            )
        with pytest.raises(MalformedError) as malformed:
            await client.check_consistent(b"not a checkpoint")
        assert not isinstance(malformed.value, VerificationError)
    async with client_for(env, signer, None, policy=policy) as client:
        with pytest.raises(VerificationError, match="witness policy not satisfied"):
            await client.check_consistent(note)


# ------------------------------------------------------------------ tampering servers


def flipper(
    prefix: str, *, skip: str | None = None, position: int = 0
) -> tuple[Any, dict[str, bool]]:
    """A middleware flipping one byte of answers to paths under ``prefix`` when switched on.

    Flipping the last byte of a bundle keeps it well-formed (it changes the last entry), so
    only the proof against the checkpoint can catch it.
    """
    switch = {"on": False}

    @web.middleware
    async def flip(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        tampering = switch["on"] and request.path.startswith(prefix)
        if tampering and not (skip and request.path.startswith(skip)):
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            body = bytearray(resp.body)
            body[position] ^= 0x01
            resp.body = bytes(body)
        return resp

    return flip, switch


async def test_tampered_tiles_are_a_verification_error_not_a_fork(
    servers: Servers, signer: NoteSigner, state: Path
) -> None:
    flip, switch = flipper("/tile/", skip="/tile/entries/")
    env = await servers.start(middlewares=[flip])
    await env.fill(5)
    async with client_for(env, signer, state) as client:
        await client.checkpoint()
        await env.fill(4, "more")
        switch["on"] = True
        with pytest.raises(VerificationError) as info:
            await client.checkpoint()
        assert not isinstance(info.value, InconsistencyError)
        with pytest.raises(VerificationError):
            await client.prove(3)
        assert stored(state, signer.name)["size"] == 5
        switch["on"] = False  # nothing bad was cached: the honest tiles now verify
        assert (await client.checkpoint()).size == 9
        await client.prove(3)
    async with client_for(env, signer, None) as fresh:  # no state: no consistency check
        await fresh.checkpoint()
        switch["on"] = True
        with pytest.raises(VerificationError, match="inclusion proof of entry 3"):
            await fresh.prove(3)


async def test_tampered_bundle_is_never_returned(servers: Servers, signer: NoteSigner) -> None:
    flip, switch = flipper("/tile/entries/", position=-1)
    env = await servers.start(middlewares=[flip])
    await env.fill(10)
    async with client_for(env, signer, None) as client:
        cp = await client.checkpoint()
        switch["on"] = True
        with pytest.raises(VerificationError):
            await client.leaves(0, 10, checkpoint=cp)
        with pytest.raises(VerificationError):
            await client.prove(4)
        switch["on"] = False
        assert len(await client.leaves(0, 10, checkpoint=cp)) == 10


async def test_tampered_entry_answer_is_rejected(servers: Servers, signer: NoteSigner) -> None:
    @web.middleware
    async def swap(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if request.path.startswith("/entries/"):
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            body = json.loads(resp.body)
            other = request.app[LOG].entries(body["index"] + 1, body["index"] + 2)[0].leaf
            body["leaf"] = base64.b64encode(other).decode()  # entry i+1's leaf as entry i's
            body["leaf_hash"] = base64.b64encode(leaf_hash(other)).decode()
            body["payload"] = base64.b64encode(decode_leaf(other).payload or b"").decode()
            resp.body = json.dumps(body).encode()
        return resp

    env = await servers.start(middlewares=[swap])
    await env.fill(6)
    async with client_for(env, signer, None) as client:
        with pytest.raises(VerificationError, match="does not match the checkpoint"):
            await client.entry(2)


# ------------------------------------------------------------------------ retries


def fail_first_post(mode: str) -> tuple[Any, dict[str, int]]:
    """Let the log process the first POST, then answer 503 or drop the connection."""
    count = {"posts": 0}

    @web.middleware
    async def fail(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if request.method != "POST":
            return resp
        count["posts"] += 1
        if count["posts"] > 1:
            return resp
        if mode == "503":
            return web.json_response(
                {"error": "pushback", "reason": "try again"},
                status=503,
                headers={"Retry-After": "0"},
            )
        assert request.transport is not None
        request.transport.abort()
        return resp

    return fail, count


@pytest.mark.parametrize("mode", ["503", "drop"])
async def test_retry_after_a_processed_request_adds_one_leaf(
    servers: Servers, signer: NoteSigner, mode: str
) -> None:
    fail, count = fail_first_post(mode)
    env = await servers.start(middlewares=[fail])
    async with client_for(env, signer, None) as client:
        receipt = await client.submit(b"exactly once")
    assert count["posts"] == 2
    assert env.log.size == 1
    assert receipt.entries[0].index == 0 and receipt.entries[0].duplicate


async def test_batch_retry_after_a_dropped_response_adds_each_leaf_once(
    servers: Servers, signer: NoteSigner
) -> None:
    fail, count = fail_first_post("drop")
    env = await servers.start(middlewares=[fail])
    payloads = [f"b{i}".encode() for i in range(7)]
    async with client_for(env, signer, None) as client:
        receipt = await client.submit_batch(payloads)
    assert count["posts"] == 2 and env.log.size == 7
    assert all(e.duplicate for e in receipt.entries)


async def test_errors_map_to_translog_errors(servers: Servers, signer: NoteSigner) -> None:
    env = await servers.start()
    async with LogClient(env.url, signer.vkey, token="tl_wrong", retries=0) as client:
        with pytest.raises(AuthError, match="http 401"):
            await client.submit(b"x")
        with pytest.raises(NotFoundError, match="http 404"):
            await client.tile(TileRef(0, 0, 3))
    port = env.server.port
    await env.server.close()
    async with LogClient(f"http://127.0.0.1:{port}", signer.vkey, retries=1) as client:
        client.backoff_base = 0.01
        with pytest.raises(NetworkError):
            await client.checkpoint()


# ------------------------------------------------------------------------ witnesses


async def test_policy_requiring_a_witness(servers: Servers, signer: NoteSigner) -> None:
    witness = CosignatureSigner.generate("witness.example/w1")
    policy = parse_policy(f"log {signer.vkey}\nwitness w1 {witness.vkey}\nquorum w1\n")
    cosigning = {"on": False}

    @web.middleware
    async def cosign(request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        if cosigning["on"] and request.path == "/checkpoint":
            assert isinstance(resp, web.Response) and isinstance(resp.body, bytes)
            text = resp.body.decode().split("\n\n")[0] + "\n"
            resp.body = resp.body + witness.cosign(text, int(time.time())).line.encode()
        return resp

    env = await servers.start(middlewares=[cosign])
    await env.fill(2)
    async with client_for(env, signer, None, policy=policy) as client:
        with pytest.raises(VerificationError, match="witness policy not satisfied"):
            await client.checkpoint()
        cosigning["on"] = True
        cp = await client.checkpoint()
        proof = await client.prove(1)
    assert cp.cosigners == frozenset({"w1"})
    verify_proof(proof, parse_vkey(signer.vkey), policy=policy)
    _, note, _ = open_checkpoint(proof.checkpoint, parse_vkey(signer.vkey))
    assert len(note.signatures) == 2


# --------------------------------------------------------------------- blocking client


async def test_sync_client_works_inside_a_running_event_loop(
    signer: NoteSigner, state: Path
) -> None:
    app, token = build_app(signer)
    server = ThreadedServer(app).start()
    try:
        # This coroutine's loop is running in this thread; the client runs its own.
        with SyncLogClient(server.url, signer.vkey, token=token, state_path=state) as client:
            receipt = client.submit(b"from sync code")
            batch = client.submit_batch([b"one", b"two"])
            proof = client.prove(batch.entries[1].index)
            cp = client.checkpoint()
            assert client.check_consistent(receipt.checkpoint).size == cp.size
            assert (client.origin, client.vkey) == (signer.name, signer.vkey)
        with SyncLogClient(server.url, signer.vkey, read_token=token) as reader:
            entries = reader.entries(0, 3, checkpoint=cp)
        assert receipt.entries[0].index == 0 and cp.size >= 3
        assert [e["payload"] for e in entries] == [b"from sync code", b"one", b"two"]
        verify_proof(proof, parse_vkey(signer.vkey))
        assert os.path.exists(state)
    finally:
        server.stop()
