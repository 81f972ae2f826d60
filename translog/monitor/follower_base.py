"""The state every part of a follower shares: one log's clients, its verified state, alerting.

:class:`FollowerBase` holds what :class:`~translog.monitor.follower.Follower` and the parts it
is assembled from (:mod:`~translog.monitor.consistency`, :mod:`~translog.monitor.detections`,
:mod:`~translog.monitor.freshness`) work on: the log's configuration and key, the HTTP clients,
the last verified state (in the store, or in memory for ``translog audit``), and raising an
alert with its evidence.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from translog.client.checkpoints import VerifiedCheckpoint
from translog.client.entries import EntryReader
from translog.client.fetcher import TileFetcher
from translog.client.log_client import LogClient
from translog.client.proofs import Proofs
from translog.client.transport import Transport
from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.policy import WitnessPolicy, parse_policy
from translog.core.signing import NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import TranslogError
from translog.formats.evidence import evidence
from translog.formats.rules import Rule
from translog.monitor.alerts import Alert, Reporter
from translog.monitor.config import LogConfig
from translog.monitor.rebuild import FETCH_WINDOW
from translog.monitor.store import Availability, LogState, Store


def now_ms() -> int:
    """Wall-clock time, ms since the epoch."""
    return int(time.time() * 1000)


def fingerprint_of(*parts: bytes | str | int) -> str:
    """An alert's fingerprint: a short hash of the parts that identify what was detected."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


class FollowerBase:
    """One followed log's configuration, clients and verified state (see the module docstring)."""

    def __init__(
        self,
        log: LogConfig,
        reporter: Reporter,
        store: Store | None,
        *,
        rules: Sequence[Rule] = (),
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], int] = now_ms,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Follow ``log``; state in ``store`` (None: in memory, as ``translog audit`` does)."""
        self.config = log
        self.name = log.name
        self.verifier: NoteVerifier = parse_vkey(log.vkey)
        self.origin = self.verifier.name
        self.policy: WitnessPolicy | None = None
        if log.policy is not None:
            try:
                self.policy = parse_policy(log.policy.read_text())
            except OSError as e:
                raise TranslogError(f"log {log.name}: couldn't read policy {log.policy}") from e
        self.reporter = reporter
        self.store = store
        self._memory: LogState | None = None
        self._availability: Availability | None = None
        self.rules = [r for r in rules if not r.logs or log.name in r.logs]
        self.clock = clock
        self.progress = progress
        self.transport = Transport(
            log.url, timeout=log.timeout_seconds, retries=log.retries, session=session
        )
        self.fetcher = TileFetcher(self.transport, log.read_token)
        self.proofs = Proofs(self.transport, self.fetcher, read_token=log.read_token, use_ct=False)
        self.entry_reader = EntryReader(self.transport, log.read_token)
        self.client = LogClient(
            log.url,
            log.vkey,
            read_token=log.read_token,
            timeout=log.timeout_seconds,
            retries=log.retries,
            session=session,
        )
        self.translog_leaves = True
        self._warned: set[str] = set()
        self.fetch_window = FETCH_WINDOW
        self._observed_at = 0
        """When the checkpoint being judged was fetched: promises are judged against it."""
        self.final: Checkpoint | None = None
        """A frozen log's final checkpoint (from a verified log list): once the log has reached
        it, an unchanged checkpoint is expected and never ``stale``."""

    async def close(self) -> None:
        """Close the HTTP sessions this follower opened."""
        await self.transport.close()
        await self.client.close()

    # -- state -------------------------------------------------------------------------------

    def state(self) -> LogState | None:
        """The last verified state."""
        if self.store is None:
            return self._memory
        return self.store.log(self.name)

    def _put_state(self, s: LogState, windows: dict[tuple[str, str], Any] | None = None) -> None:
        if self.store is None:
            self._memory = s
            return
        with self.store.transaction():
            self.store.put_log(self.name, s)
            if windows is not None:
                self.store.put_windows(self.name, windows)

    def latest_verified(self) -> VerifiedCheckpoint | None:
        """The latest checkpoint whose entries this follower verified (None before the first)."""
        s = self.state()
        if s is None:
            return None
        cp, _, _ = open_checkpoint(s.note, self.verifier)
        return VerifiedCheckpoint(cp, s.note, frozenset())

    # -- alerts ------------------------------------------------------------------------------

    async def _alert(
        self,
        kind: str,
        fingerprint: str,
        reason: str,
        fields: dict[str, Any],
        details: dict[str, Any] | None = None,
        now: int | None = None,
    ) -> Alert | None:
        detected = now if now is not None else self.clock()
        ev = evidence(kind, self.origin, self.config.url, detected, reason, **fields)
        return await self.reporter.raise_alert(
            kind=kind,
            log=self.name,
            origin=self.origin,
            url=self.config.url,
            fingerprint=fingerprint,
            message=reason,
            evidence=ev,
            details=details,
            now=detected,
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"translog monitor: {message}", file=sys.stderr, flush=True)
