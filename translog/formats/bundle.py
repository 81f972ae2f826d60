"""Evidence bundles (``translog-bundle/v1``): one file that proves an audit period, offline.

A bundle holds every entry the log sequenced in a period ``[from, to]`` (ms since the epoch,
both ends inclusive), the checkpoints the exporter observed with consistency proofs chaining
them, and one range proof. It verifies with the log's verifier key alone, and it proves the
period is **complete**: leaf timestamps never decrease along the log (FORMATS.md §2), so the
period is one run of indexes ``[start, end)``. The bundle carries that run, the *boundary*
leaves ``start - 1`` (timestamp before ``from``) and ``end`` (timestamp after ``to``) where
they exist, and a range proof (:func:`translog.core.merkle.prove_range`) for
``[max(start - 1, 0), min(end + 1, size))`` against the final checkpoint. The proof fixes
every leaf at its index, so no entry in the run can be left out, and the boundaries show the
run is exactly the period, as of the final checkpoint. JSON layout (binary values standard
padded base64, integers JSON numbers)::

    {"format": "translog-bundle/v1",
     "origin": "<the log's origin>",
     "claims": {"authenticated": false, "from": <ms>, "to": <ms>,
                "generated_at": <ms>, "generator": "<software>"},
     "index_range": {"start": <first index in the period>, "end": <one past the last>},
     "checkpoints": ["<signed note>", ...],              # size order; the last is the final one
     "consistency_proofs": [["<hash>", ...], ...],       # [i]: checkpoints[i] -> checkpoints[i+1]
     "before": {"index": start - 1, "leaf": "...", "timestamp": <ms>} | null,
     "after": {"index": end, "leaf": "...", "timestamp": <ms>} | null,
     "range_proof": {"start": <lo>, "end": <hi>, "nodes": ["<hash>", ...]} | null,
     "entries": [{"index": i, "leaf": "...", "timestamp": <ms>,
                  "payload_status": "inline" | "present" | "erased" | "withheld",
                  "payload": "...", "salt": "..."}, ...]}    # payload and salt: "present" only

``claims`` is what the exporter says and nothing signs: ``from`` and ``to`` are *checked*
against the signed leaves, ``generated_at`` and ``generator`` are only informational. An
inline leaf holds its payload; a committed one carries the payload and salt when the exporter
could read them (``present``), or says they were ``erased`` (retention, erasure request) or
``withheld`` (the exporter had no read access). A file whose name ends in ``.gz`` is gzip.

This module is pure (no aiohttp, no lmdb) and holds the bundle's model and
:func:`build_bundle`, which assembles a bundle from data already fetched and verified;
:mod:`~translog.formats.bundle_json` writes and strictly reads the file
(:func:`~translog.formats.bundle_json.encode_bundle`,
:func:`~translog.formats.bundle_json.parse_bundle`), and
:mod:`~translog.formats.bundle_verify` checks all of it
(:func:`~translog.formats.bundle_verify.verify_bundle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from translog.core.checkpoint import parse_checkpoint
from translog.core.leaf import KIND_INLINE, decode_leaf
from translog.core.note import parse_note
from translog.errors import MalformedError
from translog.formats.receipt import RangeProof

FORMAT = "translog-bundle/v1"
INLINE, PRESENT, ERASED, WITHHELD = "inline", "present", "erased", "withheld"
PAYLOAD_STATUSES = (INLINE, PRESENT, ERASED, WITHHELD)


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One entry of the period: its leaf and, for committed leaves, payload and salt if known."""

    index: int
    leaf: bytes
    timestamp_ms: int
    payload_status: str
    payload: bytes | None = None
    salt: bytes | None = None


