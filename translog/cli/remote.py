"""What the commands that talk to a log share: the verifying client built from a command's
options (vkey, tokens, state file, witness policy), and the evidence an inconsistency leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from translog.cli.common import READ_TOKEN_ENV, TOKEN_ENV, eprint, read_file, vkey_from
from translog.errors import InconsistencyError, TranslogError

if TYPE_CHECKING:
    from translog.client import SyncLogClient
    from translog.core.policy import WitnessPolicy


def policy_from(args: argparse.Namespace) -> WitnessPolicy | None:
    from translog.core.policy import parse_policy

    if args.policy is None:
        return None
    return parse_policy(read_file(args.policy, "policy file").decode("utf-8", "replace"))


def open_client(args: argparse.Namespace) -> SyncLogClient:
    """A verifying client for ``--url`` with the options this command has."""
    from translog.client import SyncLogClient

    return SyncLogClient(
        args.url,
        vkey_from(args),
        token=getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None,
        read_token=getattr(args, "read_token", None) or os.environ.get(READ_TOKEN_ENV) or None,
        state_path=getattr(args, "state", None),
        policy=policy_from(args) if hasattr(args, "policy") else None,
        timeout=args.timeout,
    )


def json_bytes(obj: object, *, compact: bool = False) -> bytes:
    if compact:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    return json.dumps(obj, indent=2, ensure_ascii=False).encode() + b"\n"


@contextlib.contextmanager
def keep_evidence(args: argparse.Namespace, origin: str) -> Iterator[None]:
    """Write the evidence of an InconsistencyError to stderr and a file, then re-raise it."""
    try:
        yield
    except InconsistencyError as e:
        path = _write_evidence(e, origin, args.url, Path(args.evidence_dir))
        eprint(f"translog: evidence written to {path}")
        raise


def _write_evidence(e: InconsistencyError, origin: str, url: str, directory: Path) -> Path:
    import base64

    def text(note: object) -> str | None:
        return note.decode("utf-8", "replace") if isinstance(note, bytes) else None

    now = now_ms()
    evidence = {
        "format": "translog-evidence/v1",
        "origin": origin,
        "url": url,
        "detected_at": now,
        "reason": str(e),
        "older": text(e.older),
        "newer": text(e.newer),
        "proof": [base64.b64encode(h).decode() for h in (e.proof or [])],
    }
    data = json_bytes(evidence)
    sys.stderr.write(data.decode())
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", origin).strip("_") or "log"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1000)) + f"{now % 1000:03d}Z"
    path = directory / f"translog-evidence-{safe}-{stamp}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
    except OSError as err:
        raise TranslogError(f"couldn't write evidence file {path}: {err.strerror}") from e
    return path


def now_ms() -> int:
    return int(time.time() * 1000)


def add_evidence_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--evidence-dir", default=".", metavar="DIR", help="where inconsistency evidence goes"
    )
