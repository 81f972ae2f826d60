"""The state file: the last verified checkpoint per log, kept across restarts and processes.

The client remembers the largest checkpoint it verified for each origin, the way Go's checksum
database client keeps its latest tree: in memory, and in a small JSON state file when a path
is given, so the memory survives restarts and is shared between processes::

    {"logs": {"<origin>": {"size": 8, "root_hash": "<base64>", "note": "<signed note>"}}}

Every stored note is verified again when it is read, so the file cannot be edited silently.
Writes are atomic and private (temporary file, fsync, rename, mode 0600, directory fsync),
and :meth:`State.replace` is a compare-and-swap under a lock file, so concurrent clients never
lose a check.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from translog.client.checkpoints import Trusted
from translog.core.checkpoint import open_checkpoint
from translog.core.jsonfields import encode_base64
from translog.core.signing import NoteVerifier
from translog.errors import ConfigError, MalformedError, TranslogError, VerificationError


class State:
    """The last verified checkpoint per origin: in memory, or in a JSON state file.

    ``replace`` is a compare-and-swap, so two clients sharing the file never overwrite a
    checkpoint that the other verified without checking theirs against it first.
    """

    def __init__(self, path: Path | None, verifier: NoteVerifier) -> None:
        self.path = path
        self._verifier = verifier
        self._memory: dict[str, Trusted] = {}
        self._lock = threading.Lock()

    def get(self, origin: str) -> Trusted | None:
        """The trusted checkpoint for ``origin``, or None."""
        if self.path is None:
            return self._memory.get(origin)
        raw = self._read().get(origin)
        return None if raw is None else self._decode(origin, raw)

    def replace(self, origin: str, expected: Trusted | None, new: Trusted) -> bool:
        """Store ``new`` if ``origin`` still maps to ``expected``; False if it changed."""
        with self._lock:
            if self.path is None:
                if self._memory.get(origin) != expected:
                    return False
                self._memory[origin] = new
                return True
            with self._file_lock():
                logs = self._read()
                raw = logs.get(origin)
                current = None if raw is None else self._decode(origin, raw)
                if current != expected:
                    return False
                logs[origin] = {
                    "size": new.size,
                    "root_hash": encode_base64(new.root_hash),
                    "note": new.note.decode("utf-8"),
                }
                self._write(logs)
                return True

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        assert self.path is not None
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"couldn't open state lock file {lock_path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"couldn't read state file {self.path}: {e}") from e
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MalformedError(f"state file {self.path} is not JSON: {e.msg}") from e
        logs = data.get("logs") if isinstance(data, dict) else None
        if not isinstance(logs, dict):
            raise MalformedError(f"state file {self.path}: expected an object with 'logs'")
        return logs

    def _decode(self, origin: str, raw: object) -> Trusted:
        """Parse one entry and re-verify its note, so the file cannot be edited silently."""
        where = f"state file {self.path}: log {origin!r}"
        if not isinstance(raw, dict) or not isinstance(raw.get("note"), str):
            raise MalformedError(f"{where}: expected an object with size, root_hash and note")
        note = raw["note"].encode("utf-8")
        try:
            cp, _, _ = open_checkpoint(note, self._verifier)
        except TranslogError as e:
            raise VerificationError(f"{where}: the stored note does not verify: {e}") from e
        if raw.get("size") != cp.size or raw.get("root_hash") != encode_base64(cp.root_hash):
            raise VerificationError(f"{where}: size or root_hash differ from the signed note")
        return Trusted(cp.size, cp.root_hash, note)

    def _write(self, logs: dict[str, Any]) -> None:
        assert self.path is not None
        data = json.dumps({"logs": logs}, indent=1, sort_keys=True).encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise ConfigError(f"couldn't write state file {self.path}: {e.strerror}") from e
