"""Gossip between parties over HTTP: honest agreement, split views caught and proven offline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.merkle import MemoryHashes, leaf_hash, prove_consistency, tree_hash
from translog.core.signing import NoteSigner, NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import VerificationError
from translog.formats.misbehaviour import (
    KIND_FORK,
    KIND_SAME_SIZE,
    KIND_UNPROVEN,
    parse_misbehaviour,
    verify_misbehaviour,
)
from translog.gossip.core import Gossip
from translog.http import gossip as routes
from translog.http.errors import error_middleware

ORIGIN = "test.example/gossiped"


class TreeView:
    """A party that sees one version of the log: a tree it can prove from."""

    def __init__(self, signer: NoteSigner, leaves: list[bytes], *, lie: bool = False) -> None:
        self.signer = signer
        self.hashes = MemoryHashes(leaf_hash(x) for x in leaves)
        self.lie = lie
        self.note = sign_checkpoint(
            Checkpoint(ORIGIN, self.hashes.size, self.hashes.root()), signer
        )

    def verifiers(self) -> Mapping[str, NoteVerifier]:
        return {ORIGIN: parse_vkey(self.signer.vkey)}

    def latest(self) -> Mapping[str, bytes]:
        return {ORIGIN: self.note}

    async def prove(
        self, origin: str, old_size: int, new_size: int
    ) -> tuple[tuple[bytes, ...], bytes] | None:
        if new_size > self.hashes.size:
            return None
        proof = prove_consistency(old_size, new_size, self.hashes)
        if self.lie:  # a peer answering garbage
            proof = tuple(bytes(32) for _ in proof)
        return proof, tree_hash(old_size, self.hashes)


async def serve(gossip: Gossip) -> TestServer:
    app = web.Application(middlewares=[error_middleware])
    routes.add_routes(app, gossip, "")
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


class Pair:
    def __init__(self, a: Gossip, b: Gossip, sa: TestServer, sb: TestServer) -> None:
        self.a, self.b, self.sa, self.sb = a, b, sa, sb

    async def rounds(self, n: int = 1) -> None:
        for _ in range(n):
            await self.a.round()
            await self.b.round()


async def pair(view_a: TreeView, view_b: TreeView, tmp_path: Path) -> Pair:
    # Peers are set after the servers are up, since each needs the other's URL.
    a = Gossip(view_a, (), name="A", misbehaviour_dir=tmp_path / "a", unproven_rounds=2)
    b = Gossip(view_b, (), name="B", misbehaviour_dir=tmp_path / "b", unproven_rounds=2)
    sa, sb = await serve(a), await serve(b)
    a.set_peers((str(sb.make_url("")).rstrip("/"),))
    b.set_peers((str(sa.make_url("")).rstrip("/"),))
    return Pair(a, b, sa, sb)


@pytest.fixture
async def closers() -> AsyncIterator[list[object]]:
    items: list[object] = []
    yield items
    for item in items:
        if isinstance(item, Pair):
            await item.a.close()
            await item.b.close()
            await item.sa.close()
            await item.sb.close()


async def test_honest_views_of_different_sizes_agree(
    signer: NoteSigner, tmp_path: Path, closers: list[object]
) -> None:
    leaves = [b"e%d" % i for i in range(37)]
    p = await pair(TreeView(signer, leaves[:21]), TreeView(signer, leaves), tmp_path)
    closers.append(p)
    await p.rounds(3)
    for g in (p.a, p.b):
        status = g.status()
        assert status["alerts"] == [] and status["misbehaviour_files"] == []
        assert status["consistent_comparisons"] >= 3
        assert all(s["ok_rounds"] == 3 for s in status["peers"].values())


async def test_fork_is_proven_from_both_sides(
    signer: NoteSigner, tmp_path: Path, closers: list[object]
) -> None:
    honest = [b"e%d" % i for i in range(30)]
    forked = honest[:12] + [b"evil%d" % i for i in range(11)]  # size 23 vs 30
    p = await pair(TreeView(signer, honest), TreeView(signer, forked), tmp_path)
    closers.append(p)
    await p.rounds(1)
    verifier = parse_vkey(signer.vkey)
    for g in (p.a, p.b):
        (path,) = g.files
        proven = verify_misbehaviour(Path(path).read_bytes(), verifier)
        assert proven.misbehaviour.kind == KIND_FORK
        assert (proven.older.size, proven.newer.size) == (23, 30)
    # B (smaller) could only prove it with A's proof: it asked A, and checked it itself.
    b_file = parse_misbehaviour(Path(p.b.files[0]).read_bytes())
    assert b_file.attempts[0].source.startswith("peer ")
    # Once proven, later rounds do not write it again.
    await p.rounds(2)
    assert len(p.a.files) == len(p.b.files) == 1


async def test_same_size_split_view(
    signer: NoteSigner, tmp_path: Path, closers: list[object]
) -> None:
    p = await pair(
        TreeView(signer, [b"a", b"b", b"c"]), TreeView(signer, [b"a", b"b", b"X"]), tmp_path
    )
    closers.append(p)
    await p.rounds(1)
    proven = verify_misbehaviour(Path(p.a.files[0]).read_bytes(), parse_vkey(signer.vkey))
    assert proven.misbehaviour.kind == KIND_SAME_SIZE


async def test_forged_checkpoints_and_lying_proofs_are_not_trusted(
    signer: NoteSigner, tmp_path: Path, closers: list[object]
) -> None:
    leaves = [b"e%d" % i for i in range(40)]
    impostor = NoteSigner.generate(ORIGIN)  # same name, another key
    # B claims a forked checkpoint signed by a key that is not the log's: dropped.
    forged = TreeView(impostor, [b"x%d" % i for i in range(40)])
    p = await pair(TreeView(signer, leaves[:10]), forged, tmp_path)
    closers.append(p)
    forged.verifiers = lambda: {ORIGIN: parse_vkey(signer.vkey)}  # type: ignore[method-assign]
    await p.a.round()
    (status,) = p.a.status()["peers"].values()
    assert status["rejected_checkpoints"] == 1 and p.a.files == []

    # A peer with a genuine larger checkpoint but garbage proofs: never a proven split view;
    # after unproven_rounds it is written down as unproven, and that file proves nothing.
    liar = TreeView(signer, leaves, lie=True)
    q = await pair(TreeView(signer, leaves[:10]), liar, tmp_path / "q")
    closers.append(q)
    await q.a.round()
    assert q.a.files == [] and q.a.status()["unresolved"] == 1
    await q.a.round()
    (path,) = q.a.files
    m = parse_misbehaviour(Path(path).read_bytes())
    assert m.kind == KIND_UNPROVEN
    assert any("proof rejected" in a.outcome for a in m.attempts)
    with pytest.raises(VerificationError, match="does not prove misbehaviour"):
        verify_misbehaviour(Path(path).read_bytes(), parse_vkey(signer.vkey))


async def test_proof_route_validates_queries(
    signer: NoteSigner, tmp_path: Path, closers: list[object]
) -> None:
    leaves = [b"e%d" % i for i in range(9)]
    p = await pair(TreeView(signer, leaves), TreeView(signer, leaves), tmp_path)
    closers.append(p)
    from aiohttp import ClientSession

    async with ClientSession() as http:
        base = p.sa.make_url("/gossip/v1/consistency")
        cases = {
            (("origin", ORIGIN), ("old", "3"), ("new", "9")): 200,
            (("origin", ORIGIN), ("old", "03"), ("new", "9")): 400,
            (("origin", ORIGIN), ("old", "0"), ("new", "9")): 400,
            (("origin", ORIGIN), ("old", "3")): 400,
            (("origin", "other"), ("old", "3"), ("new", "9")): 404,
            (("origin", ORIGIN), ("old", "3"), ("new", "99")): 404,
        }
        for query, want in cases.items():
            async with http.get(base, params=list(query)) as resp:
                assert resp.status == want, (query, await resp.text())
                if want == 200:
                    body = json.loads(await resp.text())
                    assert body["old_size"] == 3 and len(body["proof"]) > 0
