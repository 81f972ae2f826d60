"""``translog witness``, ``translog keygen --witness`` and ``translog verify-misbehaviour``.

* ``translog keygen --witness NAME [-o FILE]`` creates a witness key (Ed25519, written 0600,
  never overwritten) and prints its cosignature/v1 (type 0x04) vkey as the last line.
* ``translog witness -c witness.toml [--listen HOST:PORT] [--ready-file PATH]`` runs the
  tlog-witness server (and gossip, when peers are configured).
* ``translog verify-misbehaviour FILE --vkey V`` proves offline, from a misbehaviour file,
  that the log signed two incompatible histories (exit 0), or explains why the file does not
  prove it (exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from translog.cli.common import EXIT_OK
from translog.errors import ConfigError, MalformedError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the witness commands."""
    p = sub.add_parser("keygen", help="create a key for another role (a witness)")
    p.add_argument("--witness", required=True, metavar="NAME", help="the witness's key name")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="private key file (default: witness.key); mode 0600"
    )
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser("witness", help="run a tlog-witness server (add-checkpoint, gossip)")
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="witness.toml")
    p.add_argument("--listen", metavar="HOST:PORT", help="override witness.listen; port 0 = any")
    p.add_argument("--ready-file", metavar="PATH", help="write the bound port here once serving")
    p.set_defaults(func=_cmd_witness)

    p = sub.add_parser(
        "verify-misbehaviour", help="prove OFFLINE that a log signed two incompatible histories"
    )
    p.add_argument("file", help="a misbehaviour file written by gossip or a witness; - is stdin")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--vkey", help="the log's verifier key")
    key.add_argument("--vkey-file", metavar="FILE", help="a file holding the vkey")
    p.set_defaults(func=_cmd_verify_misbehaviour)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from translog.core.note import validate_key_name
    from translog.core.signing import CosignatureSigner
    from translog.keyfile import write_private_file

    try:
        validate_key_name(args.witness)
    except MalformedError as e:
        raise ConfigError(f"--witness: {e}") from e
    path = Path(args.output or "witness.key")
    signer = CosignatureSigner.generate(args.witness)
    write_private_file(path, (signer.skey + "\n").encode("ascii"))
    print(f"private key: {path} (mode 0600)", file=sys.stderr)
    print(signer.vkey)
    return EXIT_OK


def _cmd_witness(args: argparse.Namespace) -> int:
    from translog.core.signing import CosignatureSigner
    from translog.formats.misbehaviour import Misbehaviour
    from translog.gossip.core import Gossip, write_misbehaviour_file
    from translog.http.app import configure_logging, parse_listen, run_server
    from translog.http.witness import WitnessView, make_witness_app
    from translog.keyfile import read_private_file
    from translog.witness.config import load_witness_config
    from translog.witness.core import Witness
    from translog.witness.state import LMDBWitnessState

    config = load_witness_config(args.config)
    signer = CosignatureSigner.from_skey(read_private_file(config.key).decode("ascii", "replace"))
    host, port = parse_listen(args.listen or config.listen)
    misbehaviour_dir = config.base / config.gossip.misbehaviour_dir

    gossips: list[Gossip] = []

    def on_misbehaviour(m: Misbehaviour) -> None:
        path = write_misbehaviour_file(misbehaviour_dir, m)
        print(f"translog witness: misbehaviour of {m.origin} written to {path}", file=sys.stderr)
        for g in gossips:  # listed in /gossip/v1/status with the ones gossip finds
            g.files.append(str(path))
            g.alerts.append(f"{m.kind}: log {m.origin} ({path.name})")

    configure_logging()
    state = LMDBWitnessState(config.state)
    witness = Witness(signer, config.logs, state, on_misbehaviour=on_misbehaviour)
    gossip = Gossip(
        WitnessView(witness),
        config.gossip.peers,
        name=signer.name,
        misbehaviour_dir=misbehaviour_dir,
        interval_ms=config.gossip.interval_ms,
        timeout_ms=config.gossip.timeout_ms,
        unproven_rounds=config.gossip.unproven_rounds,
    )
    gossips.append(gossip)
    app = make_witness_app(witness, prefix=config.prefix, gossip=gossip)

    def ready(bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"translog witness {signer.name} at http://{shown}:{bound}", flush=True)
        print(signer.vkey, flush=True)

    ready_file = Path(args.ready_file) if args.ready_file else None
    asyncio.run(run_server(app, host, port, ready_file=ready_file, on_ready=ready))
    return EXIT_OK


def _cmd_verify_misbehaviour(args: argparse.Namespace) -> int:
    from translog.core.vkey import parse_vkey
    from translog.formats.misbehaviour import verify_misbehaviour

    if args.vkey is not None:
        vkey = args.vkey
    else:
        try:
            vkey = Path(args.vkey_file).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"couldn't read vkey file {args.vkey_file}: {e.strerror}") from e
    verifier = parse_vkey(vkey.strip())
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(args.file).read_bytes()
        except OSError as e:
            raise ConfigError(f"couldn't read {args.file}: {e.strerror}") from e
    proven = verify_misbehaviour(data, verifier)
    m = proven.misbehaviour
    print(f"proven: log {proven.older.origin} signed two incompatible histories ({m.kind})")
    print(f"  checkpoint A: size {proven.older.size}")
    print(f"  checkpoint B: size {proven.newer.size}")
    print(f"  {proven.statement}")
    if m.detected_by or m.peer:
        print(f"  detected by {m.detected_by or '?'} comparing with {m.peer or '?'}")
    return EXIT_OK
