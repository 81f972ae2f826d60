"""The monitor's gossip view: what a :class:`~translog.monitor.monitor.Monitor` verified.

* ``latest``: per origin, the latest checkpoint whose entries the monitor recomputed and
  verified (``Monitor.latest_verified``);
* ``prove``: a consistency proof computed from the tiles the log serves this monitor, with the
  root those tiles give the smaller size. The gossip core checks both against roots the log
  signed, so a log that serves this monitor another tree only makes the attempt fail.

A proven split view also becomes a monitor alert (``fork`` or ``same_size_different_root``,
through the monitor's sinks), pointing at the misbehaviour file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from translog.core.signing import NoteVerifier
from translog.errors import NotFoundError
from translog.formats.misbehaviour import KIND_SAME_SIZE, Misbehaviour
from translog.monitor.follower import Follower
from translog.monitor.follower_base import now_ms
from translog.monitor.monitor import Monitor


class MonitorView:
    """A :class:`translog.gossip.core.View` over a running monitor."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def _follower(self, origin: str) -> Follower:
        for f in self.monitor.followers.values():
            if f.origin == origin:
                return f
        raise NotFoundError(f"this monitor does not follow {origin!r}")

    def verifiers(self) -> Mapping[str, NoteVerifier]:
        """The log keys of the logs followed, by origin."""
        return {f.origin: f.verifier for f in self.monitor.followers.values()}

    def latest(self) -> Mapping[str, bytes]:
        """The latest verified checkpoint per origin."""
        return {o: cp.note for o, cp in self.monitor.latest_verified().items()}

    async def prove(
        self, origin: str, old_size: int, new_size: int
    ) -> tuple[tuple[bytes, ...], bytes] | None:
        """A proof from the log's tiles as this monitor sees them (checked by the caller)."""
        found = await self._follower(origin).proofs.tile_consistency(old_size, new_size)
        return found.proof, found.old_root

    async def alert(self, m: Misbehaviour, path: Path) -> None:
        """Raise the monitor alert for a proven split view."""
        f = self._follower(m.origin)
        kind = "same_size_different_root" if m.kind == KIND_SAME_SIZE else "fork"
        await self.monitor.reporter.raise_alert(
            kind=kind,
            log=f.name,
            origin=m.origin,
            url=f.config.url,
            fingerprint=f"gossip:{path.name}",
            message=f"split view found by gossip ({m.kind}); misbehaviour file {path}",
            evidence=None,
            details={"misbehaviour_file": str(path), "source": "gossip", "peer": m.peer},
            now=now_ms(),
        )
