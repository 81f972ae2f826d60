"""Signed promises (``?wait=0``) and the watchers that check each one is kept.

A promise (``translog-promise/v1``, :mod:`translog.formats.receipt`) says a leaf will be in the
tree by its deadline, the leaf's timestamp plus ``publisher.max_merge_delay_ms``. The log
gives it only once the leaf is recorded durably (see :meth:`translog.log.sequencer.Log.submit`,
``persisted``), so a crash cannot break it. A promise the log fails to keep anyway is logged
at CRITICAL and counted in ``translog_promises_broken_total``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from translog.errors import TranslogError
from translog.formats.receipt import Promise, format_promise, sign_promise
from translog.log.sequencer import Appended, Log, now_ms
from translog.metrics import Metrics

log = logging.getLogger("translog.submit")

DRAIN_TIMEOUT = 10.0
"""Seconds the watchers get, at shutdown, to record the outcomes of their promises."""

_Future = asyncio.Future[Sequence[Appended]]


@dataclass(frozen=True, slots=True)
class Prior:
    """A leaf a promise is over, and the future to watch (None once it is durable)."""

    leaf: bytes
    salt: bytes | None
    future: _Future | None


class Promises:
    """Signs promises for one log and watches that each is kept."""

    def __init__(self, the_log: Log, metrics: Metrics, max_merge_delay_ms: int) -> None:
        self.log, self.metrics, self.delay = the_log, metrics, max_merge_delay_ms
        self.watchers: set[asyncio.Task[None]] = set()
        metrics.counter("translog_promises_total", "signed promises (?wait=0) returned")
        metrics.counter("translog_promises_broken_total", "promises not merged by their deadline")

    def sign(self, resolved: list[Prior], sources: Sequence[Prior | int]) -> list[dict[str, Any]]:
        """One promise per entry, JSON-ready. ``sources[i]`` is the earlier entry a key named
        (a duplicate) or the position among this request's fresh entries."""
        watch: dict[_Future, list[Promise]] = {}
        seen: set[int] = set()
        out: list[dict[str, Any]] = []
        signer = self.log.signer
        for prior, source in zip(resolved, sources, strict=True):
            duplicate = isinstance(source, Prior) or source in seen
            promise = sign_promise(signer, prior.leaf, prior.salt, self.delay, duplicate=duplicate)
            if isinstance(source, int):
                seen.add(source)
            if prior.future is not None:
                watch.setdefault(prior.future, []).append(promise)
            out.append(format_promise(promise))
        self.metrics.inc("translog_promises_total", len(out))
        self.metrics.inc("translog_duplicates_total", sum(o["duplicate"] for o in out))
        for fut, promises in watch.items():
            task = asyncio.create_task(self._check(fut, promises))
            self.watchers.add(task)
            task.add_done_callback(self.watchers.discard)
        return out

    async def _check(self, fut: _Future, promises: list[Promise]) -> None:
        """Count promises whose leaf did not become durable by its deadline."""
        metrics = self.metrics
        try:
            appended = await asyncio.shield(fut)
        except TranslogError as e:
            metrics.inc("translog_promises_broken_total", len(promises))
            log.critical("%d promises broken: their entries failed: %s", len(promises), e)
            return
        landed = {a.leaf_hash for a in appended}
        done = now_ms()
        for p in promises:
            if p.leaf_hash not in landed or done > p.deadline_ms:
                metrics.inc("translog_promises_broken_total")
                log.critical(
                    "promise broken: leaf hash %s (deadline %d) %s",
                    base64.b64encode(p.leaf_hash).decode(),
                    p.deadline_ms,
                    "was not merged" if p.leaf_hash not in landed else f"was merged at {done}",
                )

    async def drain(self) -> None:
        """Wait (up to :data:`DRAIN_TIMEOUT`) for the watchers; cancel the rest."""
        if self.watchers:
            _, pending = await asyncio.wait(set(self.watchers), timeout=DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()
