"""What every ``translog`` command module shares: exit codes, stderr output, progress lines,
reading and writing the files named on the command line, and the options many commands take
(``--data``, and the log's URL, vkey, tokens, state and policy).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from translog.errors import ConfigError, TranslogError

if TYPE_CHECKING:
    from translog.config import Config

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_VERIFY, EXIT_INCONSISTENT = 0, 1, 2, 3, 4


def eprint(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


class Progress:
    """Progress lines on stderr for long work, at most a few per second."""

    def __init__(self, what: str, enabled: bool = True) -> None:
        self.what = what
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        interval = 0.5 if self.tty else 5.0
        if not self.enabled or (now - self.last < interval and done < total):
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        pct = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total or not self.tty else "\r"
        print(
            f"{self.what}: {done}/{total} ({pct:5.1f}%), {rate:,.0f}/s",
            end=end,
            file=sys.stderr,
            flush=True,
        )


TOKEN_ENV = "TRANSLOG_TOKEN"
READ_TOKEN_ENV = "TRANSLOG_READ_TOKEN"


def read_file(path: str, what: str) -> bytes:
    """The bytes of ``path`` (``-`` is stdin); unreadable files are a plain error (exit 1)."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TranslogError(f"couldn't read {what} {path}: {e.strerror}") from e


def write_file(path: str | None, data: bytes) -> None:
    """Write ``data`` to ``path``, or to stdout for None or ``-``."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise TranslogError(f"couldn't write {path}: {e.strerror}") from e


def vkey_from(args: argparse.Namespace) -> str:
    """The log's vkey from ``--vkey`` or ``--vkey-file`` (one non-empty line)."""
    if args.vkey is not None:
        return str(args.vkey).strip()
    lines = [x for x in read_file(args.vkey_file, "vkey file").decode().splitlines() if x.strip()]
    if len(lines) != 1:
        raise ConfigError(f"--vkey-file {args.vkey_file}: expected one vkey line, got {len(lines)}")
    return lines[0].strip()


def data_config(data: Path, config_path: str | None = None) -> Config:
    from translog.config import CONFIG_NAME, load_config
    from translog.log.datadir import is_initialised

    if not is_initialised(data):
        raise ConfigError(f"{data} does not hold a log; run `translog init` first")
    return load_config(config_path or data / CONFIG_NAME)


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="the log's data directory")


def add_log_args(
    p: argparse.ArgumentParser,
    *,
    url: bool = True,
    read_token: bool = True,
    state: bool = True,
    policy: bool = True,
) -> None:
    """The options every client command shares."""
    if url:
        p.add_argument("--url", required=True, help="the log's base URL, e.g. http://host:8080")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--vkey", help="the log's verifier key (its name is the origin)")
    key.add_argument("--vkey-file", metavar="FILE", help="a file holding the vkey")
    if url:
        p.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    if read_token:
        p.add_argument("--read-token", help=f"token with scope read (default: ${READ_TOKEN_ENV})")
    if state:
        p.add_argument(
            "--state", metavar="FILE", help="keep the last verified checkpoint here, check growth"
        )
    if policy:
        p.add_argument("--policy", metavar="FILE", help="witness policy the checkpoint must meet")
