"""Shared fixtures: storages, signers, logs, and hypothesis profiles."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from translog.core.ct import TreeHeadSigner
from translog.core.signing import NoteSigner
from translog.log.sequencer import Log, LogOptions
from translog.storage.lmdb import LMDBStorage
from translog.storage.memory import MemoryStorage

if TYPE_CHECKING:
    from tests.objstore.conftest import Gateway

settings.register_profile(
    "dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "soak", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

ORIGIN = "test.example/log"


@pytest.fixture
def memory_storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def lmdb_storage(tmp_path: Path) -> Iterator[LMDBStorage]:
    storage = LMDBStorage(tmp_path / "lmdb", map_size=1 << 20)
    yield storage
    storage.close()


@pytest.fixture(params=["memory", "lmdb"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MemoryStorage | LMDBStorage]:
    """Each storage backend in turn, for the conformance suite."""
    if request.param == "memory":
        yield MemoryStorage()
    else:
        s = LMDBStorage(tmp_path / "lmdb", map_size=1 << 20)
        yield s
        s.close()


@pytest.fixture(scope="session")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture(scope="session")
def tree_head_signer() -> TreeHeadSigner:
    return TreeHeadSigner.generate()


@pytest.fixture
async def memory_log(
    memory_storage: MemoryStorage, signer: NoteSigner, tree_head_signer: TreeHeadSigner
) -> AsyncIterator[Log]:
    log = Log(
        memory_storage,
        ORIGIN,
        signer,
        tree_head_signer,
        LogOptions(publish_interval_ms=50, max_pending=10_000),
    )
    await log.start()
    yield log
    await log.close()


@pytest.fixture(scope="session")
def rgw() -> Iterator[Gateway]:
    """Start the gateway once per session (installs the Debian packages when missing)."""
    # A cluster of our own (data dir and ports), so that concurrent test runs on one machine
    # never share, or stop, each other's gateway.
    from tests.objstore.conftest import ROOT, Gateway, rgw_env

    script = ROOT / "scripts" / "rgw.sh"
    env = rgw_env(f"/tmp/translog-rgw-{os.getpid()}")
    out = subprocess.run(
        [str(script), "start"], capture_output=True, text=True, timeout=600, check=False, env=env
    )
    if out.returncode != 0:
        pytest.fail(f"scripts/rgw.sh start failed:\n{out.stdout}\n{out.stderr}")
    got = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    yield Gateway(got["RGW_ENDPOINT"], got["AWS_ACCESS_KEY_ID"], got["AWS_SECRET_ACCESS_KEY"])
    subprocess.run([str(script), "stop"], capture_output=True, timeout=120, check=False, env=env)
