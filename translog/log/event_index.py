"""Secondary indexes of audit events, kept in the log's storage (the ``index`` keyspace).

Keys (all integers big-endian):

=====================================================  ======================================
key                                                    value
=====================================================  ======================================
``p`` || u32 block || term (8) || u64 index            empty: a posting (entry ``index`` has
                                                       the term); block = index >> 14
``e`` || u64 index                                     JSON erasure record (who, when, why)
``h`` || hold name                                     JSON legal hold
``s`` || ``indexed``                                   u64: entries [0, n) are indexed
``t`` || tenant                                        empty: tenants seen (for retention)
=====================================================  ======================================

A term is ``SHA-256(field 0x00 tenant 0x00 value)[:8]`` (:func:`term_hash`), so every posting
list is per tenant. **Append-friendly:** the block number leads the key, so a batch only ever
inserts into the last block's part of the B-tree (at most 16,384 entries' postings), and the
pages of older blocks are never written again; random inserts stay confined to a small,
hot region instead of spreading over the whole index the way a key that starts with a hash
does. A query seeks each of its terms once per block it crosses (leapfrog intersection), so
its cost grows with ``size / 16384`` seeks, not with the number of entries scanned.

Postings are written by :class:`EventIndexer`, which the sequencer calls on its writer thread
to add them to the batch's own transaction: indexes are durable with the entries they index.
:func:`reindex` rebuilds them from the stored entries (``translog reindex``).

A hash collision can only add a candidate, never lose one: every candidate is re-checked
against the query (:meth:`~translog.formats.event_schema.Query.matches`) before it is returned.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from translog.core.leaf import KIND_COMMITTED
from translog.errors import MalformedError
from translog.formats.event_schema import SCHEMA, Query, index_terms, try_parse_event
from translog.storage.base import IndexReader, NewEntry, Storage, StoredEntry

BLOCK_BITS = 14
"""Entries per index block: 2^14. Inserts touch only the newest block's postings."""
POSTING = b"p"
ERASED = b"e"
HOLD = b"h"
STATE = b"s"
TENANT = b"t"
_INDEXED = STATE + b"indexed"
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TERM_END = 1 + 4 + 8
"""Length of ``p || block || term``: the prefix shared by one term's postings in one block."""
REINDEX_CHUNK = 8192
"""Entries read and indexed per write transaction by :func:`reindex`."""
MAX_LIMIT = 500
"""Most results in one page."""


_TERMS: dict[str, bytes] = {}
_TERMS_MAX = 1 << 17
"""Recently hashed terms (tenants, actions, outcomes and busy actors repeat endlessly)."""
_sha256 = hashlib.sha256


def term_hash(name: str, tenant: str, value: str) -> bytes:
    """The 8-byte index term of ``(field, tenant, value)``: SHA-256 of the three, 0-joined."""
    text = f"{name}\0{tenant}\0{value}"
    term = _TERMS.get(text)
    if term is None:
        if len(_TERMS) >= _TERMS_MAX:
            _TERMS.clear()
        term = _TERMS[text] = _sha256(text.encode()).digest()[:8]
    return term


def fast_terms(payload: bytes) -> tuple[str, list[bytes]] | None:
    """The tenant and term hashes of an event payload, without full validation.

    The sequencer's hot path: payloads were validated when submitted (``[events] enabled``),
    so this only extracts the indexed fields; anything that is not an object with them is
    skipped (returns None), like an invalid event. Same terms as :func:`index_terms`.
    """
    try:
        event = json.loads(payload)
        tenant = event["tenant"]
        actor = event["actor"]["id"]
        values = (
            ("id", event["id"]),
            ("actor", actor),
            ("action", event["action"]),
            ("category", event["category"]),
            ("outcome", event["outcome"]["result"]),
        )
        targets = [t["id"] for t in event.get("targets", ())]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    if not isinstance(tenant, str) or event.get("schema") != SCHEMA:
        return None
    terms = [term_hash("tenant", tenant, "")]
    for name, value in values:
        if not isinstance(value, str):
            return None
        terms.append(term_hash(name, tenant, value))
    seen: set[str] = set()
    for tid in targets:
        if not isinstance(tid, str):
            return None
        if tid not in seen:
            seen.add(tid)
            terms.append(term_hash("target", tenant, tid))
    return tenant, terms


