"""The long-running monitor: one :class:`~translog.monitor.follower.Follower` per log.

:class:`Monitor` polls every log on its interval until stopped, with state in its own SQLite
file.

With ``[[log_list]]`` it also reads published log lists (``/logs.json``, verified by
:func:`translog.formats.loglist.parse_log_list`) before each round of polls, follows every listed
log
whose vkey is pinned in the config (a successor announced on rotation is picked up on the next
read of the list), and gives a frozen log's follower its final checkpoint, so a frozen log that
stays at it is never ``stale``. It is also the hook for gossip (witnesses, other monitors):

* :meth:`Monitor.latest_verified` lists the latest checkpoint whose entries were verified, per
  origin;
* :meth:`Monitor.check_foreign` checks a signed checkpoint obtained elsewhere against that
  view, proving consistency from the log's tiles, and raises
  :class:`~translog.errors.SplitViewError` (with the evidence file) on a split view.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from translog.client.checkpoints import VerifiedCheckpoint
from translog.client.transport import Transport
from translog.errors import NotFoundError, SplitViewError, TranslogError
from translog.formats.loglist import parse_log_list
from translog.monitor.alerts import FileSink, Reporter, Sink, StreamSink, WebhookSink
from translog.monitor.config import LogConfig, LogListConfig, MonitorConfig
from translog.monitor.follower import Follower
from translog.monitor.follower_base import now_ms
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
            self._list_transports = [
                Transport(
                    lst.url.rsplit("/", 1)[0],
                    timeout=lst.timeout_seconds,
                    retries=lst.retries,
                    session=None,
                )
                for lst in config.log_lists
            ]
        except BaseException:
            self.store.close()
            raise
        self._clock = clock
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._warned: set[str] = set()
        self.polls = 0
        self.list_reads = 0

    async def close(self) -> None:
        """Close sessions, sinks and the state."""
        for f in self.followers.values():
            await f.close()
        for t in self._list_transports:
            await t.close()
        await self.reporter.close()
        self.store.close()

    def stop(self) -> None:
        """Ask :meth:`run` to return after the polls in progress."""
        self._stop.set()

    async def poll_all(self) -> None:
        """Read every log list, then poll every log once, concurrently."""
        await self.read_lists()
        await asyncio.gather(*(self._poll(f) for f in self.followers.values()))

    # -- log lists ---------------------------------------------------------------------------

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"translog monitor: {message}", file=sys.stderr, flush=True)

    async def read_lists(self) -> None:
        """Read every ``[[log_list]]`` once and follow the trusted logs it names."""
        for lst, transport in zip(self.config.log_lists, self._list_transports, strict=True):
            try:
                await self._read_list(lst, transport)
            except TranslogError as e:
                # A list we cannot fetch or verify changes nothing: keep following what we have.
                print(f"translog monitor: log list {lst.url}: {e}", file=sys.stderr, flush=True)
        self.list_reads += 1

    async def _read_list(self, lst: LogListConfig, transport: Transport) -> None:
        resp = await transport.request(
            "GET", "/" + lst.url.rsplit("/", 1)[1], auth=lst.read_token, limit=1 << 22
        )
        listed = parse_log_list(resp.body, lst.url)
        trusted = lst.trusted_vkeys()
        for log in listed:
            if log.vkey not in trusted:
                self._say_once(
                    f"untrusted {lst.url} {log.name} {log.vkey}",
                    f"log list {lst.url}: not following {log.name} ({log.origin}): its vkey is "
                    "not pinned in vkeys or vkeys_file",
                )
                continue
            f = self.followers.get(log.name)
            if f is None:
                f = self._follow(lst, log.name, log.url, log.vkey)
                if f is None:
                    continue
            elif f.config.vkey != log.vkey or f.config.url != log.url:
                self._say_once(
                    f"clash {lst.url} {log.name} {log.vkey} {log.url}",
                    f"log list {lst.url}: {log.name} is already followed with another vkey or "
                    "URL; keeping the one followed",
                )
                continue
            f.final = log.final_checkpoint

    def _follow(self, lst: LogListConfig, name: str, url: str, vkey: str) -> Follower | None:
        cfg = LogConfig(
            name=name,
            url=url,
            vkey=vkey,
            read_token=lst.read_token,
            interval_seconds=lst.interval_seconds,
            stale_after_intervals=lst.stale_after_intervals,
            timeout_seconds=lst.timeout_seconds,
            retries=lst.retries,
        )
        f = Follower(cfg, self.reporter, self.store, rules=self.config.rules, clock=self._clock)
        self.followers[name] = f
        print(f"translog monitor: following {name} ({url}) from {lst.url}", file=sys.stderr)
        if self._running:
            self._spawn(self._loop(f))
        return f

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
        await self.read_lists()
        self._running = True
        try:
            for f in list(self.followers.values()):
                self._spawn(self._loop(f))
            if self.config.log_lists:
                self._spawn(self._list_loop())
            while self._tasks:
                await asyncio.gather(*list(self._tasks))
        finally:
            self._running = False
            for task in list(self._tasks):
                task.cancel()

    async def _list_loop(self) -> None:
        interval = min(lst.interval_seconds for lst in self.config.log_lists)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
            if not self._stop.is_set():
                await self.read_lists()

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
