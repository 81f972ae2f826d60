"""CLI: keygen --witness, verify-misbehaviour, and the witness config files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from translog.cli.command import main
from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import ConfigError
from translog.formats.misbehaviour import KIND_SAME_SIZE, Misbehaviour, format_misbehaviour
from translog.witness.config import load_witness_config, parse_witness_config

REPO = Path(__file__).resolve().parents[2]


def test_keygen_witness(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "w.key"
    assert main(["keygen", "--witness", "witness.example/w1", "-o", str(key)]) == 0
    vkey = capsys.readouterr().out.strip().splitlines()[-1]
    verifier = parse_vkey(vkey)
    assert verifier.key_type == 0x04 and verifier.name == "witness.example/w1"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = CosignatureSigner.from_skey(key.read_text())
    assert signer.vkey == vkey
    assert main(["keygen", "--witness", "witness.example/w1", "-o", str(key)]) == 1  # no clobber
    assert main(["keygen", "--witness", "bad name", "-o", str(tmp_path / "x")]) == 1


def test_verify_misbehaviour_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = NoteSigner.generate("test.example/cli")
    a = sign_checkpoint(Checkpoint(signer.name, 3, b"\1" * 32), signer)
    b = sign_checkpoint(Checkpoint(signer.name, 3, b"\2" * 32), signer)
    path = tmp_path / "m.json"
    path.write_bytes(format_misbehaviour(Misbehaviour(signer.name, KIND_SAME_SIZE, a, b)))
    assert main(["verify-misbehaviour", str(path), "--vkey", signer.vkey]) == 0
    out = capsys.readouterr().out
    assert out.startswith("proven: log test.example/cli signed two incompatible histories")
    same = tmp_path / "same.json"
    same.write_bytes(format_misbehaviour(Misbehaviour(signer.name, KIND_SAME_SIZE, a, a)))
    assert main(["verify-misbehaviour", str(same), "--vkey", signer.vkey]) == 3
    assert "does not prove misbehaviour" in capsys.readouterr().err
    other = NoteSigner.generate("test.example/cli")
    assert main(["verify-misbehaviour", str(path), "--vkey", other.vkey]) == 3


def test_witness_configs(tmp_path: Path) -> None:
    example = load_witness_config(REPO / "config" / "witness.example.toml")
    assert example.gossip.peers == () and list(example.logs) == ["audit.example.com/prod"]
    signer = NoteSigner.generate("test.example/cfg")
    text = f"""
[witness]
key = "k"
[[log]]
origin = "test.example/cfg"
vkey = "{signer.vkey}"
[gossip]
peers = ["http://127.0.0.1:9/"]
"""
    cfg = parse_witness_config(text, base=tmp_path)
    assert cfg.key == tmp_path / "k" and cfg.gossip.peers == ("http://127.0.0.1:9",)
    for bad, where in (
        (text.replace('key = "k"', 'ky = "k"'), "witness.ky"),
        (text.replace("[gossip]", "[gossip]\nfoo = 1"), "gossip.foo"),
        (text.replace('["http://127.0.0.1:9/"]', '["ftp://x"]'), "gossip.peers"),
        (text.replace(signer.vkey, "nope"), "log[0].vkey"),
        (text.split("[[log]]")[0], "log"),
    ):
        with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")):
            parse_witness_config(bad, base=tmp_path)


def test_monitor_gossip_section(tmp_path: Path) -> None:
    from translog.monitor.config import parse_monitor_config

    signer = NoteSigner.generate("test.example/mon")
    base = f"""
[[log]]
url = "http://127.0.0.1:1"
vkey = "{signer.vkey}"
"""
    assert parse_monitor_config(base, base=tmp_path).gossip is None
    cfg = parse_monitor_config(
        base + '[gossip]\nlisten = "127.0.0.1:0"\npeers = ["http://127.0.0.1:2"]\n', base=tmp_path
    )
    assert cfg.gossip is not None and cfg.gossip.peers == ("http://127.0.0.1:2",)
    assert cfg.gossip.misbehaviour_dir == str(tmp_path / "misbehaviour")
    with pytest.raises(ConfigError, match=r"gossip\.lisen"):
        parse_monitor_config(base + '[gossip]\nlisen = "x"\n', base=tmp_path)
