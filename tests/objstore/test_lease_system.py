"""Two `translog serve` processes on one log and bucket: one writer, takeover, consistency."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.objstore.conftest import Gateway
from translog.client import SyncLogClient
from translog.config import ObjectStoreSection, PublisherSection, format_config
from translog.core.leaf import decode_leaf
from translog.log.datadir import open_data_dir

pytestmark = pytest.mark.system

ORIGIN = "lease.example/log"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "translog", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


class Serve:
    def __init__(self, data: Path, name: str, env: dict[str, str], *extra: str) -> None:
        self.ready = data.parent / f"{name}.ready"
        self.err = open(data.parent / f"{name}.stderr", "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "translog",
                "serve",
                "--data",
                str(data),
                "--listen",
                "127.0.0.1:0",
                "--ready-file",
                str(self.ready),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            env=env,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ready.read_text().strip()}"

    def is_ready(self) -> bool:
        return self.ready.exists()

    def stderr(self) -> str:
        self.err.flush()
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.err.close()


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_one_writer_takeover_after_expiry_and_consistent_checkpoints(
    rgw: Gateway, tmp_path: Path
) -> None:
    env = {**os.environ, **rgw.env()}
    bucket = rgw.bucket(public_prefix="pub")
    a_dir = tmp_path / "a"
    out = _cli("init", "--data", str(a_dir), "--origin", ORIGIN, env=env)
    assert out.returncode == 0, out.stderr
    vkey = out.stdout.strip().splitlines()[-1]
    config = replace(
        open_data_dir(a_dir).config,
        publisher=PublisherSection(interval_ms=100),
        objstore=ObjectStoreSection(
            url=f"s3://{bucket}/pub",
            private_url=f"s3://{bucket}/private",
            endpoint=rgw.endpoint,
            lease_ttl_ms=3000,
            lease_renew_ms=1000,
        ),
    )
    (a_dir / "translog.toml").write_text(format_config(config))
    token = _cli("token", "create", "--data", str(a_dir), "--name", "t", env=env).stdout.strip()
    b_dir = tmp_path / "b"  # another machine: same config, keys and tokens; empty storage
    b_dir.mkdir()
    for name in ("translog.toml", "tokens.json"):
        shutil.copy(a_dir / name, b_dir / name)
    shutil.copytree(a_dir / "keys", b_dir / "keys")

    # Both start at once: exactly one gets the lease and serves; the other stands by.
    a, b = Serve(a_dir, "a", env), Serve(b_dir, "b", env)
    servers = [a, b]
    try:
        _wait(lambda: a.is_ready() or b.is_ready(), 30, "a writer")
        time.sleep(0.5)
        assert a.is_ready() != b.is_ready()
        first, standby = (a, b) if a.is_ready() else (b, a)
        assert "standing by until it expires" in standby.stderr()
        holder = f":{first.proc.pid} until"
        assert holder in standby.stderr()

        # A third instance that will not wait refuses, naming the holder.
        refused = _cli(
            "serve", "--data", str(b_dir), "--listen", "127.0.0.1:0", "--no-standby", env=env
        )
        assert refused.returncode == 1
        assert "is held by " in refused.stderr and holder in refused.stderr
        print(refused.stderr.strip())

        bucket_url = f"{rgw.endpoint}/{bucket}/pub"
        reader = SyncLogClient(bucket_url, vkey, state_path=tmp_path / "reader.state")
        writer = SyncLogClient(first.url, vkey, token=token)
        try:
            for n in range(40):
                writer.submit(f"before takeover {n}".encode())
            _wait(lambda: reader.checkpoint().size == 40, 20, "publication of 40 entries")
            writer.close()

            first.proc.send_signal(signal.SIGKILL)  # a crash: the lease is not released
            first.proc.wait(timeout=10)
            t0 = time.monotonic()
            _wait(standby.is_ready, 30, "the standby to take over")
            took = time.monotonic() - t0
            assert 1.0 < took < 15, took  # waited for the expiry, then took over
            assert "caught up from" in standby.stderr()
            writer = SyncLogClient(standby.url, vkey, token=token)
            for n in range(10):
                receipt = writer.submit(f"after takeover {n}".encode())
                assert receipt.entries[0].index == 40 + n
            # Every checkpoint the reader sees from the bucket is proven consistent with the
            # last one (the state file); a fork or rollback would raise.
            _wait(lambda: reader.checkpoint().size == 50, 20, "publication after takeover")
            assert [decode_leaf(x).kind for x in reader.leaves(0, 50)] == [1] * 50
        finally:
            writer.close()
            reader.close()
    finally:
        for s in servers:
            s.stop()