@dataclass(frozen=True, slots=True)
class Boundary:
    """A leaf just outside the period; it proves where the period starts or ends."""

    index: int
    leaf: bytes
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Claims:
    """The exporter's unsigned claims: the period (checked) and when and how it was made."""

    from_ms: int
    to_ms: int
    generated_at_ms: int
    generator: str


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed evidence bundle (see the module docstring for the meaning of each field)."""

    origin: str
    claims: Claims
    start: int
    end: int
    checkpoints: tuple[bytes, ...]
    consistency_proofs: tuple[tuple[bytes, ...], ...]
    before: Boundary | None
    after: Boundary | None
    range_proof: RangeProof | None
    entries: tuple[BundleEntry, ...]
    selection: Selection | None = None
    """The query the bundle was exported for and the indexes that match it (optional)."""
    summary: Mapping[str, Any] | None = None
    """The one-page summary (optional); verification recomputes it and requires equality."""


@dataclass(frozen=True, slots=True)
class Selection:
    """An export by query: the audit-event query (its JSON form) and the matching indexes."""

    query: Mapping[str, Any]
    indexes: tuple[int, ...]


# -- building ------------------------------------------------------------------------------


def proof_range(start: int, end: int, size: int) -> tuple[int, int]:
    """The leaves ``[lo, hi)`` a bundle's range proof covers: the period plus its boundaries."""
    if not 0 <= start <= end <= size:
        raise MalformedError(f"invalid index range [{start}, {end}) for tree size {size}")
    return max(start - 1, 0), min(end + 1, size)


def build_bundle(
    *,
    origin: str,
    from_ms: int,
    to_ms: int,
    start: int,
    end: int,
    leaves: Sequence[bytes],
    payloads: Mapping[int, tuple[bytes, bytes] | None],
    checkpoints: Sequence[bytes],
    consistency_proofs: Sequence[Sequence[bytes]],
    range_nodes: Sequence[bytes],
    generated_at_ms: int,
    generator: str,
    selection: Selection | None = None,
) -> Bundle:
    """Assemble a bundle from data the caller already fetched and verified.

    ``leaves`` are the leaves ``proof_range(start, end, size)`` of the final (last)
    checkpoint's tree, ``range_nodes`` their range proof. ``payloads`` maps the index of a
    committed entry to ``(payload, salt)``, or to None when they were erased; a committed
    entry missing from it is ``withheld``. ``consistency_proofs[i]`` joins ``checkpoints[i]``
    to ``checkpoints[i + 1]``. Nothing is verified here: run :func:`verify_bundle`.
    """
    if not checkpoints:
        raise MalformedError("a bundle needs at least one checkpoint")
    size = parse_checkpoint(parse_note(checkpoints[-1]).text).size
    lo, hi = proof_range(start, end, size)
    if len(leaves) != hi - lo:
        raise MalformedError(f"expected {hi - lo} leaves for [{lo}, {hi}), got {len(leaves)}")
    by_index = dict(zip(range(lo, hi), leaves, strict=True))
    entries = tuple(_build_entry(i, by_index[i], payloads) for i in range(start, end))
    return Bundle(
        origin=origin,
        claims=Claims(from_ms, to_ms, generated_at_ms, generator),
        start=start,
        end=end,
        checkpoints=tuple(checkpoints),
        consistency_proofs=tuple(tuple(p) for p in consistency_proofs),
        before=_boundary(start - 1, by_index) if start > 0 else None,
        after=_boundary(end, by_index) if end < size else None,
        range_proof=RangeProof(lo, hi, tuple(range_nodes)) if size else None,
        entries=entries,
        selection=selection,
    )


def _boundary(index: int, leaves: Mapping[int, bytes]) -> Boundary:
    leaf = leaves[index]
    return Boundary(index, leaf, decode_leaf(leaf).timestamp_ms)


def _build_entry(
    index: int, leaf: bytes, payloads: Mapping[int, tuple[bytes, bytes] | None]
) -> BundleEntry:
    decoded = decode_leaf(leaf)
    if decoded.kind == KIND_INLINE:
        return BundleEntry(index, leaf, decoded.timestamp_ms, INLINE)
    if index not in payloads:
        return BundleEntry(index, leaf, decoded.timestamp_ms, WITHHELD)
    known = payloads[index]
    if known is None:
        return BundleEntry(index, leaf, decoded.timestamp_ms, ERASED)
    return BundleEntry(index, leaf, decoded.timestamp_ms, PRESENT, known[0], known[1])
