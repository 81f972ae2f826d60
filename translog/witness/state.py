"""A witness's state: the latest checkpoint it cosigned, per origin, in its own LMDB.

Each record is ``u64 size || 32-byte root || the signed checkpoint note`` under the origin's
UTF-8 bytes in the ``latest`` sub-database. :meth:`LMDBWitnessState.update` is the
check-then-update of tlog-witness: it reads the record, lets the caller decide, and writes the
new one in **one** LMDB write transaction, committed with an fsync before it returns, so a
reply is only ever sent for a state already on disk, and two requests can never interleave
between the check and the write (LMDB has a single writer at a time).

``lmdb`` is imported only when the state is opened (``tests/test_layers.py``: only the log's
storage backend imports it at module level).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from translog.errors import StorageCorruptError, StorageError, StorageFullError

_HEADER = struct.Struct(">Q32s")
_DB_LATEST = b"latest"


@dataclass(frozen=True)
class WitnessRecord:
    """The latest cosigned checkpoint of one origin: size, root and the log-signed note."""

    size: int
    root_hash: bytes
    note: bytes

    def encode(self) -> bytes:
        """The stored value."""
        return _HEADER.pack(self.size, self.root_hash) + self.note

    @classmethod
    def decode(cls, value: bytes) -> WitnessRecord:
        """Parse a stored value; a short one is corrupt storage."""
        if len(value) < _HEADER.size:
            raise StorageCorruptError(f"witness record is {len(value)} bytes, too short")
        size, root = _HEADER.unpack_from(value)
        return cls(size, root, bytes(value[_HEADER.size :]))


Decide = Callable[[WitnessRecord | None], WitnessRecord]
"""Given the current record (None: never cosigned), return the new one, or raise to refuse."""


class WitnessState(Protocol):
    """Where a witness keeps its latest cosigned checkpoints."""

    def get(self, origin: str) -> WitnessRecord | None:
        """The latest record for ``origin``."""
        ...

    def records(self) -> dict[str, WitnessRecord]:
        """Every origin's latest record."""
        ...

    def update(self, origin: str, decide: Decide) -> WitnessRecord:
        """Atomically read, decide and durably write; return the new record."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class MemoryWitnessState:
    """The in-memory twin, for tests: one lock makes ``update`` atomic."""

    def __init__(self) -> None:
        self._records: dict[str, WitnessRecord] = {}
        self._lock = threading.Lock()

    def get(self, origin: str) -> WitnessRecord | None:
        """The latest record for ``origin``."""
        return self._records.get(origin)

    def records(self) -> dict[str, WitnessRecord]:
        """Every origin's latest record."""
        return dict(self._records)

    def update(self, origin: str, decide: Decide) -> WitnessRecord:
        """Atomically read, decide and write."""
        with self._lock:
            new = decide(self._records.get(origin))
            self._records[origin] = new
            return new

    def close(self) -> None:
        """Nothing to release."""


class LMDBWitnessState:
    """The witness state in an LMDB environment at ``path`` (a directory)."""

    def __init__(self, path: str | Path, *, map_size: int = 64 << 20) -> None:
        import lmdb

        self._lmdb: Any = lmdb
        directory = Path(path)
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._env = lmdb.open(
                str(directory), map_size=map_size, max_dbs=2, subdir=True, sync=True
            )
            self._db = self._env.open_db(_DB_LATEST)
        except lmdb.Error as e:
            raise StorageError(f"couldn't open witness state {directory}: {e}") from e
        except OSError as e:
            raise StorageError(f"couldn't open witness state {directory}: {e.strerror}") from e

    def get(self, origin: str) -> WitnessRecord | None:
        """The latest record for ``origin``."""
        try:
            with self._env.begin(db=self._db) as txn:
                value = txn.get(origin.encode("utf-8"))
        except self._lmdb.Error as e:
            raise StorageError(f"witness state read failed: {e}") from e
        return None if value is None else WitnessRecord.decode(value)

    def records(self) -> dict[str, WitnessRecord]:
        """Every origin's latest record."""
        try:
            with self._env.begin(db=self._db) as txn:
                items = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
        except self._lmdb.Error as e:
            raise StorageError(f"witness state read failed: {e}") from e
        return {k.decode("utf-8"): WitnessRecord.decode(v) for k, v in items}

    def update(self, origin: str, decide: Decide) -> WitnessRecord:
        """Read, decide and write in one write transaction; durable when this returns.

        If ``decide`` raises, the transaction is aborted and nothing changes.
        """
        key = origin.encode("utf-8")
        try:
            with self._env.begin(db=self._db, write=True) as txn:
                value = txn.get(key)
                new = decide(None if value is None else WitnessRecord.decode(value))
                txn.put(key, new.encode())
        except self._lmdb.MapFullError as e:
            raise StorageFullError(f"witness state is full: {e}") from e
        except self._lmdb.Error as e:
            raise StorageError(f"witness state write failed: {e}") from e
        return new

    def close(self) -> None:
        """Close the environment."""
        self._env.close()
