"""``translog audit``: the full recompute of a log, once, from the empty tree.

It is the monitor's :class:`~translog.monitor.follower.Follower` with its state in memory:
fetch and verify the checkpoint, check it against any earlier checkpoints given (fork,
rollback), fetch every entry bundle and hash tile, recompute the tree, compare every tile and
the root. Alerts go to the sinks given; the caller turns them into an exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from translog.client.checkpoints import Trusted
from translog.core.checkpoint import open_checkpoint
from translog.monitor.alerts import Alert, Reporter
from translog.monitor.config import LogConfig
from translog.monitor.follower import Follower


@dataclass(frozen=True)
class AuditResult:
    """What an audit found."""

    size: int
    root: bytes | None
    entries: int
    alerts: tuple[Alert, ...]


async def audit(
    log: LogConfig,
    reporter: Reporter,
    *,
    earlier: Sequence[bytes] = (),
    progress: Callable[[int, int], None] | None = None,
    fetch_window: int | None = None,
) -> AuditResult:
    """Audit ``log`` once; ``earlier`` are signed checkpoints to hold the log to."""
    f = Follower(log, reporter, None, progress=progress)
    if fetch_window is not None:
        f.fetch_window = fetch_window
    try:
        trusted = []
        for note in earlier:
            cp, _, _ = open_checkpoint(note, f.verifier)
            trusted.append(Trusted(cp.size, cp.root_hash, note))
        seen = await f.audit(trusted)
        return AuditResult(
            seen.size if seen else 0,
            seen.root_hash if seen else None,
            seen.size if seen else 0,
            tuple(reporter.raised),
        )
    finally:
        await f.close()
