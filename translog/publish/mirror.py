"""``translog mirror``: follow a log, verify everything, republish it, serve the read path.

A mirror holds no key of the log. Each round it:

1. fetches the source's checkpoint and verifies it (signature, origin, witness policy if any)
   and, through the client's state file, that it is consistent with the last one it accepted
   (a fork or rollback raises ``InconsistencyError``: the mirror stops and keeps the evidence);
2. fetches the entry bundles it lacks, hashes the leaves into its own copy of the tree, and
   compares the root with the checkpoint's **before storing anything** (translog.publish
   .rebuild); only then is the suffix appended to the mirror's LMDB;
3. fetches every hash tile the new tree adds and compares it byte for byte with the tile
   computed from its own verified tree; a differing tile is an error and nothing is published;
4. republishes from its verified storage only, tiles first and checkpoint last, to its own
   object store or directory (translog.publish.publisher);
5. its verified copy is served (``/checkpoint``, ``/tile/…``, ``/healthz``, ``/metrics``) by
   :func:`translog.http.mirror.mirror_app`.

Nothing unverified is ever stored, served or republished.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from pathlib import Path

from translog.client import LogClient
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import tree_hash
from translog.core.tiles import TileRef, read_tile
from translog.core.vkey import parse_vkey
from translog.errors import InconsistencyError, NotFoundError, TileMismatchError, TranslogError
from translog.log.sequencer import SignedCheckpoint
from translog.publish import layout
from translog.publish.publisher import Publisher, PublisherOptions
from translog.publish.rebuild import sync_from_store
from translog.publish.store import HttpStore, ObjectStore
from translog.storage.base import Storage

log = logging.getLogger("translog.publish.mirror")


class Mirror:
    """A verified copy of one log, fed from its read path."""

    def __init__(
        self,
        source_url: str,
        vkey: str,
        storage: Storage,
        state_path: Path,
        *,
        target: ObjectStore | None = None,
        concurrency: int = 8,
        timeout: float = 30.0,
    ) -> None:
        """Mirror ``source_url`` into ``storage`` (and republish to ``target``)."""
        self.source_url = source_url.rstrip("/")
        self.vkey = vkey
        self.verifier = parse_vkey(vkey)
        self.origin = self.verifier.name
        self.storage = storage
        self.state_path = state_path
        self.concurrency = concurrency
        self.timeout = timeout
        self._source = HttpStore(self.source_url, timeout_s=timeout)
        self._published: SignedCheckpoint | None = None
        latest = storage.latest_checkpoint()
        if latest is not None:
            cp = open_checkpoint(latest.note, self.verifier, origin=self.origin)[0]
            if tree_hash(cp.size, storage) != cp.root_hash:
                raise NotFoundError("the mirror's storage does not match its own checkpoint")
            self._published = SignedCheckpoint(cp, latest.timestamp_ms, latest.note)
        self.publisher: Publisher | None = None
        if target is not None:
            self.publisher = Publisher(
                self, vkey, target, None, PublisherOptions(concurrency=concurrency)
            )
        self.rounds = 0
        self.last_error: str | None = None
        self.halted: BaseException | None = None
        self.last_success = time.monotonic()

    # -- the PublishSource protocol ---------------------------------------------------------

    @property
    def size(self) -> int:
        """Size of the verified copy."""
        return self.storage.size()

    @property
    def published(self) -> SignedCheckpoint | None:
        """The newest verified checkpoint."""
        return self._published

    @property
    def local_published(self) -> SignedCheckpoint | None:
        """What a publisher of the copy uploads: the newest verified checkpoint."""
        return self._published

    def root_at(self, size: int) -> bytes:
        """Root of the verified copy at ``size``."""
        return tree_hash(size, self.storage)

    # -- following --------------------------------------------------------------------------

    async def follow_once(self, client: LogClient) -> int:
        """One round: verify, copy, check tiles, republish. Returns the verified size."""
        cp = await client.checkpoint()  # signature + consistency with the state file
        loop = asyncio.get_running_loop()
        if self._published is None or cp.size > self._published.size:
            await loop.run_in_executor(None, self._copy, cp.note, cp.size)
        if self.publisher is not None and self._published is not None:
            await loop.run_in_executor(None, self._republish, self._published)
        self.rounds += 1
        self.last_success = time.monotonic()
        return self.size

    def _copy(self, note: bytes, size: int) -> None:
        old = self.storage.size()
        report = sync_from_store(
            self.storage,
            self._source,
            None,
            self.verifier,
            self.origin,
            concurrency=self.concurrency,
            note=note,
        )
        # Every hash tile the new tree adds, as the source serves it, must be the one the
        # mirror computes from the entries it verified.
        refs = layout.tiles_between(old, size)
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            for ref, served in zip(refs, pool.map(self._fetch, refs), strict=True):
                mine = read_tile(ref, self.storage)
                if served != mine:
                    raise TileMismatchError(
                        f"{self.source_url}/{ref.path} differs from the tile computed from the "
                        f"verified entries (checkpoint size {size})"
                    )
        latest = self.storage.latest_checkpoint()
        assert latest is not None
        cp = open_checkpoint(latest.note, self.verifier, origin=self.origin)[0]
        self._published = SignedCheckpoint(cp, latest.timestamp_ms, latest.note)
        log.info("mirrored %s: size %d -> %d (%d entries)", self.origin, old, size, report.entries)

    def _fetch(self, ref: TileRef) -> bytes:
        obj = self._source.get(ref.path)
        if obj is None:
            raise NotFoundError(f"{self.source_url}/{ref.path} is missing")
        return obj.body

    def _republish(self, target: SignedCheckpoint) -> None:
        assert self.publisher is not None
        if target.size > self.publisher.store_size or self.publisher.rounds == 0:
            self.publisher.publish_now(target)

    async def run(self, interval: float, *, stop: asyncio.Event | None = None) -> None:
        """Follow until ``stop`` is set; a fork or rollback halts (with the evidence kept)."""
        stop = stop or asyncio.Event()
        if self.publisher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.publisher.load_store_state)
        async with LogClient(
            self.source_url, self.vkey, state_path=self.state_path, timeout=self.timeout
        ) as client:
            while not stop.is_set():
                try:
                    await self.follow_once(client)
                    self.last_error = None
                except (InconsistencyError, TileMismatchError) as e:
                    self.halted = e
                    log.critical("mirror halted: %s", e)
                    return
                except TranslogError as e:
                    self.last_error = str(e)
                    log.warning("mirror round failed (retrying): %s", e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)

    def close(self) -> None:
        """Stop the publisher's threads."""
        if self.publisher is not None:
            self.publisher.shutdown()
