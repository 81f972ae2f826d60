"""In-process tests of the read API: checkpoint, tiles, entry bundles, entries, RFC 6962 JSON.

The log is filled through ``Log.submit`` directly (not the POST routes), and checkpoints are
published by calling ``Log.publish`` (the publish interval is a minute, so nothing is
published behind the test's back).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.vectors import load_json
from translog.config import Config, LogSection, PublisherSection, ServerSection
from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.ct import TreeHeadSigner, verify_tree_head
from translog.core.leaf import decode_leaf, verify_payload
from translog.core.merkle import (
    MemoryHashes,
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from translog.core.signing import NoteSigner
from translog.core.tiles import TileHashReader, TileRef, decode_bundle, read_tile, tiles_for_size
from translog.core.vkey import parse_vkey
from translog.http.app import make_app
from translog.http.ct import MAX_GET_ENTRIES, accepts_gzip
from translog.http.keys import LOG, TOKENS
from translog.log.sequencer import Appended, Log
from translog.log.tokens import TokenStore
from translog.storage.base import Storage
from translog.storage.lmdb import LMDBStorage
from translog.storage.memory import MemoryStorage

ORIGIN = "read.example/log"
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def make_config(*, interval_ms: int = 60_000, **server: Any) -> Config:
    """A test config: a minute-long publish interval and the given [server] settings."""
    return Config(
        log=LogSection(origin=ORIGIN),
        publisher=PublisherSection(interval_ms=interval_ms),
        server=ServerSection(**server),
    )


@dataclass
class Env:
    """A running app, its client and the objects the tests check against."""

    client: TestClient[web.Request, web.Application]
    log: Log
    signer: NoteSigner
    ths: TreeHeadSigner | None
    tokens: TokenStore
    prefix: str

    async def get(self, path: str, **kwargs: Any) -> Any:
        """GET ``prefix + path``."""
        return await self.client.get(self.prefix + path, **kwargs)

    async def get_json(self, path: str, status: int = 200, **kwargs: Any) -> Any:
        """GET and decode JSON, asserting the status."""
        resp = await self.get(path, **kwargs)
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        return await resp.json()

    def token(self, *scopes: str) -> dict[str, str]:
        """An Authorization header for a fresh token with ``scopes``."""
        name = "t" + str(len(self.tokens.list()))
        return {"Authorization": "Bearer " + self.tokens.create(name, scopes)}


async def start(
    aiohttp_client: ClientFactory,
    *,
    ct: bool = True,
    client_kwargs: dict[str, Any] | None = None,
    interval_ms: int = 60_000,
    access_log_class: type[AbstractAccessLogger] | None = None,
    storage: Storage | None = None,
    **server: Any,
) -> Env:
    """Build and start an app (over memory storage unless ``storage`` is given)."""
    config = make_config(interval_ms=interval_ms, **server)
    signer = NoteSigner.generate(ORIGIN)
    ths = TreeHeadSigner.generate() if ct else None
    app = make_app(
        config,
        storage=storage or MemoryStorage(),
        signer=signer,
        tree_head_signer=ths,
        tokens=TokenStore(),
    )
    if access_log_class is None:
        client = await aiohttp_client(app, **(client_kwargs or {}))
    else:
        # pytest-aiohttp drops server_kwargs; start the server with them ourselves.
        test_server = TestServer(app)
        await test_server.start_server(access_log_class=access_log_class)
        client = await aiohttp_client(test_server, **(client_kwargs or {}))
    return Env(client, app[LOG], signer, ths, app[TOKENS], config.server.prefix)


async def grow(log: Log, n: int, *, committed: bool = True) -> list[Appended]:
    """Append ``n`` distinct entries and wait until they are durable."""
    payloads = [b"entry %d" % (log.size + i) for i in range(n)]
    return await log.submit(payloads, committed=committed)


async def checkpoint(env: Env) -> Checkpoint:
    """Fetch /checkpoint and verify it with the log's vkey."""
    resp = await env.get("/checkpoint")
    assert resp.status == 200
    cp, _, _ = open_checkpoint(await resp.read(), parse_vkey(env.signer.vkey), origin=ORIGIN)
    return cp


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


# ------------------------------------------------------------------------------ checkpoint


