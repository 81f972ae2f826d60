"""fsck recomputes everything; flipping any stored byte must make it fail, naming the spot."""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
from pathlib import Path

import pytest

from translog.cli.command import main
from translog.core.vkey import parse_vkey
from translog.errors import StorageCorruptError
from translog.log.datadir import init_data_dir, open_data_dir
from translog.log.fsck import fsck
from translog.log.sequencer import Log, LogOptions
from translog.storage.lmdb import LMDBStorage
from translog.storage.lmdb_env import CHUNK

N = CHUNK * 12 + 7  # full chunks at levels 0 and 2, plus tails


async def _fill(data: Path) -> None:
    d = open_data_dir(data)
    log = Log(
        d.open_storage(),
        d.config.log.origin,
        d.signer,
        d.tree_head_signer,
        LogOptions(publish_interval_ms=10_000),
    )
    await log.start()
    for start in range(0, N, 100):
        n = min(100, N - start)
        await log.submit([b"entry %d" % (start + i) for i in range(n)], committed=start % 200 == 0)
        await log.publish()
    await log.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fsck") / "data"
    init_data_dir(data, "fsck.example/log")
    asyncio.run(_fill(data))
    return data


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(template, copy)
    return copy


def run_fsck(data: Path) -> list[str]:
    d = open_data_dir(data)
    storage = d.open_storage()
    try:
        report = fsck(storage, parse_vkey(d.signer.vkey), d.config.log.origin)
    finally:
        storage.close()
    return report.problems


def flip(data: Path, db: str, key: bytes, pos: int) -> None:
    storage = LMDBStorage(data / "lmdb")
    env, handles = storage.raw_env(), storage.db_handles()
    with env.begin(write=True) as txn:
        old = bytes(txn.get(key, db=handles[db]))
        value = bytearray(old)
        value[pos % len(value)] ^= 0x01
        txn.delete(key, old, db=handles[db])  # dupsort databases keep both values otherwise
        txn.put(key, bytes(value), db=handles[db])
    storage.close()


def u64(n: int) -> bytes:
    return struct.pack(">Q", n)


def test_clean_log_passes(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_fsck(data) == []
    assert main(["fsck", "--data", str(data), "-q"]) == 0
    assert "fsck ok" in capsys.readouterr().out


# (sub-database, key, byte position, pattern the first problem must match)
CASES: dict[str, tuple[str, bytes, int, str]] = {
    "entry-version": ("entries", u64(5), 0, "entry 5"),
    "entry-timestamp": ("entries", u64(7), 8, r"entry 7: timestamp|index 7, level 0"),
    "entry-kind": ("entries", u64(0), 9, "entry 0: unknown leaf kind"),
    "entry-salt-start": ("entries", u64(0), 20, "index 0, level 0"),
    "entry-salt": ("entries", u64(1), 45, "index 1, level 0"),
    "entry-payload": ("entries", u64(2), -1, "index 2, level 0"),
    "inline-entry": ("entries", u64(150), 12, "index 150, level 0"),
    "hash-chunk-level0": ("h00", u64(3), 40, "level 0"),
    "hash-chunk-level2": ("h02", u64(1), 100, "level 2"),
    "tail-level0": ("tail", bytes([0]), 3, "level 0"),
    "tail-level2": ("tail", bytes([2]), 33, "level 2"),
    "checkpoint-history-body": ("checkpoints", u64(100), 8 + 5, "checkpoint"),
    "checkpoint-history-signature": ("checkpoints", u64(200), -10, "checkpoint"),
    "checkpoint-latest": ("meta", b"latest", -3, "latest checkpoint"),
    "leaf-hash-index": ("leafidx", b"", 0, "leaf-hash index"),
    "leaf-hash-index-prefix": ("leafidx", b"", 4 + 8 * 17, "leaf-hash index"),
    "leaf-hash-index-last": ("leafidx", b"", -1, "leaf-hash index"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flipped_byte_fails(data: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    db, key, pos, expect = CASES[case]
    if db == "leafidx":
        key = _first_index_key(data)
    flip(data, db, key, pos)
    try:
        problems = run_fsck(data)
    except StorageCorruptError as e:  # a corrupt tail is refused when the storage opens
        problems = [str(e)]
    assert problems, f"fsck missed a flipped byte in {case}"
    assert re.search(expect, problems[0]), problems[0]
    assert main(["fsck", "--data", str(data), "-q"]) != 0
    err = capsys.readouterr().err
    assert "FAILED" in err or "corrupt" in err or "translog:" in err


def _first_index_key(data: Path) -> bytes:
    storage = LMDBStorage(data / "lmdb")
    with storage.raw_env().begin() as txn, txn.cursor(db=storage.db_handles()["leafidx"]) as cur:
        cur.first()
        key = bytes(cur.key())
    storage.close()
    return key


def test_missing_index_block_is_detected(data: Path) -> None:
    key = _first_index_key(data)
    storage = LMDBStorage(data / "lmdb")
    with storage.raw_env().begin(write=True) as txn:
        txn.delete(key, db=storage.db_handles()["leafidx"])
    storage.close()
    assert any("leaf-hash index" in p for p in run_fsck(data))


def test_mismatch_names_index_level_expected_found(data: Path) -> None:
    flip(data, "h00", u64(0), 32 * 5)  # the hash of leaf 5
    problems = run_fsck(data)
    assert problems[0].startswith("hash mismatch at index 5, level 0: expected ")
    assert ", found " in problems[0]


def test_size_rollback_is_detected(data: Path) -> None:
    storage = LMDBStorage(data / "lmdb")
    with storage.raw_env().begin(write=True) as txn:
        txn.put(b"size", u64(N - 1), db=storage.db_handles()["meta"])
    storage.close()
    with pytest.raises(StorageCorruptError, match="tail"):
        run_fsck(data)
    assert main(["fsck", "--data", str(data), "-q"]) != 0
