"""The monitor's own state: one SQLite file, never the log's files.

Per log it keeps the last verified checkpoint (signed note, size, root) and the *edge* of the
recomputed tree (:mod:`translog.monitor.recompute`), so a restart resumes exactly at the last
verified checkpoint; plus availability counters, promises it was given, content-rule windows and
the alerts already raised (each alert is raised once, not on every poll). Everything a poll
changes is written in one transaction, after the checkpoint verified, so a crash at any point
leaves the state of the previous verified checkpoint. A lock file beside the database keeps a
second monitor from sharing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from translog.errors import ConfigError, StorageError
from translog.formats.rules import Hit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS logs (
  name TEXT PRIMARY KEY, origin TEXT NOT NULL, size INTEGER NOT NULL, root BLOB NOT NULL,
  note BLOB NOT NULL, edge BLOB NOT NULL, changed_at INTEGER NOT NULL,
  verified_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS availability (
  name TEXT PRIMARY KEY, failures INTEGER NOT NULL, since INTEGER NOT NULL,
  alerted INTEGER NOT NULL, error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS promises (
  name TEXT NOT NULL, leaf_hash BLOB NOT NULL, timestamp INTEGER NOT NULL,
  deadline INTEGER NOT NULL, body TEXT NOT NULL, status TEXT NOT NULL, idx INTEGER,
  PRIMARY KEY (name, leaf_hash));
CREATE TABLE IF NOT EXISTS windows (
  name TEXT NOT NULL, rule TEXT NOT NULL, grp TEXT NOT NULL, idx INTEGER NOT NULL,
  ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, fingerprint TEXT NOT NULL,
  detected_at INTEGER NOT NULL, evidence TEXT NOT NULL, line TEXT NOT NULL,
  UNIQUE (name, kind, fingerprint));
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, line TEXT NOT NULL);
"""
SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class LogState:
    """The last verified checkpoint of one log and the edge of its recomputed tree."""

    origin: str
    size: int
    root: bytes
    note: bytes
    edge: bytes
    changed_at: int
    """When the checkpoint last changed (ms): the base of the stale check."""
    verified_at: int


@dataclass(frozen=True)
class Availability:
    """Consecutive failed polls of a log."""

    failures: int
    since: int
    alerted: bool
    error: str


@dataclass(frozen=True)
class PromiseRecord:
    """A promise the monitor holds a log to."""

    leaf_hash: bytes
    timestamp: int
    deadline: int
    body: str
    status: str
    index: int | None