async def test_checkpoint_verifies_and_is_the_published_one(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    resp = await env.get("/checkpoint")
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.headers["Cache-Control"] == "public, max-age=1"
    assert (await checkpoint(env)).size == 0
    await grow(env.log, 3)
    assert (await checkpoint(env)).size == 0  # durable but not yet published
    await env.log.publish()
    cp = await checkpoint(env)
    assert cp.size == 3
    assert cp.root_hash == env.log.root_at(3)
    assert await (await env.get("/checkpoint")).read() == env.log.published.note  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------- tiles


class Fetched:
    """Tiles and bundles fetched over HTTP, checked against an independent model."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.bytes: dict[str, bytes] = {}
        self.leaves: list[bytes] = []
        self.model = MemoryHashes()

    def add_leaves(self, appended: list[Appended]) -> None:
        for a in appended:
            self.leaves.append(a.leaf)
            self.model.append(leaf_hash(a.leaf))

    async def fetch(self, ref: TileRef) -> bytes:
        resp = await self.env.get("/" + ref.path)
        assert resp.status == 200, (ref.path, await resp.text())
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        data: bytes = await resp.read()
        if ref.path in self.bytes:
            assert self.bytes[ref.path] == data, f"{ref.path} changed"
        self.bytes[ref.path] = data
        return data

    async def check_size(self, size: int) -> None:
        """Every tile and bundle of ``size`` equals the model's."""
        for ref in tiles_for_size(size):
            assert await self.fetch(ref) == read_tile(ref, self.model), ref.path
        for ref in tiles_for_size(size, entries=True):
            entries = decode_bundle(await self.fetch(ref))
            start = ref.index * 256
            assert entries == self.leaves[start : start + ref.width]
            level0 = self.bytes[TileRef(0, ref.index, ref.width).path]
            hashes = [level0[i * 32 : (i + 1) * 32] for i in range(ref.width)]
            assert [leaf_hash(e) for e in entries] == hashes

    def reader(self, size: int) -> TileHashReader:
        return TileHashReader(size, lambda ref: self.bytes[ref.path])


async def test_every_tile_of_every_signed_size(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    fetched = Fetched(env)
    checkpoints: list[Checkpoint] = []
    for size in (1, 255, 256, 257, 600, 70_000):
        fetched.add_leaves(await grow(env.log, size - env.log.size))
        await env.log.publish()
        cp = await checkpoint(env)
        assert cp.size == size
        checkpoints.append(cp)
        for cp_old in checkpoints:  # older sizes stay fully served after growth
            await fetched.check_size(cp_old.size)
    for cp in checkpoints:
        reader = fetched.reader(cp.size)
        assert tree_hash(cp.size, reader) == cp.root_hash
        for index in {0, cp.size // 2, cp.size - 1}:
            proof = prove_inclusion(index, cp.size, reader)
            verify_inclusion(leaf_hash(fetched.leaves[index]), index, cp.size, proof, cp.root_hash)
    for old in checkpoints:
        for new in checkpoints:
            if old.size <= new.size:
                proof = prove_consistency(old.size, new.size, fetched.reader(new.size))
                verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)


async def test_tiles_over_lmdb(aiohttp_client: ClientFactory, tmp_path: Path) -> None:
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 22)
    env = await start(aiohttp_client, storage=storage)
    fetched = Fetched(env)
    for size in (3, 300, 66_000):
        fetched.add_leaves(await grow(env.log, size - env.log.size))
        await fetched.check_size(size)
    await fetched.check_size(3)
    await fetched.check_size(300)


async def test_partial_tile_of_older_size_served_after_growth(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 10)
    old = await (await env.get("/tile/0/000.p/10")).read()
    old_bundle = await (await env.get("/tile/entries/000.p/10")).read()
    await grow(env.log, 290)
    assert await (await env.get("/tile/0/000.p/10")).read() == old
    assert await (await env.get("/tile/entries/000.p/10")).read() == old_bundle
    full = await (await env.get("/tile/0/000")).read()
    assert len(full) == 8192 and full[: len(old)] == old
    assert (await env.get("/tile/0/001.p/44")).status == 200
    assert (await env.get("/tile/1/000.p/1")).status == 200


async def test_tiles_are_served_for_the_durable_size_before_publication(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 5)
    assert env.log.published is not None and env.log.published.size == 0
    assert (await env.get("/tile/0/000.p/5")).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/000.p/11",
        "tile/0/000",
        "tile/0/001.p/1",
        "tile/1/000.p/1",
        "tile/entries/000.p/11",
        "tile/entries/000",
        "tile/entries/x001/000",
        "tile/63/x009/x223/x372/x036/x854/x775/807",
    ],
)
async def test_tile_beyond_the_tree_is_404(aiohttp_client: ClientFactory, path: str) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 10)
    resp = await env.get("/" + path)
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    assert "Cache-Control" not in resp.headers


