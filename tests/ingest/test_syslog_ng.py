"""The real syslog-ng from Debian (``syslog-ng-core`` + ``syslog-ng-mod-http``, unpacked into
/opt/translog-syslog-ng by ``make system-deps``: scripts/ingest-deps.sh) posting batches with
its ``http()`` destination to a real ``translog serve`` at /ingest/json-lines.

1,000 messages go into a syslog-ng TCP source; every one must arrive in the tree exactly once,
found by ``/events/search``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.system.test_serve import Log, Server, cli

SYSLOG_NG = Path(os.environ.get("SYSLOG_NG_PREFIX", "/opt/translog-syslog-ng")) / "bin/syslog-ng"
MESSAGES = 1000
ORIGIN = "syslog-ng.example/log"
pytestmark = pytest.mark.system


def _spawn(argv: list[str], output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(port: int, url: str, token: str) -> str:
    # No Content-Type header of our own: what syslog-ng (libcurl) sends by default is accepted.
    return f"""@version: 3.38
options {{ stats_freq(0); keep-hostname(yes); }};
source s_in {{ network(transport("tcp") ip("127.0.0.1") port({port}) flags(no-parse)); }};
destination d_translog {{
    http(
        url("{url}/ingest/json-lines?tenant=acme&service=syslog-ng")
        method("POST")
        headers("Authorization: Bearer {token}")
        body("$(format-json MESSAGE=$MESSAGE HOST=$HOST ISODATE=$ISODATE)")
        batch-lines(100)
        batch-timeout(200)
        workers(2)
        retries(5)
    );
}};
log {{ source(s_in); destination(d_translog); }};
"""


async def _search_all(session: aiohttp.ClientSession, url: str, token: str) -> list[Any]:
    results: list[Any] = []
    cursor: str | None = None
    while True:
        params = {"tenant": "acme", "action": "log.record", "limit": "500", "order": "asc"}
        if cursor is not None:
            params["cursor"] = cursor
        async with session.get(
            f"{url}/events/search",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        results += body["results"]
        if body["next_cursor"] is None:
            return results
        cursor = str(body["next_cursor"])


async def test_syslog_ng_http_destination_delivers_every_message_once(tmp_path: Path) -> None:
    assert SYSLOG_NG.exists(), f"{SYSLOG_NG} is missing: run `make system-deps` (as root)"
    data = tmp_path / "data"
    cli("init", "--data", str(data), "--origin", ORIGIN)
    config = data / "translog.toml"
    config.write_text(
        config.read_text().replace("[events]\nenabled = false", "[events]\nenabled = true")
    )
    assert "[events]\nenabled = true" in config.read_text()
    submit = cli("token", "create", "--data", str(data), "--name", "syslog-ng").stdout.strip()
    read = cli(
        "token",
        "create",
        "--data",
        str(data),
        "--name",
        "auditor",
        "--scope",
        "read",
        "--tenant",
        "acme",
    ).stdout.strip()
    serve = Server(Log(data, "", submit), tmp_path, "serve")
    await serve.start()
    procs: list[subprocess.Popen[bytes]] = [serve.proc] if serve.proc else []
    try:
        url = serve.url
        deadline = time.monotonic() + 20
        port = _free_port()
        conf = tmp_path / "syslog-ng.conf"
        conf.write_text(_config(port, url, submit))
        syslog_ng = _spawn(
            [
                str(SYSLOG_NG),
                "-F",
                "-f",
                str(conf),
                "--no-caps",
                "-R",
                str(tmp_path / "syslog-ng.persist"),
                "-p",
                str(tmp_path / "syslog-ng.pid"),
                "-c",
                str(tmp_path / "syslog-ng.ctl"),
            ],
            tmp_path / "syslog-ng.log",
        )
        procs.append(syslog_ng)
        while True:
            assert syslog_ng.poll() is None, (tmp_path / "syslog-ng.log").read_text()
            assert time.monotonic() < deadline + 10, "syslog-ng is not listening"
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                break
            except OSError:
                await asyncio.sleep(0.05)
        sent = [f"audit msg-{i:04d} user=u{i % 7} action=login" for i in range(MESSAGES)]
        with sock:
            sock.sendall("".join(m + "\n" for m in sent).encode())
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                results = await _search_all(session, url, read)
                if len(results) >= MESSAGES or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.5)  # anything more (a duplicate) would show up now
            results = await _search_all(session, url, read)
        got = Counter(r["event"]["details"]["record"]["MESSAGE"] for r in results)
        assert got == Counter(sent), (
            f"{len(results)} entries; missing {len(set(sent) - set(got))}, "
            f"duplicated {sum(n - 1 for n in got.values() if n > 1)}; "
            + (tmp_path / "syslog-ng.log").read_text()[-2000:]
        )
        first = results[0]["event"]
        assert first["service"] == "syslog-ng" and first["tenant"] == "acme"
        assert set(first["details"]["record"]) == {"MESSAGE", "HOST", "ISODATE"}
        assert len({r["index"] for r in results}) == MESSAGES
        # several requests, each a batch of lines (batch-lines(100))
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
        assert f'translog_source_entries_total{{source="json-lines"}} {MESSAGES}' in metrics
        print(json.dumps({"messages": MESSAGES, "entries": len(results)}))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