def posting_key(term: bytes, index: int) -> bytes:
    """The posting record of ``index`` under ``term``."""
    return POSTING + _U32.pack(index >> BLOCK_BITS) + term + _U64.pack(index)


def entry_payload(leaf: bytes, payload: bytes | None) -> bytes | None:
    """The payload an entry carries: inline in the leaf, or the stored committed payload."""
    if len(leaf) > 9 and leaf[9] == KIND_COMMITTED:
        return payload
    return leaf[10:]


def event_postings(index: int, event: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """Every posting record of a valid event stored at ``index``."""
    return [(posting_key(term_hash(*t), index), b"") for t in index_terms(event)]


def _postings_of(
    start: int, entries: Sequence[NewEntry | StoredEntry]
) -> list[tuple[bytes, bytes]]:
    puts: list[tuple[bytes, bytes]] = []
    tenants: set[str] = set()
    pack, u32, block_of = _U64.pack, _U32.pack, BLOCK_BITS
    for i, e in enumerate(entries):
        payload = entry_payload(e.leaf, e.payload)
        if payload is None:
            continue
        found = fast_terms(payload)
        if found is not None:
            tenant, terms = found
            index = start + i
            head, tail = POSTING + u32(index >> block_of), pack(index)
            puts += [(head + term + tail, b"") for term in terms]
            tenants.add(tenant)
    puts += [(TENANT + t.encode(), b"") for t in sorted(tenants)]
    return puts


def tenants(storage: Storage) -> list[str]:
    """Every tenant that has events in the log."""
    out: list[str] = []
    with storage.index_reader() as r:
        key = TENANT
        while True:
            item = r.seek(key)
            if item is None or not item[0].startswith(TENANT):
                return out
            out.append(item[0][1:].decode())
            key = item[0] + b"\x00"


class EventIndexer:
    """The sequencer's indexer: postings of each batch, plus the ``indexed`` high-water mark."""

    def __call__(self, start: int, entries: Sequence[NewEntry]) -> list[tuple[bytes, bytes]]:
        puts = _postings_of(start, entries)
        puts.append((_INDEXED, _U64.pack(start + len(entries))))
        return puts


def indexed_size(storage: Storage) -> int:
    """How many entries, from 0, the stored indexes cover."""
    with storage.index_reader() as r:
        raw = r.get(_INDEXED)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


Progress = Callable[[int, int], None]


def reindex(storage: Storage, *, start: int | None = None, progress: Progress | None = None) -> int:
    """Rebuild the postings of entries ``[start, size)`` from the log; return how many.

    With ``start`` None, every posting is dropped and rebuilt from 0. Erased entries keep their
    ``tenant`` and ``id`` postings from their erasure records. Each chunk of
    :data:`REINDEX_CHUNK` entries is one transaction; the ``indexed`` mark moves with it, so an
    interrupted rebuild resumes where it stopped (:func:`catch_up`).
    """
    size = storage.size()
    first = 0 if start is None else start
    if start is None:
        storage.index_write([(_INDEXED, _U64.pack(0))], clear_prefix=POSTING)
    erased = erasure_records(storage, first, size)
    for lo in range(first, size, REINDEX_CHUNK):
        hi = min(lo + REINDEX_CHUNK, size)
        puts = _postings_of(lo, storage.get_entries(lo, hi))
        for index in range(lo, hi):
            record = erased.get(index)
            if record is not None:
                puts += erased_postings(index, record)
        puts.append((_INDEXED, _U64.pack(hi)))
        storage.index_write(puts)
        if progress is not None:
            progress(hi - first, size - first)
    return size - first


def catch_up(storage: Storage, progress: Progress | None = None) -> int:
    """Index entries sequenced while indexing was off (or after an interrupted reindex)."""
    done = indexed_size(storage)
    if done >= storage.size():
        return 0
    return reindex(storage, start=done, progress=progress)


# -- erasure records ---------------------------------------------------------------------


def erased_key(index: int) -> bytes:
    """The erasure record key of entry ``index``."""
    return ERASED + _U64.pack(index)


def erased_postings(index: int, record: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """The postings an erased entry keeps: its tenant and its event id (neither is personal)."""
    tenant, event_id = record.get("tenant"), record.get("event_id")
    if not isinstance(tenant, str):
        return []
    out = [(posting_key(term_hash("tenant", tenant, ""), index), b"")]
    if isinstance(event_id, str):
        out.append((posting_key(term_hash("id", tenant, event_id), index), b""))
    return out


def erasure_records(storage: Storage, start: int = 0, end: int | None = None) -> dict[int, Any]:
    """Erasure records of entries ``[start, end)``."""
    out: dict[int, Any] = {}
    with storage.index_reader() as r:
        key = erased_key(start)
        while True:
            item = r.seek(key)
            if item is None or not item[0].startswith(ERASED):
                break
            index = int(_U64.unpack(item[0][1:9])[0])
            if end is not None and index >= end:
                break
            out[index] = json.loads(item[1])
            key = erased_key(index + 1)
    return out


def erasure_record(storage: Storage, index: int) -> Any | None:
    """The erasure record of one entry, or None."""
    with storage.index_reader() as r:
        raw = r.get(erased_key(index))
    return None if raw is None else json.loads(raw)


# -- search ------------------------------------------------------------------------------


def timestamp_of(leaf: bytes) -> int:
    """The leaf's timestamp (ms)."""
    return int.from_bytes(leaf[1:9], "big")


def first_at_or_after(storage: Storage, size: int, ts: int) -> int:
    """The smallest index in ``[0, size]`` whose leaf timestamp is ``>= ts`` (binary search;
    leaf timestamps never decrease along the log)."""
    lo, hi = 0, size
    while lo < hi:
        mid = (lo + hi) // 2
        if timestamp_of(storage.get_entries(mid, mid + 1)[0].leaf) < ts:
            lo = mid + 1
        else:
            hi = mid
    return lo


def index_range(storage: Storage, size: int, query: Query) -> tuple[int, int]:
    """The index range ``[lo, hi)`` that holds every entry of the query's time range."""
    lo = 0 if query.from_ms is None else first_at_or_after(storage, size, query.from_ms)
    hi = size if query.to_ms is None else first_at_or_after(storage, size, query.to_ms + 1)
    return lo, max(lo, hi)


def _candidates_asc(r: IndexReader, terms: list[bytes], lo: int, hi: int) -> Iterator[int]:
    """Indexes in ``[lo, hi)`` holding every term, ascending (leapfrog within each block)."""
    if lo >= hi:
        return
    for block in range(lo >> BLOCK_BITS, ((hi - 1) >> BLOCK_BITS) + 1):
        bkey = POSTING + _U32.pack(block)
        candidate = max(lo, block << BLOCK_BITS)
        agreed = 0
        i = 0
        while True:
            prefix = bkey + terms[i]
            item = r.seek(prefix + _U64.pack(candidate))
            if item is None or item[0][:_TERM_END] != prefix:
                break  # this term has nothing more in the block
            found = int(_U64.unpack_from(item[0], _TERM_END)[0])
            if found >= hi:
                return
            if found != candidate:
                candidate, agreed = found, 1
            else:
                agreed += 1
            if agreed == len(terms):
                yield candidate
                candidate += 1
                agreed = 0
            i = (i + 1) % len(terms)


def candidates(r: IndexReader, terms: list[bytes], lo: int, hi: int) -> list[int]:
    """Every index in ``[lo, hi)`` holding all ``terms``, ascending (unconfirmed)."""
    return list(_candidates_asc(r, terms, lo, hi))


def _candidates_desc(r: IndexReader, terms: list[bytes], lo: int, hi: int) -> Iterator[int]:
    """Indexes in ``[lo, hi)`` holding every term, descending."""
    if lo >= hi:
        return
    for block in range((hi - 1) >> BLOCK_BITS, (lo >> BLOCK_BITS) - 1, -1):
        bkey = POSTING + _U32.pack(block)
        candidate = min(hi - 1, ((block + 1) << BLOCK_BITS) - 1)
        agreed = 0
        i = 0
        while True:
            prefix = bkey + terms[i]
            item = r.seek_before(prefix + _U64.pack(candidate + 1))
            if item is None or item[0][:_TERM_END] != prefix:
                break
            found = int(_U64.unpack_from(item[0], _TERM_END)[0])
            if found < lo:
                return
            if found != candidate:
                candidate, agreed = found, 1
            else:
                agreed += 1
            if agreed == len(terms):
                yield candidate
                if candidate == 0:
                    return
                candidate -= 1
                agreed = 0
            i = (i + 1) % len(terms)


@dataclass(frozen=True)
class Hit:
    """One search result: the stored entry, its event, or its erasure record."""

    entry: StoredEntry
    event: Mapping[str, Any] | None
    erasure: Mapping[str, Any] | None = None

    @property
    def index(self) -> int:
        """The entry's index."""
        return self.entry.index


@dataclass(frozen=True)
class Page:
    """One page of results and the cursor of the next page (None: no more)."""

    hits: list[Hit]
    next_cursor: int | None
    examined: int
    """Candidates read from the index (for metrics)."""


def _confirm(storage: Storage, query: Query, index: int) -> Hit | None:
    entry = storage.get_entries(index, index + 1)[0]
    payload = entry_payload(entry.leaf, entry.payload)
    if payload is None:
        record = erasure_record(storage, index)
        if record is None or record.get("tenant") != query.tenant:
            return None
        if set(query.filters) - {"id"} or query.filters.get("id", record.get("event_id")) != (
            record.get("event_id")
        ):
            return None
        return Hit(entry, None, record)
    event = try_parse_event(payload)
    if event is None or not query.matches(event):
        return None
    return Hit(entry, event)


def search(
    storage: Storage,
    query: Query,
    *,
    size: int,
    limit: int = 50,
    cursor: int | None = None,
    order: str = "desc",
) -> Page:
    """One page of entries among the first ``size`` that match ``query``.

    ``order`` is ``desc`` (newest first, the default) or ``asc``; ``cursor`` is the previous
    page's ``next_cursor``.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise MalformedError(f"limit: expected 1-{MAX_LIMIT}, got {limit}")
    if order not in ("asc", "desc"):
        raise MalformedError(f"order: expected asc or desc, got {order[:16]!r}")
    lo, hi = index_range(storage, size, query)
    if cursor is not None:
        if order == "desc":
            hi = min(hi, cursor)
        else:
            lo = max(lo, cursor)
    terms = [term_hash(*t) for t in query.terms()]
    hits: list[Hit] = []
    examined = 0
    last: int | None = None
    with storage.index_reader() as r:
        gen = (_candidates_desc if order == "desc" else _candidates_asc)(r, terms, lo, hi)
        candidates = []
        for index in gen:
            candidates.append(index)
            if len(candidates) > limit:
                break
    more = len(candidates) > limit
    for index in candidates[:limit]:
        examined += 1
        last = index
        hit = _confirm(storage, query, index)
        if hit is not None:
            hits.append(hit)
    next_cursor = None
    if more and last is not None:
        next_cursor = last if order == "desc" else last + 1
    return Page(hits, next_cursor, examined)


def scan(storage: Storage, query: Query, *, size: int, chunk: int = 4096) -> list[int]:
    """Every matching index by reading and parsing every entry: the no-index baseline."""
    lo, hi = index_range(storage, size, query)
    out: list[int] = []
    for start in range(lo, hi, chunk):
        for entry in storage.get_entries(start, min(start + chunk, hi)):
            payload = entry_payload(entry.leaf, entry.payload)
            if payload is None:
                continue
            event = try_parse_event(payload)
            if event is not None and query.matches(event):
                out.append(entry.index)
    return out
