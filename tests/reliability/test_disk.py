"""Disk faults against ``translog serve``: a full file system, a full map, a corrupted file.

* Full disk: the log lives in a size-limited tmpfs the test mounts (CI runs as root); the
  same test with a size-capped LMDB map runs everywhere. The server must refuse new work with
  a clear 507, keep serving reads, take work again once space returns, and lose nothing.
* Corruption: one byte of a stored leaf is flipped in ``data.mdb`` while the server is down.
  ``translog fsck`` names the entry, ``translog serve`` refuses to start, and a server that
  skips the startup check still never serves the corrupted entry (500, logged).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.reliability.harness import LogDir, ServerProcess, cli, fsck_ok, make_log, set_config
from translog.core.checkpoint import open_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.merkle import leaf_hash
from translog.core.tiles import TileRef
from translog.storage.lmdb import LMDBStorage

pytestmark = pytest.mark.system


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def can_mount() -> bool:
    return os.geteuid() == 0 and Path("/proc/filesystems").read_text().find("tmpfs") >= 0


def batch(i: int, n: int = 100, size: int = 700) -> tuple[bytes, list[bytes]]:
    payloads = [b"%d.%d:" % (i, j) + os.urandom(size) for j in range(n)]
    body = json.dumps([base64.b64encode(p).decode() for p in payloads]).encode()
    return body, payloads


async def fill_until_full(
    session: aiohttp.ClientSession, server: ServerProcess, token: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Submit batches until three in a row are refused; return the receipts and a refusal.

    Right at the edge a batch may still fit where a refused one left allocated pages, so
    the first refusal is not the end: everything acknowledged on the way is kept.
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    receipts: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for i in range(400):
        body, _ = batch(i)
        async with session.post(f"{server.url}/add-batch", data=body, headers=headers) as r:
            answer = await r.json()
            if r.status == 200:
                receipts.append(answer)
                refused.clear()
                continue
            assert r.status == 507, answer
            refused.append(answer)
            if len(refused) == 3:
                return receipts, refused[0]
    raise AssertionError("the storage never filled up")


async def check_all_present(
    session: aiohttp.ClientSession, server: ServerProcess, receipts: list[dict[str, Any]]
) -> None:
    """A sample of each receipt's entries, read back through /entries (the durable tree)."""
    for receipt in receipts:
        for e in receipt["entries"][:: max(1, len(receipt["entries"]) // 5)]:
            async with session.get(f"{server.url}/entries/{e['index']}?leaf_only=1") as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["leaf"] == e["leaf"]


async def full_then_recover(log: LogDir, server: ServerProcess, make_room: Any) -> None:
    server.start()
    headers = {"Authorization": f"Bearer {log.token}"}
    async with aiohttp.ClientSession() as session:
        receipts, refusal = await fill_until_full(session, server, log.token)
        assert receipts, "some batches fit before the storage filled up"
        assert refusal["error"] == "storage_full"
        assert "no space left on device" in refusal["reason"] or "map limit" in refusal["reason"]
        # Still up for reads, and still refusing big writes with the same clear error.
        async with session.get(f"{server.url}/checkpoint") as r:
            assert r.status == 200
        await check_all_present(session, server, receipts)
        body, _ = batch(999)
        async with session.get(f"{server.url}/metrics") as r:
            assert "translog_storage_full_total" in await r.text()
        assert server.proc is not None and server.proc.poll() is None, "the server crashed"

        await make_room()  # space returns

        if server.proc is None or server.proc.poll() is not None:
            server.start()
        async with session.post(
            f"{server.url}/add-batch",
            data=body,
            headers={**headers, "Content-Type": "application/json"},
        ) as r:
            assert r.status == 200, await r.text()
            receipts.append(await r.json())
        await check_all_present(session, server, receipts)
    assert server.stop() == 0
    ok, out = fsck_ok(log)
    assert ok, out
    storage = LMDBStorage(log.data / "lmdb", readonly=True)
    try:
        size = storage.size()
    finally:
        storage.close()
    assert size == sum(len(r["entries"]) for r in receipts)  # nothing lost, nothing extra
    assert "Traceback" not in server.output()


async def test_full_filesystem_refuses_then_recovers(tmp_path: Path) -> None:
    if not can_mount():
        pytest.skip("mounting a size-limited tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "mnt"
    with tmpfs(mnt, "3m"):
        log = make_log(mnt / "data")
        server = ServerProcess(log, tmp_path, "tmpfs")
        try:

            async def grow() -> None:
                subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)

            await full_then_recover(log, server, grow)
        finally:
            server.kill_if_running()


async def test_full_lmdb_map_refuses_then_recovers(tmp_path: Path) -> None:
    log = make_log(
        tmp_path / "data", config={"storage.map_size_mb": 1, "storage.max_map_size_mb": 2}
    )
    server = ServerProcess(log, tmp_path, "capped")
    try:

        async def raise_cap() -> None:
            assert server.stop() == 0
            set_config(log.data, "storage.max_map_size_mb", 64)

        await full_then_recover(log, server, raise_cap)
    finally:
        server.kill_if_running()


# -- corruption ----------------------------------------------------------------------------


async def test_a_corrupted_leaf_is_detected_and_never_served(tmp_path: Path) -> None:
    log = make_log(tmp_path / "data")
    server = ServerProcess(log, tmp_path, "corrupt")
    server.start()
    marker = b"corrupt-me-%04d" % 150
    payloads = [b"corrupt-me-%04d" % i for i in range(300)]
    body = json.dumps([base64.b64encode(p).decode() for p in payloads])
    headers = {"Authorization": f"Bearer {log.token}", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/add-batch?kind=inline", data=body, headers=headers) as r,
    ):
        assert r.status == 200
        receipt = await r.json()
    assert server.stop() == 0
    index = next(
        e["index"]
        for e in receipt["entries"]
        if decode_leaf(base64.b64decode(e["leaf"])).payload == marker
    )

    # Flip one byte of that leaf's payload inside data.mdb.
    path = log.data / "lmdb" / "data.mdb"
    raw = bytearray(path.read_bytes())
    at = raw.find(marker)
    assert at >= 0 and raw.find(marker, at + 1) < 0
    raw[at + len(marker) - 1] ^= 0x01
    path.write_bytes(bytes(raw))

    ok, out = fsck_ok(log)
    assert not ok
    assert f"hash mismatch at index {index}, level 0" in out

    code = server.start(expect_failure=True)
    assert code == 1
    assert f"entry {index}: the stored leaf does not match the tree's leaf hash" in server.output()

    # With the startup check off, every read of that entry is refused, never served.
    set_config(log.data, "storage.verify_entries_on_start", 0)
    server.start()
    bundle = TileRef(0, index // 256, min(256, 300 - 256 * (index // 256)), entries=True).path
    async with aiohttp.ClientSession() as session:
        for path_q in (
            f"/entries/{index}",
            f"/entries/{index}/payload",
            f"/{bundle}",
            f"/ct/v1/get-entries?start={index}&end={index}",
            f"/ct/v1/get-entry-and-proof?leaf_index={index}&tree_size=300",
        ):
            async with session.get(server.url + path_q) as r:
                text = await r.text()
                assert r.status == 500, (path_q, r.status)
                assert marker[:-1] not in text.encode()
        # Its neighbours are still served.
        async with session.get(f"{server.url}/entries/{index + 1}") as r:
            assert r.status == 200
        async with session.get(f"{server.url}/checkpoint") as r:
            cp, _, _ = open_checkpoint(await r.read(), log.verifier)
            assert cp.size == 300
    server.stop()
    assert f"entry {index}: the stored leaf does not match" in server.output()
    leaf = base64.b64decode(receipt["entries"][index]["leaf"])
    assert leaf_hash(leaf) == base64.b64decode(receipt["entries"][index]["leaf_hash"])
    assert cli("fsck", "--data", str(log.data), "-q", check=False).returncode != 0
