"""Erasure, retention and legal holds: erase committed payloads and salts, never leaves.

An erased entry keeps its leaf (which holds the commitment ``SHA-256(salt || payload)``), so
its leaf hash, every tree hash, every checkpoint, proof, fsck run and audit stay valid; only
the payload and the salt that could reveal it are gone. In one storage transaction per chunk
(:meth:`~translog.storage.base.Storage.index_write` with ``erase``):

* the record of the entry becomes its 42-byte leaf (the storage layout, docs/FORMATS.md §7);
* its search postings are deleted, except ``tenant`` and ``id`` (neither is personal), so a
  query by event id still finds it and says it was erased;
* an erasure record ``e || index`` keeps who, when, why, and the index of the log entry that
  recorded the erasure (which the caller appends *before* erasing: the log always says why
  something is gone).

Legal holds (``h || name``) stop both erasure requests and retention for the events they
cover: a tenant (``*`` for all) and optionally one subject (an actor or target id).

Retention: per category, the period from ``[events] retention`` /
``retention_by_category`` (:mod:`translog.formats.event_presets`); every event whose *leaf*
timestamp is older than ``now - period`` has its payload erased by :func:`retention_plan` +
:func:`apply_erasure`. Leaf timestamps never decrease, so the candidates are the category's
postings below one index, found by binary search.

Nothing here imports aiohttp or lmdb; the HTTP layer (``translog/http/admin_events.py``)
appends the log entries and runs :func:`apply_erasure` on the writer thread.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from translog.core.leaf import KIND_COMMITTED
from translog.errors import ConflictError, MalformedError, NotFoundError
from translog.formats.event_presets import parse_retention
from translog.formats.event_schema import CATEGORIES, event_subjects, try_parse_event
from translog.log import event_index as ix
from translog.storage.base import Storage

ERASE_CHUNK = 1000
"""Entries erased per storage transaction."""
MAX_HOLD_NAME = 64


@dataclass(frozen=True)
class Hold:
    """A legal hold: events of ``tenant`` (``*``: all), about ``subject`` when given."""

    name: str
    tenant: str
    subject: str | None
    reason: str
    by: str
    at: int

    def covers(self, tenant: str | None, subjects: set[str]) -> bool:
        """Whether an event of ``tenant`` naming ``subjects`` is under this hold."""
        if self.tenant != "*" and self.tenant != tenant:
            return False
        return self.subject is None or self.subject in subjects

    def to_json(self) -> dict[str, Any]:
        """The stored and served form."""
        return {
            "name": self.name,
            "tenant": self.tenant,
            "subject": self.subject,
            "reason": self.reason,
            "by": self.by,
            "at": self.at,
        }


def hold_key(name: str) -> bytes:
    """The index record key of a hold."""
    return ix.HOLD + name.encode()


def check_hold_name(name: object) -> str:
    """A hold name: 1-64 of letters, digits, ``.``, ``_``, ``-``."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= MAX_HOLD_NAME
        or not all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    ):
        raise MalformedError("name: expected 1-64 of A-Z a-z 0-9 . _ -")
    return name


def holds(storage: Storage) -> list[Hold]:
    """Every legal hold in force."""
    out = []
    with storage.index_reader() as r:
        key = ix.HOLD
        while True:
            item = r.seek(key)
            if item is None or not item[0].startswith(ix.HOLD):
                break
            out.append(Hold(**json.loads(item[1])))
            key = item[0] + b"\x00"
    return out


# -- erasure -----------------------------------------------------------------------------


@dataclass
class ErasurePlan:
    """What an erasure request will do, decided before anything is written."""

    indexes: list[int] = field(default_factory=list)
    """Entries whose payload will be erased."""
    events: dict[int, Mapping[str, Any] | None] = field(default_factory=dict)
    """Their events (None for a committed payload that is not an event)."""
    skipped: dict[int, str] = field(default_factory=dict)
    """Entries left alone, and why (already erased, inline)."""
    held: dict[int, str] = field(default_factory=dict)
    """Entries under a legal hold → the hold's name."""

    def tenants(self) -> set[str]:
        """Tenants of the events to erase."""
        return {str(e["tenant"]) for e in self.events.values() if e is not None}


