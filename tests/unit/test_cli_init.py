"""`translog init` and `translog vkey`: keys 0600, config, LMDB, vkey last, never clobber."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from translog.cli.command import main
from translog.core.vkey import parse_vkey
from translog.errors import ConfigError
from translog.log.datadir import open_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["init", "--data", str(data), "--origin", "audit.example.com/log1"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    vkey = out[-1]
    verifier = parse_vkey(vkey)
    assert verifier.name == "audit.example.com/log1"
    assert mode(data / "keys" / "log.key") == 0o600
    assert mode(data / "keys" / "ct.key") == 0o600
    assert (data / "translog.toml").exists() and (data / "lmdb" / "data.mdb").exists()
    assert "PRIVATE+KEY" not in "\n".join(out)
    d = open_data_dir(data)
    assert d.signer.vkey == vkey and d.config.log.origin == "audit.example.com/log1"
    assert main(["vkey", "--data", str(data)]) == 0
    assert capsys.readouterr().out.strip() == vkey


def test_init_refuses_an_existing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["init", "--data", str(data), "--origin", "a.example/log"]) == 0
    key_before = (data / "keys" / "log.key").read_bytes()
    assert main(["init", "--data", str(data), "--origin", "b.example/log"]) == 1
    assert "refusing" in capsys.readouterr().err
    assert (data / "keys" / "log.key").read_bytes() == key_before


@pytest.mark.parametrize("key", ["log.key", "ct.key"])
def test_readable_private_key_is_refused(tmp_path: Path, key: str) -> None:
    data = tmp_path / "data"
    assert main(["init", "--data", str(data), "--origin", "a.example/log"]) == 0
    (data / "keys" / key).chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        open_data_dir(data)


def test_bad_origin_and_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--data", str(tmp_path / "d"), "--origin", "has space"]) == 1
    assert "log.origin" in capsys.readouterr().err
    assert main(["init", "--data", str(tmp_path / "d")]) == 2
    assert main(["vkey", "--data", str(tmp_path / "missing")]) == 1
    assert main(["fsck", "--data", str(tmp_path / "missing")]) == 1