async def test_empty_tree_has_no_tiles(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    assert (await env.get("/tile/0/000.p/1")).status == 404
    assert (await env.get("/tile/entries/000.p/1")).status == 404


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/0/01",
        "tile/0/0000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/-1/000",
        "tile/a/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/01",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000/",
        "tile/0/x000/001",
        "tile/0/123/456",
        "tile/0/x123",
        "tile/0/x001/x002/x003/x004/x005/x006/x007/008",
        "tile/0/x999/x999/x999/x999/x999/x999/999",
        "tile/entries/01",
        "tile/entries/000.p/0",
        "tile/entries/000.p/256",
        "tile/entries/000/",
        "tile/0/000.p/1/extra",
        "tile/0/%E2%80%94",
        "tile/0/٠٠١",
    ],
)
async def test_malformed_tile_path_is_400(aiohttp_client: ClientFactory, path: str) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 300)
    resp = await env.get("/" + path)
    assert resp.status == 400, path
    body = await resp.json()
    assert body["error"] == "malformed" and body["reason"]


async def test_tile_route_needs_a_path(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    assert (await env.get("/tile/")).status == 404
    assert (await env.get("/tile")).status == 404


@pytest.fixture
async def fuzz_env(aiohttp_client: ClientFactory) -> Env:
    """One app with 300 published entries, shared by every example of a fuzz test."""
    env = await start(aiohttp_client)
    await grow(env.log, 300)
    await env.log.publish()
    return env


# Hypothesis drives these async tests through pytest-asyncio; the function-scoped fixture is
# deliberately shared by every example (the server must survive all of them).
_FUZZ = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
_PATH_CHARS = st.sampled_from([*"0123456789xp./entries-%_~:@!$&'()*+,;=aZ", "٣", "—"])


@_FUZZ
@given(tail=st.text(_PATH_CHARS, max_size=60))
async def test_fuzzed_tile_and_entry_paths_never_fail_the_server(fuzz_env: Env, tail: str) -> None:
    for path in ("/tile/" + tail, "/tile/entries/" + tail, "/entries/" + tail):
        resp = await fuzz_env.client.get(path)
        assert resp.status in (200, 400, 401, 404), (path, await resp.text())


_QUERY_NAMES = ["first", "second", "start", "end", "hash", "tree_size", "leaf_index"]
_QUERY_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 400).map(str),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=50),
    st.binary(min_size=0, max_size=40).map(b64),
)


@_FUZZ
@given(
    endpoint=st.sampled_from(
        ["get-sth-consistency", "get-proof-by-hash", "get-entries", "get-entry-and-proof"]
    ),
    params=st.lists(st.tuples(st.sampled_from(_QUERY_NAMES), _QUERY_VALUES), max_size=5),
)
async def test_fuzzed_ct_queries_never_fail_the_server(
    fuzz_env: Env, endpoint: str, params: list[tuple[str, str]]
) -> None:
    resp = await fuzz_env.client.get("/ct/v1/" + endpoint, params=params)
    assert resp.status in (200, 400, 404), (endpoint, params, await resp.text())


# ------------------------------------------------------------------------- gzip and caching


