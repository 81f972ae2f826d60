"""The single-writer lease: one lock object per log, written only with conditional requests.

The lease object (``lease`` in the private store, JSON, docs/FORMATS.md) names its holder, a
random token, the log's origin and an expiry time. A sequencer:

* **acquires** it by creating the object (``If-None-Match: *``), or by replacing an expired one
  with ``If-Match`` on the ETag it read; a lost race is a 412 (or Ceph's 500, resolved by
  reading back), and the winner is named;
* **renews** it every ``renew_ms`` with ``If-Match`` on its own last ETag, so a lease taken
  over by someone else can never be renewed;
* **checks** it before every durable write (:meth:`Lease.check`, a clock comparison): once its
  own deadline passes without a renewal, writes fail with ``LeaseLostError`` and the
  sequencer stops. The deadline is ``ttl - ttl/5`` after the *start* of the last successful
  write, measured on the monotonic clock, so another instance (which waits for the full
  ``ttl`` by its wall clock) cannot take over while this one still writes, as long as clocks
  agree within ``ttl/5``;
* **releases** it on a clean shutdown (an expired record, with ``If-Match``), so a standby takes
  over at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from translog.errors import (
    LeaseHeldError,
    LeaseLostError,
    MalformedError,
    PreconditionFailedError,
)
from translog.log.sequencer import now_ms
from translog.publish import layout
from translog.publish.store import ObjectStore


@dataclass(frozen=True)
class LeaseRecord:
    """The lease object's content."""

    origin: str
    holder: str
    token: str
    acquired_ms: int
    renewed_ms: int
    expires_ms: int

    def encode(self) -> bytes:
        """Canonical JSON."""
        return json.dumps(asdict(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes) -> LeaseRecord:
        """Parse strictly."""
        try:
            raw = json.loads(data)
            return cls(
                origin=str(raw["origin"]),
                holder=str(raw["holder"]),
                token=str(raw["token"]),
                acquired_ms=int(raw["acquired_ms"]),
                renewed_ms=int(raw["renewed_ms"]),
                expires_ms=int(raw["expires_ms"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise MalformedError(f"lease object is malformed: {e}") from e


def default_holder() -> str:
    """``host:pid``: what the lease says about who holds it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def describe(record: LeaseRecord, now_ms: int) -> str:
    """``held by HOLDER until T (in N s)`` for messages."""
    left = (record.expires_ms - now_ms) / 1000
    when = f"in {left:.1f} s" if left > 0 else f"{-left:.1f} s ago"
    return f"held by {record.holder} until {_iso(record.expires_ms)} ({when})"


class Lease:
    """This instance's claim on a log's lease object."""

    def __init__(
        self,
        store: ObjectStore,
        origin: str,
        *,
        holder: str | None = None,
        ttl_ms: int = 30_000,
        renew_ms: int = 10_000,
        wall_ms: Callable[[], int] = now_ms,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is written until :meth:`try_acquire`."""
        if not 0 < renew_ms < ttl_ms:
            raise ValueError("the renew interval must be positive and shorter than the ttl")
        self.store = store
        self.origin = origin
        self.holder = holder or default_holder()
        self.ttl_ms = ttl_ms
        self.renew_ms = renew_ms
        self.token = secrets.token_hex(16)
        self._wall = wall_ms
        self._mono = monotonic
        self._etag: str | None = None
        self._acquired_ms = 0
        self._valid_until = 0.0
        self.lost: str | None = None

    @property
    def held(self) -> bool:
        """True while this instance may write."""
        return self._etag is not None and self.lost is None and self._mono() < self._valid_until

    def check(self) -> None:
        """Raise :class:`LeaseLostError` unless this instance may write now (cheap)."""
        if self._etag is None:
            raise LeaseLostError(f"the lease of {self.origin} is not held by this instance")
        if self.lost is not None:
            raise LeaseLostError(self.lost)
        if self._mono() >= self._valid_until:
            raise LeaseLostError(
                f"the lease of {self.origin} was not renewed in time; writes stopped"
            )

    def current(self) -> LeaseRecord | None:
        """The lease object as stored now."""
        obj = self.store.get(layout.LEASE_KEY)
        return None if obj is None else LeaseRecord.decode(obj.body)

    def try_acquire(self) -> None:
        """Take the lease if it is free or expired; raise :class:`LeaseHeldError` if not."""
        started = self._mono()
        now = self._wall()
        obj = self.store.get(layout.LEASE_KEY)
        condition: dict[str, object]
        if obj is None:
            condition = {"if_none_match": True}
        else:
            rec = LeaseRecord.decode(obj.body)
            if rec.token == self.token:
                self.renew()
                return
            if rec.origin != self.origin:
                raise LeaseHeldError(
                    f"the lease object in {self.store.url} is for another log ({rec.origin!r})",
                    rec,
                )
            if now < rec.expires_ms:
                raise LeaseHeldError(
                    f"the lease of {self.origin} is {describe(rec, now)}; refusing to sequence",
                    rec,
                )
            condition = {"if_match": obj.etag}
        record = LeaseRecord(self.origin, self.holder, self.token, now, now, now + self.ttl_ms)
        try:
            etag = self._write(record, condition)
        except PreconditionFailedError:
            winner = self.current()
            if winner is None:
                raise LeaseHeldError(f"lost the race for the lease of {self.origin}") from None
            raise LeaseHeldError(
                f"lost the race for the lease of {self.origin}: {describe(winner, self._wall())}",
                winner,
            ) from None
        self._etag = etag
        self._acquired_ms = now
        self.lost = None
        self._valid_until = started + (self.ttl_ms - self.ttl_ms // 5) / 1000

    def renew(self) -> None:
        """Extend the lease (``If-Match`` on our last write); a lost lease raises for good."""
        if self._etag is None:
            raise LeaseLostError(f"the lease of {self.origin} is not held by this instance")
        started = self._mono()
        now = self._wall()
        record = LeaseRecord(
            self.origin, self.holder, self.token, self._acquired_ms, now, now + self.ttl_ms
        )
        try:
            etag = self._write(record, {"if_match": self._etag})
        except PreconditionFailedError:
            holder = self.current()
            who = "" if holder is None else f": now {describe(holder, self._wall())}"
            self.lost = f"the lease of {self.origin} was taken over{who}"
            raise LeaseLostError(self.lost) from None
        self._etag = etag
        self._valid_until = started + (self.ttl_ms - self.ttl_ms // 5) / 1000

    def release(self) -> None:
        """Give the lease up at once (an already-expired record), if still ours."""
        if self._etag is None or self.lost is not None:
            return
        now = self._wall()
        record = LeaseRecord(self.origin, self.holder, self.token, self._acquired_ms, now, now)
        with contextlib.suppress(PreconditionFailedError):
            self._write(record, {"if_match": self._etag})
        self._etag = None
        self._valid_until = 0.0

    def _write(self, record: LeaseRecord, condition: dict[str, object]) -> str:
        return self.store.put(
            layout.LEASE_KEY,
            record.encode(),
            content_type="application/json",
            cache_control=layout.PRIVATE_CACHE,
            **condition,  # type: ignore[arg-type]
        )