def plan_erasure(
    storage: Storage, indexes: Sequence[int], *, size: int, in_force: Sequence[Hold]
) -> ErasurePlan:
    """Decide which of ``indexes`` (each below ``size``) can be erased."""
    plan = ErasurePlan()
    for index in sorted(set(indexes)):
        if not 0 <= index < size:
            raise NotFoundError(f"entry {index} is not in the log (size {size})")
        entry = storage.get_entries(index, index + 1)[0]
        if len(entry.leaf) < 10 or entry.leaf[9] != KIND_COMMITTED:
            plan.skipped[index] = "inline: the payload is part of the leaf and cannot be erased"
            continue
        if entry.payload is None:
            plan.skipped[index] = "already erased"
            continue
        event = try_parse_event(entry.payload)
        tenant = None if event is None else str(event["tenant"])
        subjects = set() if event is None else event_subjects(event)
        hold = next((h for h in in_force if h.covers(tenant, subjects)), None)
        if hold is not None:
            plan.held[index] = hold.name
            continue
        plan.indexes.append(index)
        plan.events[index] = event
    return plan


def refuse_held(plan: ErasurePlan) -> None:
    """Raise ``ConflictError`` (409) naming the hold when any entry is under a legal hold."""
    if plan.held:
        index, name = next(iter(plan.held.items()))
        raise ConflictError(
            f"{len(plan.held)} of the entries are under legal hold {name!r} (first: entry "
            f"{index}); release the hold first"
        )


def apply_erasure(
    storage: Storage,
    plan: ErasurePlan,
    *,
    by: str,
    reason: str,
    at: int,
    erasure_entry: int | None,
    kind: str,
) -> int:
    """Erase the planned payloads with their index records (writer thread); return how many."""
    erased = 0
    for k in range(0, len(plan.indexes), ERASE_CHUNK):
        chunk = plan.indexes[k : k + ERASE_CHUNK]
        puts: list[tuple[bytes, bytes]] = []
        deletes: list[bytes] = []
        for index in chunk:
            event = plan.events.get(index)
            record = {
                "tenant": None if event is None else event["tenant"],
                "event_id": None if event is None else event["id"],
                "kind": kind,
                "by": by,
                "at": at,
                "reason": reason,
                "erasure_entry": erasure_entry,
            }
            puts.append((ix.erased_key(index), json.dumps(record, sort_keys=True).encode()))
            if event is not None:
                keep = {k for k, _ in ix.erased_postings(index, record)}
                deletes += [k for k, _ in ix.event_postings(index, event) if k not in keep]
        erased += storage.index_write(puts, deletes, erase=chunk)
    if erased:
        # LMDB never hands out pages freed by the newest transaction (a reader may still be
        # on the snapshot before it). One small commit after the erasure makes every page it
        # freed reusable by the very next append, so erased bytes really come back.
        storage.index_write([(ix.STATE + b"erased_at", at.to_bytes(8, "big"))])
    return erased


def subject_hash(tenant: str, subject: str) -> str:
    """How erasure entries name a subject without keeping it: SHA-256(tenant 0 subject) hex."""
    return hashlib.sha256(f"{tenant}\0{subject}".encode()).hexdigest()


def subject_entries(
    storage: Storage, tenant: str, subject: str, *, size: int, self_tenant: str
) -> list[int]:
    """Every entry of ``tenant`` whose actor or a target is ``subject``, and the log's own
    self-audit entries that name the subject (searches for them)."""
    terms = [
        ix.term_hash("actor", tenant, subject),
        ix.term_hash("target", tenant, subject),
        ix.term_hash("target", self_tenant, subject),
    ]
    found: set[int] = set()
    with storage.index_reader() as r:
        for term in terms:
            found.update(ix.candidates(r, [term], 0, size))
    return sorted(found)


# -- retention ---------------------------------------------------------------------------


def retention_periods(default: str, by_category: Mapping[str, str]) -> dict[str, int]:
    """Category → ms kept, for every category with a finite retention."""
    out: dict[str, int] = {}
    for category in CATEGORIES:
        text = by_category.get(category, default)
        period = parse_retention(text, f"events.retention_by_category.{category}")
        if period is not None:
            out[category] = period
    return out


def retention_plan(
    storage: Storage,
    periods: Mapping[str, int],
    *,
    now_ms: int,
    size: int,
    in_force: Sequence[Hold],
) -> tuple[ErasurePlan, dict[str, int]]:
    """Entries past their category's retention (and not held); counts per category."""
    candidates: dict[int, str] = {}
    tenants = ix.tenants(storage)
    for category, period in periods.items():
        hi = ix.first_at_or_after(storage, size, now_ms - period)
        if hi == 0:
            continue
        with storage.index_reader() as r:
            for tenant in tenants:
                term = ix.term_hash("category", tenant, category)
                for index in ix.candidates(r, [term], 0, hi):
                    candidates[index] = category
    plan = plan_erasure(storage, list(candidates), size=size, in_force=in_force)
    counts: dict[str, int] = {}
    for index in plan.indexes:
        counts[candidates[index]] = counts.get(candidates[index], 0) + 1
    return plan, dict(sorted(counts.items()))
