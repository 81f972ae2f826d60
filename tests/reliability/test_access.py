"""Access control of ``translog serve`` (a subprocess; tokens made with the CLI).

Tokens: none, unknown, revoked while the server runs, and the wrong scope are refused;
``--rate`` is enforced with 429 + Retry-After; every admin route needs the ``admin`` scope
(no token: 401; submit, read or submit+read tokens: 403); key, token
and TLS key files are private; no token, token hash or key material appears in logs, error
bodies or metrics; TLS is served from ``server.tls_cert`` / ``server.tls_key``.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import ssl
import stat
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.reliability.harness import (
    LogDir,
    ServerProcess,
    _private_key_material,
    cli,
    make_log,
    set_config,
)

pytestmark = pytest.mark.system


def token(
    log: LogDir, name: str, *scopes: str, rate: float = 0, tenants: tuple[str, ...] = ()
) -> str:
    argv = ["token", "create", "--data", str(log.data), "--name", name, "--rate", str(rate)]
    for s in scopes:
        argv += ["--scope", s]
    for t in tenants:
        argv += ["--tenant", t]
    return cli(*argv).stdout.strip()


@pytest.fixture
def log(tmp_path: Path) -> LogDir:
    return make_log(tmp_path / "data", config={"server.public_payloads": False})


async def test_tokens_scopes_and_revocation(log: LogDir, tmp_path: Path) -> None:
    reader = token(log, "reader", "read")
    submitter = token(log, "submitter", "submit")
    doomed = token(log, "doomed", "submit")
    server = ServerProcess(log, tmp_path, "access")
    server.start()
    try:
        async with aiohttp.ClientSession() as s:

            async def post(tok: str | None, path: str = "/add") -> tuple[int, dict[str, str]]:
                h = {} if tok is None else {"Authorization": f"Bearer {tok}"}
                async with s.post(server.url + path, data=b"x", headers=h) as r:
                    body = await r.json()
                    return r.status, body

            assert (await post(None))[0] == 401
            assert (await post("tl_" + "A" * 43))[0] == 401
            assert (await post(reader))[0] == 403  # read scope cannot submit
            assert (await post(reader, "/add-batch"))[0] == 403
            status, _ = await post(doomed)
            assert status == 200
            cli("token", "revoke", "--data", str(log.data), "--name", "doomed")
            status, body = await post(doomed)
            assert status == 401 and "revoked" in body["reason"]
            # A committed payload needs the read scope: a submit token cannot read it back.
            async with s.get(
                f"{server.url}/entries/0", headers={"Authorization": f"Bearer {submitter}"}
            ) as r:
                assert r.status == 403
            async with s.get(
                f"{server.url}/entries/0", headers={"Authorization": f"Bearer {reader}"}
            ) as r:
                assert r.status == 200 and "payload" in await r.json()
    finally:
        server.stop()


async def test_per_token_rate_is_enforced(log: LogDir, tmp_path: Path) -> None:
    limited = token(log, "limited", "submit", rate=5)
    server = ServerProcess(log, tmp_path, "rate")
    server.start()
    try:
        ok = limited_count = 0
        retry_after: list[int] = []
        headers = {"Authorization": f"Bearer {limited}"}
        async with aiohttp.ClientSession() as s:
            started = time.monotonic()
            while time.monotonic() - started < 2.0:
                async with s.post(f"{server.url}/add", data=b"r", headers=headers) as r:
                    if r.status == 200:
                        ok += 1
                    else:
                        assert r.status == 429, await r.text()
                        assert (await r.json())["error"] == "rate_limited"
                        retry_after.append(int(r.headers["Retry-After"]))
                        limited_count += 1
                await asyncio.sleep(0.01)
            elapsed = time.monotonic() - started
            # Burst of one second's worth, then 5 per second.
            assert ok <= 5 + 5 * elapsed + 1
            assert ok >= 5
            assert limited_count > ok
            assert all(1 <= ra <= 2 for ra in retry_after)
            # A batch larger than the burst goes through once, then the debt is enforced.
            await asyncio.sleep(1.2)
            body = "\n".join(['"eA=="'] * 20)
            bh = {**headers, "Content-Type": "application/x-ndjson"}
            async with s.post(f"{server.url}/add-batch", data=body, headers=bh) as r:
                assert r.status == 200
            async with s.post(f"{server.url}/add", data=b"r", headers=headers) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) >= 3  # 20 entries at 5/s left a debt
            # Another token is not affected by this one's limit.
            other = {"Authorization": f"Bearer {log.token}"}
            async with s.post(f"{server.url}/add", data=b"r", headers=other) as r:
                assert r.status == 200
    finally:
        server.stop()


ADMIN_REQUESTS = [
    ("POST", "/admin/erase", {"index": 0, "reason": "test"}),
    ("GET", "/admin/holds", None),
    ("POST", "/admin/holds", {"name": "h1", "tenant": "acme", "reason": "test"}),
    ("DELETE", "/admin/holds/h1", None),
    ("POST", "/admin/retention/run", None),
]


def test_every_admin_route_is_covered() -> None:
    """The admin routes the server registers are exactly those tested below."""
    from aiohttp import web

    from translog.http import admin_events

    app = web.Application()
    admin_events.add_routes(app, "")
    registered = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"  # aiohttp adds HEAD to every GET
    }
    canonical = {"/admin/holds/h1": "/admin/holds/{name}"}
    assert registered == {(m, canonical.get(p, p)) for m, p, _ in ADMIN_REQUESTS}


async def test_admin_routes_need_the_admin_scope(tmp_path: Path) -> None:
    log = make_log(tmp_path / "data", config={"events.enabled": True})
    tokens = {
        scopes: token(log, "-".join(scopes), *scopes, tenants=("*",))
        for scopes in (("submit",), ("read",), ("submit", "read"), ("admin",))
    }
    server = ServerProcess(log, tmp_path, "admin")
    server.start()
    try:
        async with aiohttp.ClientSession() as s:
            for method, path, body in ADMIN_REQUESTS:
                for scopes, tok in [((), None), *tokens.items()]:
                    headers = {} if tok is None else {"Authorization": f"Bearer {tok}"}
                    async with s.request(
                        method, server.url + path, json=body, headers=headers
                    ) as r:
                        answer = await r.json()
                    if tok is None:
                        assert r.status == 401, (method, path, answer)
                    elif "admin" not in scopes:
                        assert r.status == 403, (method, path, scopes, answer)
                        assert "'admin' scope" in answer["reason"]
                    else:
                        assert r.status not in (401, 403), (method, path, answer)
    finally:
        server.stop()


def test_secret_files_are_private(log: LogDir) -> None:
    cli("dev-init", "--data", str(log.data))
    for rel in ("keys/log.key", "keys/ct.key", "tokens.json", "dev-token"):
        mode = stat.S_IMODE((log.data / rel).stat().st_mode)
        assert mode == 0o600, f"{rel} has mode {mode:o}"
    assert stat.S_IMODE(log.data.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((log.data / "keys").stat().st_mode) & 0o077 == 0


async def test_no_secret_in_logs_errors_or_metrics(log: LogDir, tmp_path: Path) -> None:
    other = token(log, "other", "submit")
    cli("token", "revoke", "--data", str(log.data), "--name", "other")
    server = ServerProcess(log, tmp_path, "secrets")
    server.start()
    seen: list[str] = []
    try:
        async with aiohttp.ClientSession() as s:
            good = {"Authorization": f"Bearer {log.token}", "Idempotency-Key": "k1"}
            requests = [
                ("POST", "/add", good),
                ("POST", "/add?wait=0", {"Authorization": f"Bearer {log.token}"}),
                ("POST", "/add", {"Authorization": f"Bearer {other}"}),  # revoked
                ("POST", f"/add?token={log.token}", {}),  # a token in a query string
                ("POST", "/add", {"Authorization": f"Basic {log.token}"}),
                ("POST", "/add", {"Authorization": f"Bearer {log.token}x"}),
                ("GET", f"/entries/0?access_token={log.token}", {}),
                ("GET", "/entries/0", {"Authorization": f"Bearer {log.token}"}),
                ("POST", "/add-batch", {**good, "Content-Type": "text/plain"}),
            ]
            for method, path, headers in requests:
                async with s.request(method, server.url + path, data=b"p", headers=headers) as r:
                    seen.append(await r.text())
                    seen.append(json.dumps(dict(r.headers)))
            async with s.get(f"{server.url}/metrics") as r:
                seen.append(await r.text())
            async with s.get(f"{server.url}/healthz") as r:
                seen.append(await r.text())
    finally:
        server.stop()
    logs = server.output("stderr") + server.output("stdout")
    assert '"status":401' in logs  # the access log did record the refusals
    secrets = [log.token, other, *_private_key_material(log.data)]
    secrets += [hashlib.sha256(t.encode()).hexdigest() for t in (log.token, other)]
    secrets.append(log.token.removeprefix("tl_")[:20])
    for secret in secrets:
        assert secret not in logs
        for text in seen:
            assert secret not in text


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


async def test_tls_from_config(log: LogDir, tmp_path: Path) -> None:
    cert, key = self_signed(log.data / "tls")
    set_config(log.data, "server.tls_cert", "tls/cert.pem")
    set_config(log.data, "server.tls_key", "tls/key.pem")
    server = ServerProcess(log, tmp_path, "tls")
    server.scheme = "https"
    server.start()
    try:
        assert f"at https://127.0.0.1:{server.port}" in server.output("stdout")
        context = ssl.create_default_context(cafile=str(cert))
        headers = {"Authorization": f"Bearer {log.token}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as s:
            async with s.post(f"{server.url}/add", data=b"over tls", headers=headers) as r:
                assert r.status == 200
            async with s.get(f"{server.url}/checkpoint") as r:
                assert r.status == 200
        # Plain HTTP to the TLS port gets no answer; a client that doesn't trust it fails.
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{server.port}/checkpoint") as r:
                    await r.read()
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"{server.url}/checkpoint") as r:
                    await r.read()
    finally:
        server.stop()
    # A TLS key readable by others stops the server before it listens.
    os.chmod(key, 0o644)
    assert server.start(expect_failure=True) == 1
    assert "chmod 600" in server.output()
