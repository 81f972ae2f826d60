"""Bearer tokens: create, authenticate, revoke, scopes, the 0600 hash-only file, and reloads.

The last tests drive ``translog token create|revoke|list`` in-process through ``main``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from translog.cli.command import main
from translog.config import parse_config
from translog.errors import AuthError, ConfigError, ForbiddenError, NotFoundError
from translog.log.tokens import TOKEN_PREFIX, TokenStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "tokens.json"


def test_create_and_authenticate(path: Path) -> None:
    store = TokenStore(path)
    token = store.create("ci", ("submit", "read"), rate_per_s=5)
    assert token.startswith(TOKEN_PREFIX) and len(token) == 3 + 43
    info = store.authenticate(token, "submit")
    assert info.name == "ci" and info.scopes == ("submit", "read") and info.rate_per_s == 5
    assert store.authenticate(token, "read").name == "ci"


def test_tokens_are_unique(path: Path) -> None:
    store = TokenStore(path)
    a, b = store.create("a"), store.create("b")
    assert a != b
    assert store.authenticate(a, "submit").name == "a"
    assert store.authenticate(b, "submit").name == "b"


@pytest.mark.parametrize("token", [None, "", "tl_wrong", "Bearer x"])
def test_missing_or_unknown_tokens_are_rejected(path: Path, token: str | None) -> None:
    store = TokenStore(path)
    store.create("ci")
    with pytest.raises(AuthError):
        store.authenticate(token, "submit")


def test_scope_is_enforced(path: Path) -> None:
    store = TokenStore(path)
    token = store.create("reader", ("read",))
    with pytest.raises(ForbiddenError, match="token 'reader' lacks the 'submit' scope"):
        store.authenticate(token, "submit")


def test_revoke(path: Path) -> None:
    store = TokenStore(path)
    token = store.create("ci")
    store.revoke("ci")
    with pytest.raises(AuthError, match="invalid or revoked token"):
        store.authenticate(token, "submit")
    with pytest.raises(NotFoundError, match="no live token named 'ci'"):
        store.revoke("ci")
    (record,) = store.list()
    assert record.revoked_ms is not None and record.revoked_ms >= record.created_ms
    fresh = store.create("ci")  # the name is free again
    assert store.authenticate(fresh, "submit").revoked_ms is None


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("", ("submit",), "token name"),
        ("has space", ("submit",), "token name"),
        ("x" * 65, ("submit",), "token name"),
        ("ok", ("write",), "token scopes: unknown"),
        ("ok", (), "token scopes"),
    ],
)
def test_bad_names_and_scopes(path: Path, name: str, scopes: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TokenStore(path).create(name, scopes)


def test_duplicate_live_name_is_refused(path: Path) -> None:
    store = TokenStore(path)
    store.create("ci")
    with pytest.raises(ConfigError, match="a live token named 'ci' exists"):
        store.create("ci")


def test_file_is_0600_and_holds_only_hashes(path: Path) -> None:
    store = TokenStore(path)
    token = store.create("ci", ("submit",))
    assert mode(path) == 0o600
    text = path.read_text()
    assert token not in text and token[3:] not in text
    data = json.loads(text)
    (record,) = data["tokens"]
    assert record["hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert set(record) == {
        "name",
        "hash",
        "scopes",
        "created_ms",
        "revoked_ms",
        "rate_per_s",
        "tenants",
    }
    assert not list(path.parent.glob("*.tmp")), "no temporary file is left behind"


def test_group_readable_file_is_refused(path: Path) -> None:
    TokenStore(path).create("ci")
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="run chmod 600"):
        TokenStore(path)


def test_malformed_file_is_refused(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'{"tokens": [{"name": "x"}]}')
    os.close(fd)
    with pytest.raises(ConfigError, match="is malformed"):
        TokenStore(path)


def test_a_running_store_sees_changes_on_disk(path: Path) -> None:
    server = TokenStore(path)  # the file does not exist yet
    cli = TokenStore(path)
    token = cli.create("late")
    assert server.authenticate(token, "submit").name == "late"
    cli.revoke("late")
    # Same-second writes: make the change visible even on coarse mtime filesystems.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    with pytest.raises(AuthError):
        server.authenticate(token, "submit")


def test_memory_store_has_no_file(tmp_path: Path) -> None:
    store = TokenStore()
    token = store.create("mem")
    assert store.authenticate(token, "submit").name == "mem"
    assert list(tmp_path.iterdir()) == []


def test_every_stored_hash_is_compared(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TokenStore(path)
    tokens = [store.create(f"t{i}") for i in range(5)]
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: str, b: str) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr("translog.log.tokens.hmac.compare_digest", counting)
    store.authenticate(tokens[0], "submit")
    assert len(calls) == 5, "no early exit on a match: timing does not reveal which token"


# -- the CLI ---------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert main(["init", "--data", str(d), "--origin", "tokens.example/log"]) == 0
    return d


def test_cli_create_prints_only_the_token(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    argv = ["token", "create", "--data", str(data), "--name", "ci", "--scope", "submit"]
    assert main([*argv, "--scope", "read", "--rate", "20"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    token = out.strip()
    info = TokenStore(data / "tokens.json").authenticate(token, "read")
    assert info.scopes == ("submit", "read") and info.rate_per_s == 20
    assert mode(data / "tokens.json") == 0o600


def test_cli_default_scope_is_submit(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["token", "create", "--data", str(data), "--name", "ci"]) == 0
    token = capsys.readouterr().out.strip()
    store = TokenStore(data / "tokens.json")
    assert store.authenticate(token, "submit").scopes == ("submit",)


def test_cli_revoke_and_list(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--data", str(data), "--name", "ci"]) == 0
    assert main(["token", "create", "--data", str(data), "--name", "ops", "--scope", "admin"]) == 0
    token = capsys.readouterr().out.split()[0]
    assert main(["token", "revoke", "--data", str(data), "--name", "ci"]) == 0
    assert main(["token", "revoke", "--data", str(data), "--name", "ci"]) == 1
    assert "no live token named 'ci'" in capsys.readouterr().err
    assert main(["token", "list", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "CREATED", "REVOKED", "RATE/S"]
    ci, ops = lines[1].split(), lines[2].split()
    assert ci[0] == "ci" and ci[3].endswith("Z") and ci[4] == "unlimited"
    assert ops[:2] == ["ops", "admin"] and ops[3] == "-"
    record = json.loads((data / "tokens.json").read_text())["tokens"][0]
    assert token not in out and record["hash"] not in out


def test_cli_refuses_bad_input(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", "create", "--data", str(tmp_path / "none"), "--name", "x"]) == 1
    assert "does not hold a log" in capsys.readouterr().err
    assert main(["token", "create", "--data", str(data), "--name", "x", "--rate", "-1"]) == 1
    assert "--rate: must be 0 (unlimited) or positive" in capsys.readouterr().err
    assert main(["token", "create", "--data", str(data), "--name", "x", "--scope", "root"]) == 2


def test_dev_init_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["dev-init", "--data", str(data), "--origin", "localhost/dev"]) == 0
    first = capsys.readouterr().out
    assert main(["dev-init", "--data", str(data), "--origin", "ignored/when-present"]) == 0
    second = capsys.readouterr().out
    assert "initialised a development log" in first and "initialised" not in second
    assert first.splitlines()[1:] == second.splitlines()
    lines = dict(line.split(":", 1) for line in second.splitlines())
    assert lines["origin"].strip() == "localhost/dev"
    assert lines["vkey"].strip() == (data / "keys" / "log.vkey").read_text().strip()
    token = lines["dev token"].split()[0]
    assert (data / "dev-token").read_text().strip() == token
    assert mode(data / "dev-token") == 0o600
    info = TokenStore(data / "tokens.json").authenticate(token, "read")
    assert info.name == "dev" and info.scopes == ("submit", "read")
    assert info.tenants == ("*",)  # so the README's /events/search works with it
    # make run's log has the audit-event layer on; a plain `translog init` log does not
    assert "events:    on (/events/search, /explorer)" in second
    assert parse_config((data / "translog.toml").read_text()).events.enabled
    assert main(["init", "--data", str(tmp_path / "plain"), "--origin", "localhost/plain"]) == 0
    plain = (tmp_path / "plain" / "translog.toml").read_text()
    assert not parse_config(plain).events.enabled


def test_dev_init_adds_a_token_to_an_existing_log(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev-init", "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "origin:    tokens.example/log" in out
    token = (data / "dev-token").read_text().strip()
    assert TokenStore(data / "tokens.json").authenticate(token, "submit").name == "dev"
    os.chmod(data / "dev-token", 0o644)
    assert main(["dev-init", "--data", str(data)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_tenant_scopes(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token = store.create("auditor", ("read",), tenants=("acme", "acme", "globex"))
    info = TokenStore(tmp_path / "tokens.json").authenticate(token, "read")
    assert info.tenants == ("acme", "globex")
    assert info.allows_tenant("acme") and not info.allows_tenant("initech")
    star = store.authenticate(store.create("all", ("read",), tenants=("*",)), "read")
    assert star.allows_tenant("initech")
    plain = store.authenticate(store.create("plain", ("read",)), "read")
    assert not plain.allows_tenant("acme")
    with pytest.raises(ConfigError, match="tenant"):
        store.create("bad", ("read",), tenants=(" x",))