class Store:
    """The SQLite state file (created 0600 on first use)."""

    def __init__(self, path: Path) -> None:
        """Open (creating) the state and take its lock; ``ConfigError`` if another holds it."""
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(str(path) + ".lock", "a")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock.close()
            raise ConfigError(f"monitor state {path} is in use by another monitor") from e
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise ConfigError(f"monitor state {path} has schema {row[0]}, expected 1")
        except sqlite3.Error as e:
            self._lock.close()
            raise StorageError(f"monitor state {path}: {e}") from e

    def close(self) -> None:
        """Close the database and release the lock."""
        self._db.close()
        self._lock.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic, durable write."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- checkpoints ------------------------------------------------------------------------

    def log(self, name: str) -> LogState | None:
        """The last verified state of a log, or None before its first verified checkpoint."""
        row = self._db.execute(
            "SELECT origin, size, root, note, edge, changed_at, verified_at FROM logs WHERE name=?",
            (name,),
        ).fetchone()
        return None if row is None else LogState(*row)

    def logs(self) -> dict[str, LogState]:
        """Every log's state, by name."""
        rows = self._db.execute(
            "SELECT name, origin, size, root, note, edge, changed_at, verified_at FROM logs"
        ).fetchall()
        return {r[0]: LogState(*r[1:]) for r in rows}

    def put_log(self, name: str, s: LogState) -> None:
        """Replace a log's state (call inside :meth:`transaction`)."""
        self._db.execute(
            "INSERT OR REPLACE INTO logs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (name, s.origin, s.size, s.root, s.note, s.edge, s.changed_at, s.verified_at),
        )

    # -- availability ------------------------------------------------------------------------

    def availability(self, name: str) -> Availability | None:
        """Consecutive failures of a log, or None when its last poll succeeded."""
        row = self._db.execute(
            "SELECT failures, since, alerted, error FROM availability WHERE name=?", (name,)
        ).fetchone()
        return None if row is None else Availability(row[0], row[1], bool(row[2]), row[3])

    def put_availability(self, name: str, a: Availability | None) -> None:
        """Record failures (None: the log answered)."""
        if a is None:
            self._db.execute("DELETE FROM availability WHERE name=?", (name,))
        else:
            self._db.execute(
                "INSERT OR REPLACE INTO availability VALUES (?, ?, ?, ?, ?)",
                (name, a.failures, a.since, int(a.alerted), a.error),
            )

    # -- promises ----------------------------------------------------------------------------

    def add_promise(self, name: str, p: PromiseRecord) -> bool:
        """Remember a promise; False if it was known already."""
        cur = self._db.execute(
            "INSERT OR IGNORE INTO promises VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, p.leaf_hash, p.timestamp, p.deadline, p.body, p.status, p.index),
        )
        return cur.rowcount == 1

    def promises(self, name: str, status: str = "pending") -> list[PromiseRecord]:
        """Promises of a log with this status, earliest deadline first."""
        rows = self._db.execute(
            "SELECT leaf_hash, timestamp, deadline, body, status, idx FROM promises "
            "WHERE name=? AND status=? ORDER BY deadline",
            (name, status),
        ).fetchall()
        return [PromiseRecord(*r) for r in rows]

    def set_promise(self, name: str, leaf_hash: bytes, status: str, index: int | None) -> None:
        """Mark a promise kept (with its index) or broken."""
        self._db.execute(
            "UPDATE promises SET status=?, idx=? WHERE name=? AND leaf_hash=?",
            (status, index, name, leaf_hash),
        )

    # -- content rule windows ----------------------------------------------------------------

    def windows(self, name: str) -> dict[tuple[str, str], list[Hit]]:
        """The open rule windows of a log."""
        out: dict[tuple[str, str], list[Hit]] = {}
        for rule, grp, idx, ts in self._db.execute(
            "SELECT rule, grp, idx, ts FROM windows WHERE name=? ORDER BY idx", (name,)
        ):
            out.setdefault((rule, grp), []).append(Hit(idx, ts))
        return out

    def put_windows(self, name: str, windows: Mapping[tuple[str, str], Sequence[Hit]]) -> None:
        """Replace a log's rule windows."""
        self._db.execute("DELETE FROM windows WHERE name=?", (name,))
        self._db.executemany(
            "INSERT INTO windows VALUES (?, ?, ?, ?, ?)",
            [
                (name, rule, grp, h.index, h.timestamp_ms)
                for (rule, grp), hits in windows.items()
                for h in hits
            ],
        )

    # -- alerts ------------------------------------------------------------------------------

    def seen_alert(self, name: str, kind: str, fingerprint: str) -> bool:
        """Whether this alert was raised already."""
        row = self._db.execute(
            "SELECT 1 FROM alerts WHERE name=? AND kind=? AND fingerprint=?",
            (name, kind, fingerprint),
        ).fetchone()
        return row is not None

    def add_alert(
        self, name: str, kind: str, fingerprint: str, detected_at: int, evidence: str, line: str
    ) -> None:
        """Record a raised alert."""
        self._db.execute(
            "INSERT OR IGNORE INTO alerts (name, kind, fingerprint, detected_at, evidence, line) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (name, kind, fingerprint, detected_at, evidence, line),
        )

    def alerts(self, name: str | None = None) -> list[str]:
        """The JSON lines of alerts raised, oldest first."""
        if name is None:
            rows = self._db.execute("SELECT line FROM alerts ORDER BY id").fetchall()
        else:
            rows = self._db.execute(
                "SELECT line FROM alerts WHERE name=? ORDER BY id", (name,)
            ).fetchall()
        return [r[0] for r in rows]

    # -- webhook outbox ----------------------------------------------------------------------

    def outbox_add(self, line: str) -> None:
        """Queue an alert line for the webhook."""
        self._db.execute("INSERT INTO outbox (line) VALUES (?)", (line,))

    def outbox(self) -> list[tuple[int, str]]:
        """Queued webhook lines, oldest first."""
        return list(self._db.execute("SELECT id, line FROM outbox ORDER BY id"))

    def outbox_done(self, ident: int) -> None:
        """Drop a delivered line."""
        self._db.execute("DELETE FROM outbox WHERE id=?", (ident,))
