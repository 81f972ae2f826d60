"""The object-store publisher: copies the durable log to a store, checkpoint last.

It runs beside the sequencer and never holds it up: it reads the durable tree through the
storage's read path (any thread, short read transactions) and writes from its own threads. When
the store is slow or down, publication falls behind and catches up later; the lag is exposed as
metrics and as a health signal.

One round, for the newest published (durable, stored in LMDB) checkpoint of size N, when the
store holds the checkpoint of size P < N:

1. every hash tile and entry bundle that the tree of N has and the tree of P lacked, with
   ``If-None-Match: *`` (tiles are immutable: one already there must hold the same bytes, or
   another writer has forked the log, and publication stops);
2. the payload bundles of the same level-0 tiles and the checkpoint history object, to the
   private store;
3. only then the checkpoint, written with ``If-Match`` on the checkpoint this publisher last
   saw there (``If-None-Match: *`` for the first): a checkpoint replaced behind its back by
   another writer stops publication instead of being overwritten.

Erasure: every erasure queues its level-0 tile durably in storage, in the erasing transaction
(:meth:`~translog.storage.base.Storage.pending_rewrites`). Between rounds the publisher
rewrites every payload bundle of a queued tile that the private store already holds (the full
one and each partial width), from storage, so an erased entry becomes an "erased" record and
its salt and payload leave the store; then it drops the tile from the queue (unless it was
erased again meanwhile). A crash before that leaves the tile queued for the next start.

At start the publisher reads the store's checkpoint and checks it against the local log: it
must verify with the log's key, and the local tree must contain it (same root at its size).
A store ahead of the local log, or holding another tree, is refused: rebuild first.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from translog.core.checkpoint import open_checkpoint
from translog.core.leaf import KIND_COMMITTED
from translog.core.tiles import TILE_WIDTH, TileRef, encode_bundle, read_tile
from translog.core.vkey import parse_vkey
from translog.errors import (
    PreconditionFailedError,
    PublicationHaltedError,
    StorageCorruptError,
    StorageError,
    TranslogError,
)
from translog.log.sequencer import SignedCheckpoint
from translog.publish import layout
from translog.publish.store import ObjectStore, StoredObject
from translog.storage.base import Storage, StoredEntry

log = logging.getLogger("translog.publish")

MAX_BACKOFF_S = 30.0
POLL_S = 0.05


@dataclass(frozen=True)
class PublisherOptions:
    """Knobs; see ``[objstore]`` in translog.config."""

    concurrency: int = 8
    max_lag_ms: int = 60_000
    final_timeout_s: float = 30.0


class PublishSource(Protocol):
    """What the publisher reads: a :class:`~translog.log.sequencer.Log`, or a mirror's verified
    copy."""

    storage: Storage
    origin: str

    @property
    def size(self) -> int:
        """Durable (or verified) tree size."""
        ...

    @property
    def local_published(self) -> SignedCheckpoint | None:
        """The newest checkpoint to publish (durable in storage), or None."""
        ...

    def root_at(self, size: int) -> bytes:
        """Root hash of the first ``size`` leaves."""
        ...


class Publisher:
    """Publishes one log (:class:`PublishSource`) to a public (and optional private) store."""

    def __init__(
        self,
        log_: PublishSource,
        vkey: str,
        public: ObjectStore,
        private: ObjectStore | None = None,
        options: PublisherOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        guard: Callable[[], None] | None = None,
        on_stored: Callable[[SignedCheckpoint], None] | None = None,
    ) -> None:
        """Nothing is read or written until :meth:`start`.

        ``guard`` (the writer lease's check) is called before every upload to the public
        store and raises while this instance may not write: a writer that lost its lease
        (paused, partitioned, taken over) uploads neither tiles nor a checkpoint.

        ``on_stored`` (on the event loop) gets every checkpoint the store accepted from this
        publisher, its conditional PUT succeeded: the fence of a writer that shows clients
        only those (``Log.stored``). With it, the first round uploads the checkpoint even when
        the store already holds one of that size, so a restarted writer shows nothing until
        the store accepted a write of its own.
        """
        self.log = log_
        self.vkey = vkey
        self.public = public
        self.private = private
        self.options = options or PublisherOptions()
        self._clock = clock
        self._guard = guard
        self._on_stored = on_stored
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.options.concurrency, thread_name_prefix="tl-publish"
        )
        self._round = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tl-pubround")
        self.store_size = 0
        """Size of the checkpoint the public store holds (0: none yet)."""
        self._store_etag: str | None = None
        self._has_checkpoint = False
        self._seen: collections.deque[tuple[int, float]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.halted: BaseException | None = None
        self.last_error: str | None = None
        self.failures = 0
        self.objects = 0
        self.bytes = 0
        self.rounds = 0
        self.rewrites = 0
        """Payload bundles rewritten after erasures."""
        self.replaced = 0
        """Unpublished tiles left by another writer and replaced (see :meth:`_put_immutable`)."""

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the store against the local log, then publish in the background."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._round, self.load_store_state)
        self._task = asyncio.create_task(self._loop(), name="translog-objstore-publisher")

    async def close(self, *, final: bool = True) -> None:
        """Stop; with ``final``, first try (bounded) to publish the newest checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if final and self.halted is None:
            target = self.log.local_published
            if target is not None and target.size > self.store_size:
                loop = asyncio.get_running_loop()
                try:
                    await asyncio.wait_for(
                        loop.run_in_executor(self._round, self._publish_round, target),
                        self.options.final_timeout_s,
                    )
                    self._stored(target)
                except (TranslogError, TimeoutError) as e:
                    log.error("final publication to %s failed: %s", self.public.url, e)
        if final and self.halted is None and self._rewrites_pending():
            try:
                await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(self._round, self.rewrite_erased),
                    self.options.final_timeout_s,
                )
            except (TranslogError, TimeoutError) as e:
                log.error("rewriting erased payloads in %s failed: %s", self.public.url, e)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop the upload threads (after :meth:`close`, or after synchronous use)."""
        self._round.shutdown(wait=True)
        self._pool.shutdown(wait=True)

    def load_store_state(self) -> None:
        """Read the store's checkpoint and check that the local tree contains it."""
        current = self.public.get(layout.CHECKPOINT_KEY)
        if current is None:
            return
        cp = self._check_store_checkpoint(current)
        self.store_size = cp
        self._store_etag = current.etag
        self._has_checkpoint = True

    def _check_store_checkpoint(self, current: StoredObject) -> int:
        """The size of the store's checkpoint, which the local tree must contain."""
        try:
            cp, _, _ = open_checkpoint(current.body, parse_vkey(self.vkey), origin=self.log.origin)
        except TranslogError as e:
            raise StorageCorruptError(
                f"the checkpoint in {self.public.url} does not verify with this log's key: {e}"
            ) from e
        if cp.size > self.log.size:
            raise StorageCorruptError(
                f"{self.public.url} holds a checkpoint of size {cp.size} but the local log has "
                f"only {self.log.size} leaves: rebuild from the store first "
                "(translog rebuild --from …)"
            )
        if cp.size and self.log.root_at(cp.size) != cp.root_hash:
            raise StorageCorruptError(
                f"{self.public.url} holds a checkpoint of size {cp.size} whose root differs "
                "from the local tree: refusing to publish a fork"
            )
        return cp.size

    # -- lag -------------------------------------------------------------------------------

    def _observe(self) -> None:
        size = self.log.size
        if not self._seen or self._seen[-1][0] < size:
            self._seen.append((size, self._clock()))
        while self._seen and self._seen[0][0] <= self.store_size:
            self._seen.popleft()

    @property
    def lag_entries(self) -> int:
        """Durable entries the store does not have yet."""
        return max(0, self.log.size - self.store_size)

    @property
    def lag_seconds(self) -> float:
        """How long the oldest durable entry missing from the store has been durable."""
        self._observe()
        if not self._seen:
            return 0.0
        return max(0.0, self._clock() - self._seen[0][1])

    def health_problems(self) -> list[str]:
        """Why publication is unhealthy (empty when it is fine)."""
        reasons: list[str] = []
        if self.halted is not None:
            reasons.append(f"publication to the object store stopped: {self.halted}")
        lag = self.lag_seconds
        if lag * 1000 > self.options.max_lag_ms:
            detail = f" (last error: {self.last_error})" if self.last_error else ""
            reasons.append(
                f"object store publication is {lag:.1f} s behind, limit is "
                f"{self.options.max_lag_ms / 1000:g} s{detail}"
            )
        return reasons

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while True:
            self._observe()
            target = self.log.local_published
            idle = target is None or (
                target.size <= self.store_size
                and self._has_checkpoint
                and (self.rounds > 0 or self._on_stored is None)
            )
            if idle and not self._rewrites_pending():
                await asyncio.sleep(POLL_S)
                continue
            try:
                if target is not None and not idle:
                    await loop.run_in_executor(self._round, self._publish_round, target)
                    self._stored(target)
                await loop.run_in_executor(self._round, self.rewrite_erased)
                backoff = 0.1
                self.last_error = None
            except PublicationHaltedError as e:
                self.halted = e
                log.critical("%s", e)
                return
            except TranslogError as e:
                self.failures += 1
                self.last_error = str(e)
                log.warning(
                    "publication to %s failed (retrying in %.1f s): %s", self.public.url, backoff, e
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    async def wait_stored(self, size: int, timeout: float) -> bool:
        """Wait until the public store holds a checkpoint of at least ``size``; False if it
        does not within ``timeout`` seconds (or publication stopped)."""
        deadline = self._clock() + timeout
        while self.store_size < size:
            if self.halted is not None or self._clock() >= deadline:
                return False
            await asyncio.sleep(POLL_S / 2)
        return True

    def _stored(self, target: SignedCheckpoint) -> None:
        if self._on_stored is not None:
            self._on_stored(target)

    def publish_now(self, target: SignedCheckpoint) -> None:
        """Run one round synchronously (tests and tools), then any pending rewrites."""
        self._publish_round(target)
        self.rewrite_erased()

    def _rewrites_pending(self) -> bool:
        return self.private is not None and bool(self.log.storage.pending_rewrites())

    def rewrite_erased(self) -> int:
        """Rewrite the published payload bundles of tiles with erasures; returns how many.

        Only the bundles the private store holds are rewritten (a bundle published later is
        built from storage, already without the payload). The tile leaves the queue only
        when every rewrite of it succeeded.
        """
        if self.private is None:
            return 0
        rewritten = 0
        for tile, generation in self.log.storage.pending_rewrites():
            base = layout.payloads_key(TileRef(0, tile, TILE_WIDTH))
            keys = [k for k in self.private.list(base) if k == base or k.startswith(base + ".p/")]
            for key in keys:
                tail = key.rsplit("/", 1)[1]
                width = TILE_WIDTH if key == base else int(tail) if tail.isdigit() else 0
                if not 0 < width <= TILE_WIDTH:
                    raise StorageCorruptError(f"{self.private.url}: unexpected object {key}")
                ref = TileRef(0, tile, width, True)
                self._put_private(key, self._payload_bundle(ref))
                rewritten += 1
            try:
                self.log.storage.rewrite_done(tile, generation)
            except StorageError as e:  # read-only storage (translog publish): stays queued
                log.warning("tile %d stays queued for rewriting: %s", tile, e)
            log.info(
                "rewrote %d payload bundle(s) of tile %d in %s after erasure",
                len(keys),
                tile,
                self.private.url,
            )
        self.rewrites += rewritten
        return rewritten

    def _publish_round(self, target: SignedCheckpoint) -> None:
        """Upload everything the tree of ``target`` needs, then the checkpoint."""
        old, new = self.store_size, target.size
        jobs: list[Callable[[], None]] = []
        for ref in layout.tiles_between(old, new):
            jobs.append(lambda ref=ref: self._put_tile(ref, old))  # type: ignore[misc]
        for ref in layout.tiles_between(old, new, entries=True):
            jobs.append(lambda ref=ref: self._put_bundle(ref, old))  # type: ignore[misc]
        if self.private is not None:
            jobs.append(lambda: self._put_history(target))
        for fut in [self._pool.submit(job) for job in jobs]:
            fut.result()
        self._check_guard()
        self._put_checkpoint(target)
        self.store_size = new
        self.rounds += 1

    def _check_guard(self) -> None:
        if self._guard is not None:
            self._guard()

    def _put_immutable(self, ref: TileRef, body: bytes, published: int) -> None:
        """Create ``ref`` (``If-None-Match: *``). One already there must hold these bytes,
        unless no published checkpoint can refer to it: a tile covering leaves beyond
        ``published`` (the store's checkpoint size) was left by a writer that lost its lease
        before uploading the checkpoint over it (a paused or partitioned leader), and is
        replaced. A different tile that a published checkpoint needs stops publication."""
        store, key = self.public, ref.path
        self._check_guard()
        try:
            store.put(
                key,
                body,
                content_type=layout.TILE_TYPE,
                cache_control=layout.TILE_CACHE,
                if_none_match=True,
            )
        except PreconditionFailedError:
            existing = store.get(key)
            if existing is not None and existing.body == body:
                pass
            elif (ref.index * TILE_WIDTH + ref.width) * TILE_WIDTH**ref.level > published:
                log.warning(
                    "replacing %s in %s: left unpublished by another writer", key, store.url
                )
                self._check_guard()
                store.put(key, body, content_type=layout.TILE_TYPE, cache_control=layout.TILE_CACHE)
                self.replaced += 1
            else:
                raise PublicationHaltedError(
                    f"{store.url} already holds a different {key}: another writer published "
                    "another tree; publication stopped"
                ) from None
        self.objects += 1
        self.bytes += len(body)

    def _put_tile(self, ref: TileRef, published: int) -> None:
        self._put_immutable(ref, read_tile(ref, self.log.storage), published)

    def _put_bundle(self, ref: TileRef, published: int) -> None:
        start = ref.index * TILE_WIDTH
        entries = self.log.storage.get_entries(start, start + ref.width)
        self._put_immutable(ref, encode_bundle([e.leaf for e in entries]), published)
        if self.private is not None:
            self._put_private(layout.payloads_key(ref), _encode_payloads(entries))

    def _payload_bundle(self, ref: TileRef) -> bytes:
        start = ref.index * TILE_WIDTH
        return _encode_payloads(self.log.storage.get_entries(start, start + ref.width))

    def _put_private(self, key: str, body: bytes) -> None:
        assert self.private is not None
        # Payloads can be erased later: the private copy is replaced, never compared.
        self.private.put(
            key, body, content_type=layout.TILE_TYPE, cache_control=layout.PRIVATE_CACHE
        )
        self.objects += 1
        self.bytes += len(body)

    def _put_history(self, target: SignedCheckpoint) -> None:
        body = layout.encode_history(target.timestamp_ms, target.note)
        self._put_private(layout.history_key(target.size), body)

    def _put_checkpoint(self, target: SignedCheckpoint) -> None:
        kwargs: dict[str, object] = {}
        if self._has_checkpoint:
            kwargs["if_match"] = self._store_etag
        else:
            kwargs["if_none_match"] = True
        try:
            etag = self.public.put(
                layout.CHECKPOINT_KEY,
                target.note,
                content_type=layout.CHECKPOINT_TYPE,
                cache_control=layout.CHECKPOINT_CACHE,
                **kwargs,  # type: ignore[arg-type]
            )
        except PreconditionFailedError:
            raise PublicationHaltedError(
                f"the checkpoint in {self.public.url} was replaced by another writer; "
                "publication stopped (is a second sequencer running?)"
            ) from None
        self._store_etag = etag
        self._has_checkpoint = True
        self.objects += 1
        self.bytes += len(target.note)


def _encode_payloads(entries: Sequence[StoredEntry]) -> bytes:
    """The private payload bundle of ``entries`` as storage holds them now."""
    return layout.encode_payloads(
        [(e.salt, e.payload, len(e.leaf) > 9 and e.leaf[9] == KIND_COMMITTED) for e in entries]
    )
