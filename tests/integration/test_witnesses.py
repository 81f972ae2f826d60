"""A log with witnesses, in process: cosigned checkpoints, quorum, 409 recovery, the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from translog.client import LogClient
from translog.config import Config, LogSection, PublisherSection, WitnessesSection
from translog.core.note import parse_note
from translog.core.policy import WitnessPolicy, parse_policy
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import VerificationError
from translog.formats.receipt import parse_receipt
from translog.gossip.core import Gossip
from translog.http import gossip as routes
from translog.http.app import COSIGNER, make_app
from translog.http.errors import error_middleware
from translog.http.keys import LOG
from translog.http.witness import WITNESS, WitnessView, make_witness_app
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage
from translog.witness.core import Witness
from translog.witness.protocol import format_add_checkpoint
from translog.witness.state import LMDBWitnessState

ORIGIN = "test.example/cosigned"


@dataclass
class WitnessProc:
    signer: CosignatureSigner
    state_dir: Path
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self, log_vkey: str, port: int = 0) -> None:
        state = LMDBWitnessState(self.state_dir)
        witness = Witness(self.signer, {ORIGIN: parse_vkey(log_vkey)}, state)
        app = make_witness_app(witness)
        self.server = TestServer(app, port=port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()


@dataclass
class Env:
    signer: NoteSigner
    witnesses: list[WitnessProc]
    policy: WitnessPolicy
    policy_text: str
    log_server: TestServer
    token: str

    @property
    def url(self) -> str:
        return str(self.log_server.make_url("")).rstrip("/")


def policy_text(signer: NoteSigner, witnesses: list[WitnessProc]) -> str:
    # Nested groups: (w1 and w2 both) or w3 ... expressed as any-of [all(w1,w2), w3]? Use
    # 2-of-3 through a nested group: group pair 1 w1 w2; group q 2 pair w3 → w3 and one of
    # w1/w2.
    lines = [f"log {signer.vkey}"]
    for i, w in enumerate(witnesses, 1):
        lines.append(f"witness w{i} {w.signer.vkey} {w.url}")
    lines += ["group pair any w1 w2", "group q all pair w3", "quorum q"]
    return "\n".join(lines) + "\n"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    signer = NoteSigner.generate(ORIGIN)
    witnesses = [
        WitnessProc(CosignatureSigner.generate(f"witness.example/w{i}"), tmp_path / f"w{i}")
        for i in range(1, 4)
    ]
    for w in witnesses:
        await w.start(signer.vkey)
    text = policy_text(signer, witnesses)
    policy = parse_policy(text)
    tokens = TokenStore()
    token = tokens.create("client", ("submit", "read"))
    config = Config(
        log=LogSection(origin=ORIGIN),
        publisher=PublisherSection(interval_ms=100),
        witnesses=WitnessesSection(policy="inline", timeout_ms=1000),
    )
    app = make_app(
        config, storage=MemoryStorage(), signer=signer, tokens=tokens, witness_policy=policy
    )
    server = TestServer(app)
    await server.start_server()
    e = Env(signer, witnesses, policy, text, server, token)
    yield e
    await server.close()
    for w in witnesses:
        await w.stop()


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_published_checkpoints_carry_a_quorum_of_cosignatures(env: Env) -> None:
    async with LogClient(env.url, env.signer.vkey, token=env.token, policy=env.policy) as client:
        for i in range(5):
            await client.submit(b"event %d" % i)
        receipt = await client.submit(b"published", wait="published")
        cp = await client.checkpoint()
    assert cp.cosigners == {"w1", "w2", "w3"}
    assert cp.size >= 6
    # The receipt of ?wait=published carries the cosigned checkpoint.
    note = parse_note(receipt.checkpoint)
    assert env.policy.verify(note.text, note.signatures) == {"w1", "w2", "w3"}
    # A durable receipt keeps the per-batch checkpoint: the log's signature only.
    async with (
        ClientSession() as http,
        http.post(
            f"{env.url}/add", data=b"durable", headers={"Authorization": f"Bearer {env.token}"}
        ) as resp,
    ):
        durable = parse_receipt(await resp.json())
    assert len(parse_note(durable.checkpoint).signatures) == 1


async def test_quorum_missing_withholds_publication(env: Env) -> None:
    log = env.log_server.app[LOG]
    await wait_for(lambda: log.published is not None and log.published.size == 0)
    port = env.witnesses[2].server.port  # type: ignore[union-attr]
    await env.witnesses[2].stop()  # w3 is required by the policy
    async with (
        ClientSession() as http,
        http.post(
            f"{env.url}/add", data=b"x", headers={"Authorization": f"Bearer {env.token}"}
        ) as resp,
    ):
        assert resp.status == 200
    await asyncio.sleep(0.6)
    published = log.published
    assert published is not None and published.size == 0  # nothing new without w3
    assert log.stats["withheld"] >= 2
    async with ClientSession() as http, http.get(f"{env.url}/metrics") as resp:
        metrics = await resp.text()
    (line,) = [
        x for x in metrics.splitlines() if x.startswith("translog_checkpoints_withheld_total")
    ]
    assert float(line.split()[-1]) >= 2
    # w3 comes back on the same port with its state: publication resumes.
    await env.witnesses[2].start(env.signer.vkey, port=port)
    await wait_for(lambda: log.published is not None and log.published.size == 1)


async def test_client_rejects_a_checkpoint_short_of_the_policy(env: Env) -> None:
    extra = CosignatureSigner.generate("witness.example/x").vkey
    stricter = parse_policy(
        env.policy_text.replace(
            "quorum q", f"witness extra {extra}\ngroup both all q extra\nquorum both"
        )
    )
    async with LogClient(env.url, env.signer.vkey, token=env.token, policy=stricter) as client:
        with pytest.raises(VerificationError, match="witness policy not satisfied"):
            await client.checkpoint()
        with pytest.raises(VerificationError, match="witness policy not satisfied"):
            await client.submit(b"published", wait="published")
        await client.submit(b"durable")  # per-batch checkpoints are not held to the policy
    # Offline: the published receipt meets the log's own policy, not the stricter one.
    async with LogClient(env.url, env.signer.vkey, token=env.token) as client:
        receipt = await client.submit(b"offline", wait="published")
    from translog.formats.receipt_json import format_receipt
    from translog.formats.verify import verify_file

    data = json.dumps(format_receipt(receipt)).encode()
    verify_file(data, env.signer.vkey, policy=env.policy)
    with pytest.raises(VerificationError, match="witness policy not satisfied"):
        verify_file(data, env.signer.vkey, policy=stricter)


async def test_log_recovers_from_409_with_a_consistency_proof(env: Env, tmp_path: Path) -> None:
    """A second log process (same key, same storage) starts knowing nothing of the witnesses:
    it sends old 0, gets 409 with their sizes, and resends with proofs."""
    log = env.log_server.app[LOG]
    async with LogClient(env.url, env.signer.vkey, token=env.token) as client:
        for i in range(3):
            await client.submit(b"before %d" % i, wait="published")
    cosigner = env.log_server.app[COSIGNER]
    sizes = {w.name: w.known_size for w in cosigner.witnesses}
    assert all(s is not None and s >= 3 for s in sizes.values())
    for w in cosigner.witnesses:
        w.known_size = None  # as after a restart
    async with LogClient(env.url, env.signer.vkey, token=env.token) as client:
        await client.submit(b"after", wait="published")
    assert all(w.known_size == log.size for w in cosigner.witnesses)
    assert all(w.failed == 0 for w in cosigner.witnesses)


async def test_wire_statuses_and_409_content_type(env: Env) -> None:
    w = env.witnesses[0]
    log = env.log_server.app[LOG]
    await wait_for(lambda: log.published is not None)
    note = log.current.note
    async with ClientSession() as http:

        async def post(body: bytes) -> tuple[int, str, bytes]:
            async with http.post(f"{w.url}/add-checkpoint", data=body) as resp:
                return resp.status, resp.content_type, await resp.read()

        status, ctype, body = await post(format_add_checkpoint(0, (), note))
        if status == 409:  # the log already had it cosigned: size in the body
            assert ctype == "text/x.tlog.size"
            assert body.decode().endswith("\n") and int(body) >= 0
        assert (await post(b"garbage"))[0] == 400
        other = NoteSigner.generate("test.example/unknown")
        from translog.core.checkpoint import Checkpoint, sign_checkpoint

        unknown = sign_checkpoint(Checkpoint(other.name, 0, bytes(32)), other)
        assert (await post(format_add_checkpoint(0, (), unknown)))[0] == 404
        forged = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes(32)), NoteSigner.generate(ORIGIN))
        status, _, body = await post(format_add_checkpoint(0, (), forged))
        assert status == 403 and json.loads(body)["error"] == "forbidden"
        async with http.get(f"{w.url}/healthz") as resp:
            assert (await resp.json())["name"] == "witness.example/w1"


async def test_witness_gossip_routes_serve_its_cosigned_view(env: Env, tmp_path: Path) -> None:
    log = env.log_server.app[LOG]
    await wait_for(lambda: log.published is not None)
    w = env.witnesses[0]
    assert w.server is not None
    witness = w.server.app[WITNESS]
    gossip = Gossip(WitnessView(witness), (), name="w1", misbehaviour_dir=tmp_path / "m")
    app = web.Application(middlewares=[error_middleware])

    routes.add_routes(app, gossip, "")
    server = TestServer(app)
    await server.start_server()
    try:
        async with ClientSession() as http:
            async with http.get(server.make_url("/gossip/v1/checkpoints")) as resp:
                notes = (await resp.json())["checkpoints"]
            async with http.get(
                server.make_url("/gossip/v1/consistency"),
                params={"origin": ORIGIN, "old": "1", "new": "2"},
            ) as resp:
                assert resp.status == 404
        (note,) = notes
        parsed = parse_note(note)
        policy = parse_policy(f"log {env.signer.vkey}\nwitness w1 {w.signer.vkey}\nquorum w1\n")
        assert policy.verify(parsed.text, parsed.signatures) == {"w1"}
    finally:
        await server.close()
