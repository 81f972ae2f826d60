"""The long-running monitor: one :class:`~translog.monitor.follower.Follower` per log.

:class:`Monitor` polls every log on its interval until stopped, with state in its own SQLite
file. It is also the hook for gossip (witnesses, other monitors):

* :meth:`Monitor.latest_verified` lists the latest checkpoint whose entries were verified, per
  origin;
* :meth:`Monitor.check_foreign` checks a signed checkpoint obtained elsewhere against that
  view, proving consistency from the log's tiles, and raises
  :class:`~translog.monitor.follower.SplitViewError` (with the evidence file) on a split view.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from translog.client.checkpoints import VerifiedCheckpoint
from translog.errors import NotFoundError, TranslogError
from translog.monitor.alerts import FileSink, Reporter, Sink, StreamSink, WebhookSink
from translog.monitor.config import MonitorConfig
from translog.monitor.follower import Follower, SplitViewError, now_ms
from translog.monitor.store import Store

__all__ = ["Monitor", "SplitViewError"]


class Monitor:
    """Follows every log of a :class:`~translog.monitor.config.MonitorConfig`."""

    def __init__(
        self,
        config: MonitorConfig,
        *,
        sinks: list[Sink] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """Open the state (taking its lock); sinks default to the config's ``[output]``.

        Must be created inside a running event loop (it prepares HTTP sessions).
        """
        self.config = config
        self.store = Store(config.state)
        try:
            if sinks is None:
                sinks = []
                if config.output.stdout:
                    sinks.append(StreamSink())
                if config.output.file is not None:
                    sinks.append(FileSink(config.output.file))
                if config.output.webhook is not None:
                    sinks.append(
                        WebhookSink(
                            config.output.webhook,
                            self.store,
                            retries=config.output.webhook_retries,
                            timeout=config.output.webhook_timeout_seconds,
                        )
                    )
            self.reporter = Reporter(config.evidence_dir, sinks, self.store)
            self.followers = {
                log.name: Follower(log, self.reporter, self.store, rules=config.rules, clock=clock)
                for log in config.logs
            }
        except BaseException:
            self.store.close()
            raise
        self._stop = asyncio.Event()
        self.polls = 0

    async def close(self) -> None:
        """Close sessions, sinks and the state."""
        for f in self.followers.values():
            await f.close()
        await self.reporter.close()
        self.store.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the polls in progress."""
        self._stop.set()

    async def poll_all(self) -> None:
        """Poll every log once, concurrently."""
        await asyncio.gather(*(self._poll(f) for f in self.followers.values()))

    async def _poll(self, f: Follower) -> None:
        try:
            await f.poll()
        except TranslogError as e:
            # Anything else the log did wrong was raised as an alert; this is our own failure
            # (state file, evidence directory) or an answer we could not judge: keep going.
            print(f"translog monitor: log {f.name}: {e}", file=sys.stderr, flush=True)
        self.polls += 1

    async def run(self, *, once: bool = False) -> None:
        """Poll each log on its own interval until :meth:`stop` (or once with ``once``)."""
        if once:
            await self.poll_all()
            return
        await asyncio.gather(*(self._loop(f) for f in self.followers.values()))

    async def _loop(self, f: Follower) -> None:
        while not self._stop.is_set():
            await self._poll(f)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), f.config.interval_seconds)

    # -- gossip hook -------------------------------------------------------------------------

    def latest_verified(self) -> dict[str, VerifiedCheckpoint]:
        """The latest checkpoint whose entries this monitor verified, by origin."""
        out = {}
        for f in self.followers.values():
            cp = f.latest_verified()
            if cp is not None:
                out[f.origin] = cp
        return out

    async def check_foreign(
        self, origin: str, note: bytes, *, source: str = "gossip"
    ) -> VerifiedCheckpoint:
        """Check a signed checkpoint for ``origin`` from elsewhere against the verified view.

        Returns it verified when it is consistent with the view. Raises
        :class:`SplitViewError` (a ``fork`` or ``same_size_different_root`` alert was raised
        and its evidence written: ``err.evidence``), ``VerificationError`` for a bad signature,
        ``NotFoundError`` for an unknown origin or when the log's tiles cannot judge it yet.
        """
        for f in self.followers.values():
            if f.origin == origin:
                return await f.check_foreign(note, source)
        raise NotFoundError(f"this monitor does not follow origin {origin!r}")
