"""Wiring the object-store role into ``translog serve``: stores, lease, catch-up, publisher.

Order at startup (:func:`prepare`, before the log is opened for writing):

1. open the public and private stores from ``[objstore]`` (credentials from the file or the
   environment), and create buckets and the public-read policy if ``setup_bucket``;
2. take the single-writer lease (private store): while another instance holds it, wait and say
   who holds it (``standby``), or refuse at once;
3. if the store is ahead of the local tree (another instance sequenced there before), catch up
   from it, verifying everything (translog.publish.rebuild).

Then :meth:`ObjectStoreRole.attach` hooks the app: the lease guards every durable write of the
log; the publisher runs beside the sequencer; the log is *fenced* (``Log.fenced``): every
checkpoint it shows, in receipts, ``/checkpoint`` and ``get-sth``, is one the store accepted by
its conditional PUT (docs/OBJSTORE.md, "What a writer shows"); metrics and a /healthz check
report the lag; at shutdown the log drains, the last checkpoint is uploaded, and the lease is
released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from translog.config import Config
from translog.core.vkey import parse_vkey
from translog.errors import LeaseHeldError, LeaseLostError, TranslogError
from translog.http.keys import HEALTH_CHECKS, LOG, METRICS
from translog.keyfile import read_private_file
from translog.log.sequencer import now_ms
from translog.publish.lease import Lease, describe
from translog.publish.publisher import Publisher, PublisherOptions
from translog.publish.rebuild import sync_from_store
from translog.publish.store import (
    ObjectStore,
    S3Settings,
    S3Store,
    credentials_from,
    open_store,
)
from translog.storage.base import Storage

_log = logging.getLogger("translog.objstore")


def s3_settings(config: Config, data_path: Path) -> S3Settings:
    """Endpoint, region and credentials for ``[objstore]`` (file first, then environment)."""
    o = config.objstore
    text = None
    if o.credentials_file:
        text = read_private_file(data_path / o.credentials_file).decode("utf-8")
    access, secret = credentials_from(os.environ, text)
    return S3Settings(o.endpoint, o.region, access, secret, o.concurrency)


def open_stores(config: Config, data_path: Path) -> tuple[ObjectStore, ObjectStore | None]:
    """The public and private stores of ``[objstore]`` (the URL must be set)."""
    o = config.objstore
    settings = s3_settings(config, data_path)
    public = open_store(o.url, settings)
    private = open_store(o.private_url, settings) if o.private_url else None
    if o.setup_bucket:
        if isinstance(public, S3Store):
            public.ensure_bucket(public_read=True)
        if isinstance(private, S3Store):
            private.ensure_bucket(public_read=False)
    return public, private


@dataclass
class ObjectStoreRole:
    """The stores, the lease and (once attached) the publisher of one served log."""

    config: Config
    public: ObjectStore
    private: ObjectStore | None
    lease: Lease | None
    publisher: Publisher | None = None
    renewals: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, app: web.Application) -> None:
        """Guard the log's writes with the lease; publish in the background."""
        log = app[LOG]
        o = self.config.objstore
        if self.lease is not None:
            log.write_guard = self.lease.check
        publisher = Publisher(
            log,
            log.signer.vkey,
            self.public,
            self.private,
            PublisherOptions(concurrency=o.concurrency, max_lag_ms=o.max_lag_ms),
            guard=None if self.lease is None else self.lease.check,
            on_stored=log.stored,
        )
        log.fenced = True
        self.publisher = publisher
        app.setdefault(HEALTH_CHECKS, []).append(self._health)
        metrics = app[METRICS]
        metrics.gauge(
            "translog_objstore_size",
            "tree size of the checkpoint in the object store",
            lambda: publisher.store_size,
        )
        metrics.gauge(
            "translog_objstore_lag_entries",
            "durable entries not yet in the object store",
            lambda: publisher.lag_entries,
        )
        metrics.gauge(
            "translog_objstore_lag_seconds",
            "how long the oldest durable entry missing from the object store has waited",
            lambda: round(publisher.lag_seconds, 3),
        )
        metrics.gauge(
            "translog_objstore_erasure_rewrites_pending",
            "tiles with an erasure whose published payload bundles are not rewritten yet",
            lambda: len(log.storage.pending_rewrites()) if self.private is not None else 0,
        )
        metrics.gauge(
            "translog_objstore_erasure_rewrites",
            "private payload bundles rewritten after erasures",
            lambda: publisher.rewrites,
        )
        metrics.gauge(
            "translog_objstore_failures",
            "failed publication rounds (retried)",
            lambda: publisher.failures,
        )
        metrics.gauge("translog_objstore_objects", "objects uploaded", lambda: publisher.objects)
        metrics.gauge(
            "translog_objstore_tiles_replaced",
            "unpublished tiles left by a writer that lost its lease, replaced",
            lambda: publisher.replaced,
        )
        metrics.gauge(
            "translog_objstore_halted",
            "1 once publication stopped (another writer)",
            lambda: int(publisher.halted is not None),
        )
        if self.lease is not None:
            lease = self.lease
            metrics.gauge(
                "translog_lease_held",
                "1 while this instance holds the writer lease",
                lambda: int(lease.held),
            )
        app.cleanup_ctx.append(self._run)

    def _health(self) -> list[str]:
        reasons = [] if self.publisher is None else self.publisher.health_problems()
        if self.lease is not None and not self.lease.held:
            reasons.append(self.lease.lost or "this instance does not hold the writer lease")
        return reasons

    async def _run(self, app: web.Application) -> AsyncIterator[None]:
        assert self.publisher is not None
        await self.publisher.start()
        if self.lease is not None:
            self._tasks.append(asyncio.create_task(self._renew_loop(self.lease)))
        yield
        await app[LOG].drain()
        await self.publisher.close(final=True)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lease is not None:
            with contextlib.suppress(TranslogError):
                await asyncio.get_running_loop().run_in_executor(None, self.lease.release)

    async def _renew_loop(self, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        interval = lease.renew_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await loop.run_in_executor(None, lease.renew)
                self.renewals += 1
            except LeaseLostError as e:
                _log.critical("%s; the sequencer stops writing", e)
                return
            except TranslogError as e:
                _log.error("couldn't renew the writer lease (retrying in 1 s): %s", e)
                interval = 1.0
                continue
            interval = lease.renew_ms / 1000


def acquire_lease(
    lease: Lease,
    *,
    standby: bool,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Take the lease; while it is held elsewhere, wait (``standby``) or raise."""
    last_holder = None
    while True:
        try:
            lease.try_acquire()
            return
        except LeaseHeldError as e:
            if not standby:
                raise
            rec = e.record
            if rec is None or rec.token != last_holder:
                say(f"{e}; standing by until it expires")
                last_holder = None if rec is None else rec.token
            wait = lease.renew_ms / 1000
            if rec is not None:
                left = (rec.expires_ms - now_ms()) / 1000
                wait = min(wait, max(0.05, left + 0.05))
            sleep(wait)


def prepare(
    config: Config,
    data_path: Path,
    storage: Storage,
    vkey: str,
    *,
    standby: bool = True,
    say: Callable[[str], None] = _log.warning,
) -> ObjectStoreRole | None:
    """Stores, lease and catch-up for ``translog serve`` (None when no store is configured)."""
    o = config.objstore
    if not o.url:
        return None
    public, private = open_stores(config, data_path)
    lease = None
    if o.lease and private is not None:
        lease = Lease(
            private,
            config.log.origin,
            holder=o.holder or None,
            ttl_ms=o.lease_ttl_ms,
            renew_ms=o.lease_renew_ms,
        )
        acquire_lease(lease, standby=standby, say=say)
        current = lease.current()
        if current is not None:
            say(f"writer lease acquired: {describe(current, now_ms())}")
    if public.get("checkpoint") is not None:
        report = sync_from_store(
            storage,
            public,
            private,
            parse_vkey(vkey),
            config.log.origin,
            concurrency=o.concurrency,
        )
        if report.entries:
            say(
                f"caught up from {public.url}: {report.entries} entries "
                f"({report.old_size} -> {report.size})"
            )
    return ObjectStoreRole(config, public, private, lease)