async def test_entry_bundles_are_gzipped_when_accepted(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, client_kwargs={"auto_decompress": False})
    appended = await grow(env.log, 40)
    plain = encode = None
    resp = await env.get("/tile/entries/000.p/40", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in resp.headers
    plain = await resp.read()
    assert decode_bundle(plain) == [a.leaf for a in appended]
    resp = await env.get("/tile/entries/000.p/40", headers={"Accept-Encoding": "gzip, br"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Vary"] == "Accept-Encoding"
    encode = await resp.read()
    assert gzip.decompress(encode) == plain and len(encode) < len(plain)
    resp = await env.get("/tile/entries/000.p/40", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in resp.headers
    # Hash tiles are incompressible: always identity.
    resp = await env.get("/tile/0/000.p/40", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in resp.headers
    assert len(await resp.read()) == 40 * 32


async def test_ct_json_is_gzipped_when_accepted(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, client_kwargs={"auto_decompress": False})
    await grow(env.log, 40)
    await env.log.publish()
    resp = await env.get("/ct/v1/get-entries?start=0&end=39", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(await resp.read()))["entries"]) == 40


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("gzip, deflate", True),
        ("deflate, gzip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("", False),
        ("identity", False),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("*;q=0, gzip", True),
        ("gzip;q=nonsense", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


async def test_private_tree_is_privately_cached(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, public_tree=False)
    await grow(env.log, 3)
    auth = env.token("read")
    resp = await env.get("/checkpoint", headers=auth)
    assert resp.headers["Cache-Control"] == "private, max-age=1"
    resp = await env.get("/tile/0/000.p/3", headers=auth)
    assert resp.headers["Cache-Control"] == "private, max-age=31536000, immutable"


# --------------------------------------------------------------------------------- entries


async def test_committed_entry_needs_a_read_token_for_the_payload(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start(aiohttp_client)
    [a] = await grow(env.log, 1)
    resp = await env.get("/entries/0")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await env.get("/entries/0", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await env.get("/entries/0", headers=env.token("submit"))).status == 403
    body = await env.get_json("/entries/0", headers=env.token("read"))
    assert body["index"] == 0 and body["kind"] == "committed" and body["erased"] is False
    assert unb64(body["leaf"]) == a.leaf
    assert unb64(body["leaf_hash"]) == a.leaf_hash
    assert body["timestamp"] == a.timestamp_ms == decode_leaf(a.leaf).timestamp_ms
    assert unb64(body["salt"]) == a.salt
    verify_payload(a.leaf, unb64(body["payload"]), unb64(body["salt"]))
    assert unb64(body["payload"]) == b"entry 0"


async def test_leaf_only_view_needs_no_payload_token(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    [a] = await grow(env.log, 1)
    body = await env.get_json("/entries/0?leaf_only=1")
    assert set(body) == {"index", "leaf", "leaf_hash", "timestamp", "kind"}
    assert unb64(body["leaf"]) == a.leaf
    resp = await env.get("/entries/0?leaf_only=1", headers=env.token("read"))
    assert "payload" not in await resp.json()
    assert (await env.get("/entries/0?leaf_only=0")).status == 401
    for bad in ("2", "true", "", "1&leaf_only=1"):
        assert (await env.get("/entries/0?leaf_only=" + bad)).status == 400, bad


async def test_inline_entry_payload_is_as_public_as_the_tree(
    aiohttp_client: ClientFactory,
) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 1, committed=False)
    body = await env.get_json("/entries/0")
    assert body["kind"] == "inline" and unb64(body["payload"]) == b"entry 0"
    assert "salt" not in body and "erased" not in body
    resp = await env.get("/entries/0/payload")
    assert resp.status == 200 and await resp.read() == b"entry 0"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_raw_payload_read(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    await grow(env.log, 2)
    assert (await env.get("/entries/1/payload")).status == 401
    assert (await env.get("/entries/1/payload", headers=env.token("admin"))).status == 403
    resp = await env.get("/entries/1/payload", headers=env.token("read"))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == b"entry 1"


async def test_public_payloads_need_no_token(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, public_payloads=True)
    [a] = await grow(env.log, 1)
    body = await env.get_json("/entries/0")
    assert unb64(body["salt"]) == a.salt
    assert await (await env.get("/entries/0/payload")).read() == b"entry 0"


async def test_erased_payload(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, public_payloads=True)
    [a] = await grow(env.log, 1)
    assert env.log.storage.erase_payload(0)
    body = await env.get_json("/entries/0")
    assert body["erased"] is True and "payload" not in body and "salt" not in body
    assert unb64(body["leaf"]) == a.leaf
    resp = await env.get("/entries/0/payload")
    assert resp.status == 404 and "erased" in (await resp.json())["reason"]


@pytest.mark.parametrize(
    ("index", "status"),
    [
        ("3", 404),
        ("99999999", 404),
        ("9223372036854775807", 404),
        ("9223372036854775808", 400),
        ("99999999999999999999999", 400),
        ("-1", 400),
        ("+1", 400),
        ("1e3", 400),
        ("0x1", 400),
        ("%201", 400),
        ("١", 400),
    ],
)
async def test_bad_entry_index(aiohttp_client: ClientFactory, index: str, status: int) -> None:
    env = await start(aiohttp_client, public_payloads=True)
    await grow(env.log, 3)
    for suffix in ("", "/payload"):
        resp = await env.get(f"/entries/{index}{suffix}")
        assert resp.status == status, (index, suffix)


async def test_private_tree_needs_a_read_token_everywhere(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, public_tree=False, public_payloads=True)
    await grow(env.log, 3, committed=False)
    await env.log.publish()
    paths = [
        "/checkpoint",
        "/tile/0/000.p/3",
        "/tile/entries/000.p/3",
        "/entries/0",
        "/entries/0/payload",
        "/ct/v1/get-sth",
        "/ct/v1/get-sth-consistency?first=1&second=3",
        f"/ct/v1/get-proof-by-hash?hash={b64(env.log.root_at(1))}&tree_size=3",
        "/ct/v1/get-entries?start=0&end=2",
        "/ct/v1/get-entry-and-proof?leaf_index=0&tree_size=3",
    ]
    read, submit = env.token("read"), env.token("submit")
    for path in paths:
        assert (await env.get(path)).status == 401, path
        assert (await env.get(path, headers=submit)).status == 403, path
        assert (await env.get(path, headers=read)).status == 200, path


# ------------------------------------------------------------------------- RFC 6962 JSON API

ARGON = "golang-mod-sumdb/argon2020/"


async def ct_env(aiohttp_client: ClientFactory, size: int = 300) -> tuple[Env, list[bytes]]:
    """An app with ``size`` published entries; returns it and the leaves."""
    env = await start(aiohttp_client)
    leaves = [a.leaf for a in await grow(env.log, size)]
    await env.log.publish()
    return env, leaves


async def test_get_sth(aiohttp_client: ClientFactory) -> None:
    env, _ = await ct_env(aiohttp_client)
    resp = await env.get("/ct/v1/get-sth")
    assert resp.headers["Cache-Control"] == "public, max-age=1"
    sth = await resp.json()
    assert set(sth) == set(load_json(ARGON + "sth.json"))
    cp = await checkpoint(env)
    assert sth["tree_size"] == cp.size == 300
    assert unb64(sth["sha256_root_hash"]) == cp.root_hash
    assert sth["timestamp"] == env.log.published.timestamp_ms  # type: ignore[union-attr]
    assert env.ths is not None
    sig = unb64(sth["tree_head_signature"])
    verify_tree_head(env.ths.public_pem(), sig, sth["timestamp"], 300, cp.root_hash)
    assert sig[:2] == b"\x04\x03"


async def test_get_sth_without_a_tree_head_key_is_404(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, ct=False)
    resp = await env.get("/ct/v1/get-sth")
    assert resp.status == 404
    assert "tree head key" in (await resp.json())["reason"]


async def test_get_sth_consistency(aiohttp_client: ClientFactory) -> None:
    env, leaves = await ct_env(aiohttp_client)
    model = MemoryHashes(leaf_hash(leaf) for leaf in leaves)
    keys = set(load_json(ARGON + "consistency.json"))
    for first, second in [(1, 300), (7, 300), (256, 300), (255, 257), (128, 256), (300, 300)]:
        body = await env.get_json(f"/ct/v1/get-sth-consistency?first={first}&second={second}")
        assert set(body) == keys
        proof = [unb64(h) for h in body["consistency"]]
        old, new = tree_hash(first, model), tree_hash(second, model)
        verify_consistency(first, second, old, new, proof)
    body = await env.get_json("/ct/v1/get-sth-consistency?first=300&second=300")
    assert body == {"consistency": []}


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("first=0&second=300", "size 0"),
        ("first=0&second=0", "size 0"),
        ("first=5&second=4", "greater than"),
        ("first=1&second=301", "beyond the published"),
        ("second=3", "missing query parameter 'first'"),
        ("first=1", "missing query parameter 'second'"),
        ("first=&second=3", "non-negative decimal"),
        ("first=-1&second=3", "non-negative decimal"),
        ("first=1.0&second=3", "non-negative decimal"),
        ("first=0x1&second=3", "non-negative decimal"),
        ("first=%201&second=3", "non-negative decimal"),
        ("first=1&second=99999999999999999999", "non-negative decimal"),
        ("first=1&second=9223372036854775808", "larger than"),
        ("first=1&first=2&second=3", "given 2 times"),
    ],
)
async def test_get_sth_consistency_errors(
    aiohttp_client: ClientFactory, query: str, reason: str
) -> None:
    env, _ = await ct_env(aiohttp_client)
    body = await env.get_json("/ct/v1/get-sth-consistency?" + query, status=400)
    assert body["error"] == "malformed"
    assert reason in body["reason"]


async def test_ct_sizes_are_limited_to_the_published_checkpoint(
    aiohttp_client: ClientFactory,
) -> None:
    env, _ = await ct_env(aiohttp_client, 10)
    await grow(env.log, 5)  # durable, not published
    assert env.log.size == 15
    await env.get_json("/ct/v1/get-sth-consistency?first=1&second=15", status=400)
    await env.get_json("/ct/v1/get-entry-and-proof?leaf_index=0&tree_size=15", status=400)
    body = await env.get_json("/ct/v1/get-entries?start=0&end=14")
    assert len(body["entries"]) == 10
    await env.get_json("/ct/v1/get-entries?start=10&end=14", status=400)


async def test_get_proof_by_hash(aiohttp_client: ClientFactory) -> None:
    env, leaves = await ct_env(aiohttp_client)
    keys = set(load_json(ARGON + "proof.json"))
    for index, tree_size in [(0, 1), (0, 300), (137, 300), (299, 300), (5, 6)]:
        h = leaf_hash(leaves[index])
        body = await env.get_json(
            "/ct/v1/get-proof-by-hash", params={"hash": b64(h), "tree_size": str(tree_size)}
        )
        assert set(body) == keys
        assert body["leaf_index"] == index
        proof = [unb64(p) for p in body["audit_path"]]
        verify_inclusion(h, index, tree_size, proof, env.log.root_at(tree_size))


async def test_get_proof_by_hash_accepts_an_unescaped_plus(aiohttp_client: ClientFactory) -> None:
    env, leaves = await ct_env(aiohttp_client)
    index = next(i for i, leaf in enumerate(leaves) if "+" in b64(leaf_hash(leaf)))
    raw = b64(leaf_hash(leaves[index]))
    # The '+' stays literal in the URL, so the server's query parser reads it as a space.
    body = await env.get_json(f"/ct/v1/get-proof-by-hash?hash={raw}&tree_size=300")
    assert body["leaf_index"] == index


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"hash": b64(b"\x00" * 32), "tree_size": "300"}, 404),
        ({"hash": "LEAF150", "tree_size": "150"}, 404),
        ({"hash": "LEAF150", "tree_size": "0"}, 400),
        ({"hash": "LEAF150", "tree_size": "301"}, 400),
        ({"hash": "LEAF150"}, 400),
        ({"tree_size": "300"}, 400),
        ({"hash": b64(b"\x00" * 31), "tree_size": "300"}, 400),
        ({"hash": b64(b"\x00" * 33), "tree_size": "300"}, 400),
        ({"hash": "!" * 44, "tree_size": "300"}, 400),
        ({"hash": "A" * 43 + "B", "tree_size": "300"}, 400),
        ({"hash": "A" * 4_000, "tree_size": "300"}, 400),
        ({"hash": "", "tree_size": "300"}, 400),
    ],
)
async def test_get_proof_by_hash_errors(
    aiohttp_client: ClientFactory, params: dict[str, str], status: int
) -> None:
    env, leaves = await ct_env(aiohttp_client)
    if params.get("hash") == "LEAF150":
        params = {**params, "hash": b64(leaf_hash(leaves[150]))}
    await env.get_json("/ct/v1/get-proof-by-hash", status=status, params=params)


async def test_oversized_request_line_is_400(aiohttp_client: ClientFactory) -> None:
    env, _ = await ct_env(aiohttp_client, 1)
    resp = await env.get("/ct/v1/get-proof-by-hash?tree_size=1&hash=" + "A" * 10_000)
    assert resp.status == 400  # aiohttp's parser refuses lines over 8 KiB before routing
    resp = await env.get("/tile/0/" + "x001/" * 2000 + "000")
    assert resp.status == 400


async def test_get_entries(aiohttp_client: ClientFactory) -> None:
    env, leaves = await ct_env(aiohttp_client, 600)
    entry_keys = set(load_json(ARGON + "entries.json")["entries"][0])
    resp = await env.get("/ct/v1/get-entries?start=10&end=19")
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    body = await resp.json()
    assert [unb64(e["leaf_input"]) for e in body["entries"]] == leaves[10:20]
    assert all(e["extra_data"] == "" for e in body["entries"])
    assert entry_keys <= set(body["entries"][0])
    body = await env.get_json("/ct/v1/get-entries?start=599&end=599")
    assert [unb64(e["leaf_input"]) for e in body["entries"]] == leaves[599:]
    # Capped at MAX_GET_ENTRIES, and at the published size; a short answer is not cached.
    resp = await env.get("/ct/v1/get-entries?start=0&end=1000")
    assert resp.headers["Cache-Control"] == "public, no-cache"
    assert len((await resp.json())["entries"]) == MAX_GET_ENTRIES
    body = await env.get_json("/ct/v1/get-entries?start=500&end=9223372036854775807")
    assert [unb64(e["leaf_input"]) for e in body["entries"]] == leaves[500:]


@pytest.mark.parametrize(
    "query",
    ["start=600&end=700", "start=5&end=4", "start=0", "end=3", "start=a&end=3", "start=-1&end=3"],
)
async def test_get_entries_errors(aiohttp_client: ClientFactory, query: str) -> None:
    env, _ = await ct_env(aiohttp_client, 600)
    await env.get_json("/ct/v1/get-entries?" + query, status=400)


async def test_get_entries_on_an_empty_log_is_400(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client)
    await env.get_json("/ct/v1/get-entries?start=0&end=0", status=400)


async def test_get_entry_and_proof(aiohttp_client: ClientFactory) -> None:
    env, leaves = await ct_env(aiohttp_client)
    for index, tree_size in [(0, 1), (0, 300), (255, 256), (299, 300)]:
        body = await env.get_json(
            f"/ct/v1/get-entry-and-proof?leaf_index={index}&tree_size={tree_size}"
        )
        assert set(body) == {"leaf_input", "extra_data", "audit_path"}
        assert unb64(body["leaf_input"]) == leaves[index]
        proof = [unb64(p) for p in body["audit_path"]]
        verify_inclusion(
            leaf_hash(leaves[index]), index, tree_size, proof, env.log.root_at(tree_size)
        )


@pytest.mark.parametrize(
    "query",
    [
        "leaf_index=300&tree_size=300",
        "leaf_index=5&tree_size=5",
        "leaf_index=0&tree_size=0",
        "leaf_index=0&tree_size=301",
        "leaf_index=0",
        "tree_size=3",
        "leaf_index=x&tree_size=3",
    ],
)
async def test_get_entry_and_proof_errors(aiohttp_client: ClientFactory, query: str) -> None:
    env, _ = await ct_env(aiohttp_client)
    await env.get_json("/ct/v1/get-entry-and-proof?" + query, status=400)


async def test_get_roots_is_not_served(aiohttp_client: ClientFactory) -> None:
    env, _ = await ct_env(aiohttp_client, 1)
    assert (await env.get("/ct/v1/get-roots")).status == 404
    assert (await env.get("/ct/v1/add-chain")).status in (404, 405)


async def test_read_routes_respect_the_prefix(aiohttp_client: ClientFactory) -> None:
    env = await start(aiohttp_client, prefix="/log1")
    await grow(env.log, 2)
    await env.log.publish()
    assert (await checkpoint(env)).size == 2
    assert (await env.get("/tile/0/000.p/2")).status == 200
    assert (await env.client.get("/checkpoint")).status == 404
    assert (await env.client.get("/tile/0/000.p/2")).status == 404
