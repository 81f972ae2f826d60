"""What a submission is, as every submitter sees it: the request, its answers, the limits.

:class:`SubmitRequest` is what the HTTP handlers and ingest sources hand a :class:`Submitter`
(:class:`translog.log.submission.Submissions`, or an HTTP worker's fast path); an
:class:`Answer` or a sequence of :class:`Landed` comes back. :func:`check_entries` and
:class:`Bucket` are the limits both processes apply, :func:`scope_key` the stored form of an
idempotency key, and :class:`PreparedRequest` / :class:`PreparedRun` the fast path's message
layout (leaves built by a worker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, overload

from translog.config import Config
from translog.core.leaf import MAX_INLINE_PAYLOAD
from translog.errors import TooLargeError
from translog.formats.batch import Batch
from translog.formats.event_schema import validate_payloads
from translog.log.tokens import TokenInfo

WAITS = ("durable", "published", "0")
"""The values of ``?wait=``."""
KINDS = ("committed", "inline")
"""The values of ``?kind=``."""


@dataclass(slots=True)  # not frozen: made per request on the fast path; treat as immutable
class SubmitRequest:
    """One submission, parsed and authenticated: what a :class:`Submitter` is asked to do."""

    token: TokenInfo
    entries: Batch
    wait: str = "durable"
    """``durable``, ``published`` or ``0`` (a promise)."""
    kind: str | None = None
    """``committed``, ``inline`` or None (the server's default)."""
    batch: bool = False
    """Answer a batch receipt (``/add-batch``) rather than a single one (``/add``)."""
    started: float = 0.0
    """``time.monotonic()`` when the request arrived (for the receipt latency histogram)."""
    source: str = "api"
    """Where the entries came from (``api`` for /add and /add-batch; an ingest source name),
    the ``source`` label of ``translog_source_entries_total``."""
    request_key: str | None = None
    """One idempotency key for the whole request, in place of per-entry keys (honoured by
    :meth:`Submitter.durable` only; ``entries.keys`` is then None). A request whose key
    names an earlier one appends nothing: entry ``i`` is answered as entry ``i`` of that
    request, a duplicate. OTLP names a request by its body's digest this way."""


@dataclass(slots=True)  # not frozen: made per request on the fast path; treat as immutable
class Answer:
    """An HTTP status and the compact JSON body that goes with it."""

    status: int
    body: bytes


class Landed(Protocol):
    """Where an entry of a durable request landed (an :class:`Appended` is one)."""

    @property
    def index(self) -> int:
        """The entry's index in the tree (an earlier entry's, for a duplicate)."""
        ...

    @property
    def duplicate(self) -> bool:
        """Whether an idempotency key named an earlier entry."""
        ...


@dataclass(slots=True)  # not frozen: made per request on the fast path; treat as immutable
class Placed:
    """A :class:`Landed` as it crosses between processes."""

    index: int
    duplicate: bool


class RequestRun(Sequence[Placed]):
    """Where a request under one key landed: entry ``i`` is entry ``first + i``, all of
    them ``duplicate`` or none (made on access, not one object per entry)."""

    __slots__ = ("duplicate", "first", "size")

    def __init__(self, first: int, size: int, duplicate: bool) -> None:
        self.first, self.size, self.duplicate = first, size, duplicate

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, i: int) -> Placed: ...

    @overload
    def __getitem__(self, i: slice) -> list[Placed]: ...

    def __getitem__(self, i: int | slice) -> Placed | list[Placed]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.size))]
        if not -self.size <= i < self.size:
            raise IndexError(i)
        return Placed(self.first + (i % self.size), self.duplicate)


class DuplicateRequest(RequestRun):
    """The answer to a request whose key names an earlier request: entry ``i`` is entry
    ``first + i`` of that request, a duplicate."""

    __slots__ = ()

    def __init__(self, first: int, size: int) -> None:
        super().__init__(first, size, True)


class Submitter(Protocol):
    """What the submission handlers call: :class:`Submissions`, or a worker's fast path."""

    async def submit(self, request: SubmitRequest) -> Answer:
        """Submit the request's entries; raises a TranslogError for a refusal."""
        ...

    async def durable(self, request: SubmitRequest) -> Sequence[Landed]:
        """Admit the entries and return once they are durable (the ingest sources' call)."""
        ...

    def rejected(self, kind: str) -> None:
        """Count a refused submission request under its error kind."""
        ...


def scope_key(token_name: str, key: str) -> bytes:
    """The stored idempotency digest: keys are scoped by the token's name."""
    return hashlib.sha256(f"{token_name}\n{key}".encode()).digest()[:16]


def check_entries(entries: Batch, kind: str | None, config: Config) -> list[bool]:
    """Check the limits a payload must meet; per payload, whether it is stored committed.

    Payloads over ``server.max_payload_bytes`` are a 413. A payload over the inline-leaf
    limit is committed, unless ``kind=inline`` asked otherwise (then a 413). With events on,
    every payload must be a ``translog.event/v1``.
    """
    server = config.server
    limit = server.max_payload_bytes
    payloads = entries.payloads
    if payloads and max(map(len, payloads)) > limit:
        i = next(i for i, p in enumerate(payloads) if len(p) > limit)
        raise TooLargeError(
            f"{entries.where(i)}: payload of {len(payloads[i])} bytes exceeds the "
            f"{limit}-byte limit"
        )
    if config.events.enabled:
        validate_payloads((entries.where(i), p) for i, p in enumerate(payloads))
    if kind == "committed" or (kind is None and server.default_kind == "committed"):
        return [True] * len(payloads)
    flags = [len(p) > MAX_INLINE_PAYLOAD for p in payloads]
    if kind == "inline" and any(flags):
        i = flags.index(True)
        raise TooLargeError(
            f"{entries.where(i)}: inline payload of {len(payloads[i])} bytes exceeds the "
            f"{MAX_INLINE_PAYLOAD}-byte leaf limit; use kind=committed"
        )
    return flags


class Bucket:
    """A token bucket: ``rate`` entries per second, bursts up to one second's worth."""

    __slots__ = ("tokens", "updated")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens = max(rate, 1.0)
        self.updated = now

    def take(self, rate: float, n: int, now: float) -> float:
        """Take ``n`` entries; 0 when allowed, else the seconds until they would be.

        A request larger than the burst passes once the bucket is full and leaves it in debt,
        so any batch size can get through at the configured average rate.
        """
        capacity = max(rate, 1.0)
        self.tokens = min(capacity, self.tokens + (now - self.updated) * rate)
        self.updated = now
        need = min(float(n), capacity)
        if self.tokens < need:
            return (need - self.tokens) / rate
        self.tokens -= n
        return 0.0


class PreparedRequest(NamedTuple):
    """One request's leaves as an HTTP worker built them (the fast path's message format)."""

    started: float
    batch: bool
    timestamp_ms: int
    salts: list[bytes | None]
    leaves: list[bytes]
    bodies: list[bytes | None]
    hashes: bytes


class PreparedRun(NamedTuple):
    """The answer to :meth:`Submissions.add_prepared`: where the run landed, and its proof."""

    start: int
    size: int
    root: bytes
    note: bytes
    proof: list[bytes]
    stamps: list[int]
    """Each request's final timestamp (the log process has the final word on time)."""
    hashes: bytes | None
    """The run's leaf hashes when a timestamp moved (and they were made again), else None."""
