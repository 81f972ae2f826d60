"""Fixtures for the object-store tests: a real Ceph RADOS Gateway and nginx (scripts/)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from translog.publish.store import S3Settings, S3Store

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Gateway:
    """A running single-node RGW: endpoint and credentials (scripts/rgw.sh)."""

    endpoint: str
    access_key: str
    secret_key: str

    def settings(self) -> S3Settings:
        return S3Settings(self.endpoint, "us-east-1", self.access_key, self.secret_key)

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def bucket(self, *, public_prefix: str | None = None) -> str:
        """A fresh bucket; with ``public_prefix``, anyone may GET under it."""
        name = "tl-" + secrets.token_hex(6)
        store = S3Store(name, public_prefix or "", self.settings())
        store.ensure_bucket(public_read=public_prefix is not None)
        return name


def rgw_env(directory: str) -> dict[str, str]:
    """Environment for scripts/rgw.sh: a data directory and free ports of its own."""
    return {
        **os.environ,
        "RGW_DIR": directory,
        "RGW_PORT": str(_free_port()),
        "RGW_MON_PORT": str(_free_port()),
    }


class Nginx:
    """nginx from Debian serving one directory with config/nginx-translog.conf."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.work = work
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        import shutil
        import time
        import urllib.request

        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            subprocess.run([str(ROOT / "scripts" / "rgw.sh"), "install"], check=True, timeout=600)
        server = (ROOT / "config" / "nginx-translog.conf").read_text()
        server = server.replace("@LISTEN@", f"127.0.0.1:{self.port}").replace(
            "@ROOT@", str(self.root)
        )
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = self.work / "nginx.conf"
        conf.write_text(
            f"{user}worker_processes 1;\ndaemon off;\nerror_log {self.work}/error.log;\n"
            f"pid {self.work}/nginx.pid;\nevents {{ worker_connections 512; }}\n"
            f"http {{\n client_body_temp_path {self.work}/body;\n"
            f" proxy_temp_path {self.work}/proxy;\n"
            f" fastcgi_temp_path {self.work}/fcgi;\n uwsgi_temp_path {self.work}/uwsgi;\n"
            f" scgi_temp_path {self.work}/scgi;\n{server}\n}}\n"
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.work)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(self.url + "/nothing", timeout=1)
            except urllib.error.HTTPError:
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"nginx did not start: {err}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[Callable[[Path], Nginx]]:
    started: list[Nginx] = []

    def make(root: Path) -> Nginx:
        work = tmp_path / f"nginx{len(started)}"
        work.mkdir()
        server = Nginx(root, work).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


async def until(cond: Callable[[], object], timeout: float = 20.0) -> None:
    """Wait (polling the event loop) until ``cond()`` is true; fail after ``timeout`` s."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
