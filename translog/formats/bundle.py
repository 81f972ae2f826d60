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

This module is pure (no aiohttp, no lmdb): :func:`build_bundle` assembles a bundle from data
already fetched and verified, :func:`parse_bundle` reads one strictly, and
:func:`verify_bundle` checks all of it.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint
from translog.core.jsonfields import Fields, encode_base64, strict_json
from translog.core.leaf import KIND_INLINE, SALT_SIZE, decode_leaf, verify_payload
from translog.core.merkle import HASH_SIZE, leaf_hash, verify_consistency
from translog.core.note import decode_base64, parse_note
from translog.core.policy import WitnessPolicy
from translog.core.range_proof import verify_range
from translog.core.signing import NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import (
    InconsistencyError,
    InvalidProofError,
    MalformedError,
    TranslogError,
    VerificationError,
)
from translog.formats.event_schema import Query, parse_event
from translog.formats.event_summary import summarize
from translog.formats.receipt import RangeProof

FORMAT = "translog-bundle/v1"
INLINE, PRESENT, ERASED, WITHHELD = "inline", "present", "erased", "withheld"
PAYLOAD_STATUSES = (INLINE, PRESENT, ERASED, WITHHELD)
MAX_BUNDLE_BYTES = 1 << 32
"""Largest (decompressed) bundle :func:`parse_bundle` reads."""
GZIP_MAGIC = b"\x1f\x8b"


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


@dataclass(frozen=True, slots=True)
class BundleReport:
    """What :func:`verify_bundle` proved, for human output."""

    origin: str
    from_ms: int
    to_ms: int
    start: int
    end: int
    size: int
    """Size of the final checkpoint: the period is complete as of this tree."""
    checkpoint_sizes: tuple[int, ...]
    cosigners: frozenset[str]
    """The policy's witnesses that cosigned the final checkpoint (empty without a policy)."""
    closed: bool
    """Whether an entry after the period is proven, so no later entry can fall in it."""
    entries: int
    payloads: int
    """Entries whose payload is in the bundle and verified (inline or committed)."""
    inline: int
    erased: int
    withheld: int
    selected: int | None = None
    """Entries matching the bundle's query (None without a selection)."""
    summary_checked: bool = False
    """Whether the bundle's summary was recomputed and found equal."""


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


# -- JSON ----------------------------------------------------------------------------------


def format_bundle(bundle: Bundle) -> dict[str, Any]:
    """The bundle as a JSON-ready dict, in the documented key order (entries last)."""
    c = bundle.claims
    rp = bundle.range_proof
    return {
        "format": FORMAT,
        "origin": bundle.origin,
        "claims": {
            "authenticated": False,
            "from": c.from_ms,
            "to": c.to_ms,
            "generated_at": c.generated_at_ms,
            "generator": c.generator,
        },
        "index_range": {"start": bundle.start, "end": bundle.end},
        "checkpoints": [note.decode("utf-8") for note in bundle.checkpoints],
        "consistency_proofs": [[encode_base64(h) for h in p] for p in bundle.consistency_proofs],
        "before": _boundary_json(bundle.before),
        "after": _boundary_json(bundle.after),
        "range_proof": None
        if rp is None
        else {"start": rp.start, "end": rp.end, "nodes": [encode_base64(h) for h in rp.nodes]},
        **(
            {}
            if bundle.selection is None
            else {
                "selection": {
                    "query": dict(bundle.selection.query),
                    "indexes": list(bundle.selection.indexes),
                }
            }
        ),
        **({} if bundle.summary is None else {"summary": dict(bundle.summary)}),
        "entries": [_entry_json(e) for e in bundle.entries],
    }


def _boundary_json(b: Boundary | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"index": b.index, "leaf": encode_base64(b.leaf), "timestamp": b.timestamp_ms}


def _entry_json(e: BundleEntry) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "index": e.index,
        "leaf": encode_base64(e.leaf),
        "timestamp": e.timestamp_ms,
        "payload_status": e.payload_status,
    }
    if e.payload is not None:
        obj["payload"] = encode_base64(e.payload)
    if e.salt is not None:
        obj["salt"] = encode_base64(e.salt)
    return obj


def encode_bundle(bundle: Bundle, *, compress: bool = False) -> bytes:
    """The bundle file: JSON with one top-level field, and one entry, per line; gzip if asked."""
    obj = format_bundle(bundle)
    entries = obj.pop("entries")
    fields = [f" {json.dumps(k)}: {_dumps(v, ', ', ': ')}" for k, v in obj.items()]
    rows = ",\n".join("  " + _dumps(e, ",", ":") for e in entries)
    fields.append(' "entries": [' + (f"\n{rows}\n ]" if rows else "]"))
    data = ("{\n" + ",\n".join(fields) + "\n}\n").encode("utf-8")
    return gzip.compress(data, mtime=0) if compress else data


def _dumps(value: object, item: str, key: str) -> str:
    return json.dumps(value, separators=(item, key), ensure_ascii=False)


def parse_bundle(data: bytes) -> Bundle:
    """Parse a bundle file (JSON, or gzip when it starts with the gzip magic) strictly.

    Unknown fields, duplicate keys, wrong types and non-canonical base64 are rejected with a
    ``MalformedError`` naming the field's path (``bundle.entries[3].salt``).
    """
    if data[:2] == GZIP_MAGIC:
        data = _gunzip(data)
    try:
        obj = strict_json(data)
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"bundle: not valid JSON: {e}") from e
    return _parse(obj)


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, MAX_BUNDLE_BYTES)
    except zlib.error as e:
        raise MalformedError(f"bundle: gzip data is corrupt: {e}") from e
    if inflater.unconsumed_tail:
        raise MalformedError(f"bundle: more than {MAX_BUNDLE_BYTES} bytes once decompressed")
    if not inflater.eof:
        raise MalformedError("bundle: gzip data is truncated")
    if inflater.unused_data:
        raise MalformedError("bundle: trailing data after the gzip stream")
    return out


def _parse(obj: object) -> Bundle:
    f = Fields(obj, "bundle")
    fmt = f.get_str("format")
    if fmt != FORMAT:
        raise MalformedError(f"bundle.format: expected {FORMAT!r}, got {fmt[:40]!r}")
    origin = f.get_str("origin")
    claims = _parse_claims(f.value("claims"))
    start, end = _parse_range(f.value("index_range"))
    bundle = Bundle(
        origin=origin,
        claims=claims,
        start=start,
        end=end,
        checkpoints=_parse_checkpoints(f.value("checkpoints")),
        consistency_proofs=_parse_proofs(f.value("consistency_proofs")),
        before=_parse_boundary(f.value("before"), "bundle.before"),
        after=_parse_boundary(f.value("after"), "bundle.after"),
        range_proof=_parse_range_proof(f.value("range_proof")),
        entries=_parse_entries(f.value("entries")),
        selection=_parse_selection(f.value("selection")) if f.has("selection") else None,
        summary=_parse_summary(f.value("summary")) if f.has("summary") else None,
    )
    f.done()
    if len(bundle.consistency_proofs) != len(bundle.checkpoints) - 1:
        raise MalformedError(
            f"bundle.consistency_proofs: expected {len(bundle.checkpoints) - 1} proofs for "
            f"{len(bundle.checkpoints)} checkpoints, got {len(bundle.consistency_proofs)}"
        )
    return bundle


def _parse_selection(raw: object) -> Selection:
    f = Fields(raw, "bundle.selection")
    query = f.value("query")
    try:
        Query.from_json(query, "bundle.selection.query")
    except MalformedError as e:
        raise MalformedError(str(e)) from e
    assert isinstance(query, dict)
    raw_indexes = _list(f.value("indexes"), "bundle.selection.indexes")
    indexes = []
    for i, value in enumerate(raw_indexes):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MalformedError(f"bundle.selection.indexes[{i}]: expected an index")
        indexes.append(value)
    f.done()
    return Selection(query, tuple(indexes))


def _parse_summary(raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise MalformedError("bundle.summary: expected a JSON object")
    return raw


def _parse_claims(raw: object) -> Claims:
    f = Fields(raw, "bundle.claims")
    if f.value("authenticated") is not False:
        raise MalformedError("bundle.claims.authenticated: must be false (nothing signs claims)")
    claims = Claims(
        from_ms=f.get_int("from"),
        to_ms=f.get_int("to"),
        generated_at_ms=f.get_int("generated_at"),
        generator=f.get_str("generator"),
    )
    f.done()
    if claims.from_ms > claims.to_ms:
        raise MalformedError(f"bundle.claims: from {claims.from_ms} is after to {claims.to_ms}")
    return claims


def _parse_range(raw: object) -> tuple[int, int]:
    f = Fields(raw, "bundle.index_range")
    start, end = f.get_int("start"), f.get_int("end")
    f.done()
    if start > end:
        raise MalformedError(f"bundle.index_range: start {start} is after end {end}")
    return start, end


def _list(raw: object, path: str) -> list[object]:
    if not isinstance(raw, list):
        raise MalformedError(f"{path}: expected a list")
    return raw


def _parse_checkpoints(raw: object) -> tuple[bytes, ...]:
    notes = _list(raw, "bundle.checkpoints")
    if not notes:
        raise MalformedError("bundle.checkpoints: expected at least one checkpoint")
    out = []
    for i, note in enumerate(notes):
        if not isinstance(note, str):
            raise MalformedError(f"bundle.checkpoints[{i}]: expected a string")
        out.append(note.encode("utf-8", "surrogatepass"))
    return tuple(out)


def _parse_proofs(raw: object) -> tuple[tuple[bytes, ...], ...]:
    path = "bundle.consistency_proofs"
    proofs = _list(raw, path)
    return tuple(
        tuple(_hash(h, f"{path}[{i}][{j}]") for j, h in enumerate(_list(p, f"{path}[{i}]")))
        for i, p in enumerate(proofs)
    )


def _hash(value: object, path: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(f"{path}: expected a base64 string")
    try:
        raw = decode_base64(value)
    except MalformedError as e:
        raise MalformedError(f"{path}: {e}") from e
    if len(raw) != HASH_SIZE:
        raise MalformedError(f"{path}: expected {HASH_SIZE} bytes, got {len(raw)}")
    return raw


def _parse_boundary(raw: object, path: str) -> Boundary | None:
    if raw is None:
        return None
    f = Fields(raw, path)
    boundary = Boundary(f.get_int("index"), f.get_bytes("leaf"), f.get_int("timestamp"))
    f.done()
    return boundary


def _parse_range_proof(raw: object) -> RangeProof | None:
    if raw is None:
        return None
    f = Fields(raw, "bundle.range_proof")
    rp = RangeProof(f.get_int("start"), f.get_int("end"), f.get_hashes("nodes"))
    f.done()
    return rp


def _parse_entries(raw: object) -> tuple[BundleEntry, ...]:
    return tuple(_parse_entry(e, i) for i, e in enumerate(_list(raw, "bundle.entries")))


def _parse_entry(raw: object, i: int) -> BundleEntry:
    f = Fields(raw, f"bundle.entries[{i}]")
    index, leaf, ts = f.get_int("index"), f.get_bytes("leaf"), f.get_int("timestamp")
    status = f.get_str("payload_status")
    if status not in PAYLOAD_STATUSES:
        raise MalformedError(
            f"{f.path}.payload_status: expected one of {', '.join(PAYLOAD_STATUSES)}, "
            f"got {status[:20]!r}"
        )
    payload = salt = None
    if status == PRESENT:
        payload, salt = f.get_bytes("payload"), f.get_bytes("salt", SALT_SIZE)
    f.done()
    return BundleEntry(index, leaf, ts, status, payload, salt)


# -- verification --------------------------------------------------------------------------


def _fail(where: str, err: TranslogError) -> VerificationError:
    """``err`` with ``where`` in front, as a VerificationError (keeping its class if it is one)."""
    cls = type(err) if isinstance(err, VerificationError) else VerificationError
    return cls(f"{where}: {err}")


@dataclass(frozen=True, slots=True)
class _Opened:
    checkpoint: Checkpoint
    cosigners: frozenset[str]


def verify_bundle(
    bundle: Bundle | bytes, vkey: str, *, policy: WitnessPolicy | None = None
) -> BundleReport:
    """Verify a bundle offline against the log's verifier key; return what it proves.

    Checks every checkpoint's log signature and origin (and known witness cosignatures), the
    witness ``policy`` on the final checkpoint, the consistency chain, then every entry (leaf
    decodes, index contiguous, timestamp matches the leaf, is within the period and never
    decreases, payload and salt match the leaf), the boundary leaves outside the period, and
    the range proof of all those leaves to the final checkpoint's root. Raises a
    ``VerificationError`` subclass whose message names the field (``InconsistencyError`` if
    two checkpoints sign different roots for one size).
    """
    if not isinstance(bundle, Bundle):
        bundle = parse_bundle(bundle)
    verifier = parse_vkey(vkey)
    if bundle.origin != verifier.name:
        raise VerificationError(
            f"bundle.origin is {bundle.origin[:80]!r}, but the vkey is for {verifier.name!r}"
        )
    opened = _verify_checkpoints(bundle, verifier, policy)
    final = opened[-1].checkpoint
    _verify_chain(bundle, [o.checkpoint for o in opened])
    if not bundle.end <= final.size:
        raise VerificationError(
            f"bundle.index_range [{bundle.start}, {bundle.end}) goes beyond the final "
            f"checkpoint's size {final.size}"
        )
    _verify_entries(bundle)
    _verify_boundaries(bundle, final.size)
    _verify_range_proof(bundle, final)
    report = _report(bundle, [o.checkpoint.size for o in opened], opened[-1].cosigners)
    selected = _verify_selection(bundle)
    if selected is not None:
        report = replace(report, selected=len(selected))
    if bundle.summary is not None:
        expected = bundle_summary(bundle, report, [o.checkpoint for o in opened], opened)
        _compare_summary(dict(bundle.summary), expected, "bundle.summary")
        report = replace(report, summary_checked=True)
    return report


def with_summary(bundle: Bundle, vkey: str, *, policy: WitnessPolicy | None = None) -> Bundle:
    """Verify ``bundle`` and return it with its one-page summary attached."""
    bare = replace(bundle, summary=None)
    report = verify_bundle(bare, vkey, policy=policy)
    opened = _verify_checkpoints(bare, parse_vkey(vkey), policy)
    summary = bundle_summary(bare, report, [o.checkpoint for o in opened], opened)
    return replace(bundle, summary=summary)


def _entry_event(e: BundleEntry, where: str) -> Mapping[str, Any] | None:
    """The event an entry reveals (inline, or a present committed payload), or None."""
    if e.payload_status == INLINE:
        payload = decode_leaf(e.leaf).payload or b""
    elif e.payload_status == PRESENT and e.payload is not None:
        payload = e.payload
    else:
        return None
    try:
        return parse_event(payload, f"{where}.event")
    except MalformedError as err:
        raise VerificationError(str(err)) from err


def _verify_selection(bundle: Bundle) -> list[Mapping[str, Any] | None] | None:
    """Check the selection: each selected entry is revealed (or erased) and matches the
    query, and no other revealed entry matches it. Returns the selected events."""
    sel = bundle.selection
    if sel is None:
        return None
    query = Query.from_json(sel.query, "bundle.selection.query")
    wanted = set(sel.indexes)
    if list(sel.indexes) != sorted(wanted):
        raise VerificationError("bundle.selection.indexes: must be increasing, without repeats")
    out: list[Mapping[str, Any] | None] = []
    for k, e in enumerate(bundle.entries):
        where = f"bundle.entries[{k}] (index {e.index})"
        if e.index in wanted:
            if e.payload_status == WITHHELD:
                raise VerificationError(f"{where}: selected, but its payload is withheld")
            if e.payload_status == ERASED:
                out.append(None)
                continue
            event = _entry_event(e, where)
            if event is None or not query.matches(event):
                raise VerificationError(f"{where}: selected, but its event does not match")
            out.append(event)
        elif e.payload_status in (INLINE, PRESENT):
            try:
                event = _entry_event(e, where)
            except VerificationError:
                continue  # not an audit event: cannot match a query
            if event is not None and query.matches(event):
                raise VerificationError(f"{where}: matches the query but is not selected")
    missing = wanted - {e.index for e in bundle.entries}
    if missing:
        raise VerificationError(
            f"bundle.selection.indexes: {min(missing)} is outside the bundle's entries"
        )
    return out


def bundle_summary(
    bundle: Bundle,
    report: BundleReport,
    cps: Sequence[Checkpoint],
    opened: Sequence[Any] = (),
) -> dict[str, Any]:
    """The summary of a verified bundle (what the exporter writes and the verifier checks)."""
    if bundle.selection is not None:
        wanted = set(bundle.selection.indexes)
        selected = [
            _entry_event(e, f"bundle.entries[{e.index - bundle.start}]")
            for e in bundle.entries
            if e.index in wanted
        ]
        query: Mapping[str, Any] | None = bundle.selection.query
    else:
        selected = []
        for e in bundle.entries:
            try:
                selected.append(_entry_event(e, "entry"))
            except VerificationError:
                continue
        selected = [s for s in selected if s is not None]
        query = None
    cosigners = [sorted(getattr(o, "cosigners", ())) for o in opened] or [[] for _ in cps]
    counts = {s: 0 for s in PAYLOAD_STATUSES}
    for e in bundle.entries:
        counts[e.payload_status] += 1
    return summarize(
        origin=bundle.origin,
        from_ms=bundle.claims.from_ms,
        to_ms=bundle.claims.to_ms,
        start=bundle.start,
        end=bundle.end,
        closed=report.closed,
        checkpoints=[
            {"size": cp.size, "root": encode_base64(cp.root_hash), "cosigners": names}
            for cp, names in zip(cps, cosigners, strict=True)
        ],
        payloads=counts,
        query=query,
        selected=selected,
    )


def _compare_summary(found: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(found) | set(expected)):
            if key not in expected:
                raise VerificationError(f"{where}.{key}: not part of the summary")
            if key not in found:
                raise VerificationError(f"{where}.{key}: missing")
            _compare_summary(found[key], expected[key], f"{where}.{key}")
    elif found != expected:
        raise VerificationError(
            f"{where} says {json.dumps(found)[:80]}, "
            f"but the bundle shows {json.dumps(expected)[:80]}"
        )


def _verify_checkpoints(
    bundle: Bundle, verifier: NoteVerifier, policy: WitnessPolicy | None
) -> list[_Opened]:
    others = tuple(policy.witnesses.values()) if policy is not None else ()
    last = len(bundle.checkpoints) - 1
    opened: list[_Opened] = []
    for i, note in enumerate(bundle.checkpoints):
        where = f"bundle.checkpoints[{i}]"
        try:
            cp, parsed, _ = open_checkpoint(note, verifier, others=others)
            cosigners: set[str] = set()
            if policy is not None and i == last:
                cosigners = policy.verify(parsed.text, parsed.signatures)
        except TranslogError as e:
            raise _fail(f"{where} (final)" if i == last else where, e) from e
        if opened and cp.size < opened[-1].checkpoint.size:
            raise VerificationError(
                f"{where}: size {cp.size} is smaller than the size "
                f"{opened[-1].checkpoint.size} of checkpoints[{i - 1}]; they must be in size order"
            )
        opened.append(_Opened(cp, frozenset(cosigners)))
    return opened


def _verify_chain(bundle: Bundle, cps: Sequence[Checkpoint]) -> None:
    """Each checkpoint must be a prefix of the next: so every one is a prefix of the final."""
    for i, proof in enumerate(bundle.consistency_proofs):
        old, new = cps[i], cps[i + 1]
        where = (
            f"bundle.consistency_proofs[{i}] (checkpoints[{i}] size {old.size} to "
            f"checkpoints[{i + 1}] size {new.size})"
        )
        if old.size == new.size and old.root_hash != new.root_hash:
            raise InconsistencyError(
                f"{where}: the log signed two different roots for tree size {old.size}",
                older=bundle.checkpoints[i],
                newer=bundle.checkpoints[i + 1],
                proof=list(proof),
            )
        if old.size == 0:
            if proof:
                raise InvalidProofError(f"{where}: a proof from size 0 must be empty")
            continue
        try:
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except InvalidProofError as e:
            raise InvalidProofError(f"{where}: {e}") from e


def _leaf_timestamp(where: str, leaf: bytes, claimed: int) -> int:
    """Decode a leaf and check the timestamp field copied from it; return the leaf's kind."""
    try:
        decoded = decode_leaf(leaf)
    except MalformedError as e:
        raise VerificationError(f"{where}.leaf does not decode: {e}") from e
    if decoded.timestamp_ms != claimed:
        raise VerificationError(
            f"{where}.timestamp {claimed} differs from the leaf's {decoded.timestamp_ms}"
        )
    return decoded.kind


def _verify_entries(bundle: Bundle) -> None:
    c = bundle.claims
    expected = bundle.end - bundle.start
    if len(bundle.entries) != expected:
        raise VerificationError(
            f"bundle.entries: index_range [{bundle.start}, {bundle.end}) needs {expected} "
            f"entries, got {len(bundle.entries)}"
        )
    previous = None
    for k, e in enumerate(bundle.entries):
        where = f"bundle.entries[{k}]"
        if e.index != bundle.start + k:
            raise VerificationError(
                f"{where}.index is {e.index}, expected {bundle.start + k}: entries must be "
                f"contiguous from index_range.start"
            )
        where = f"{where} (index {e.index})"
        kind = _leaf_timestamp(where, e.leaf, e.timestamp_ms)
        if not c.from_ms <= e.timestamp_ms <= c.to_ms:
            raise VerificationError(
                f"{where}.timestamp {e.timestamp_ms} is outside the period [{c.from_ms}, {c.to_ms}]"
            )
        if previous is not None and e.timestamp_ms < previous:
            raise VerificationError(
                f"{where}.timestamp {e.timestamp_ms} is before the previous entry's {previous}"
            )
        previous = e.timestamp_ms
        _verify_payload(where, e, kind)


def _verify_payload(where: str, e: BundleEntry, kind: int) -> None:
    if kind == KIND_INLINE:
        if e.payload_status != INLINE:
            raise VerificationError(
                f"{where}.payload_status is {e.payload_status!r}, but the leaf is inline"
            )
        return
    if e.payload_status == INLINE:
        raise VerificationError(f"{where}.payload_status is 'inline', but the leaf is committed")
    if e.payload_status != PRESENT:
        return
    assert e.payload is not None and e.salt is not None  # parse_bundle guarantees them
    try:
        verify_payload(e.leaf, e.payload, e.salt)
    except VerificationError as err:
        raise VerificationError(f"{where}.payload/.salt: {err}") from err


def _verify_boundaries(bundle: Bundle, size: int) -> None:
    c = bundle.claims
    needs_before, needs_after = bundle.start > 0, bundle.end < size
    if needs_before != (bundle.before is not None):
        raise VerificationError(
            "bundle.before: "
            + ("missing" if needs_before else "must be null")
            + f": index_range.start is {bundle.start}"
        )
    if needs_after != (bundle.after is not None):
        raise VerificationError(
            "bundle.after: "
            + ("missing" if needs_after else "must be null")
            + f": index_range.end is {bundle.end} and the final checkpoint's size is {size}"
        )
    if bundle.before is not None:
        b = _check_boundary("bundle.before", bundle.before, bundle.start - 1)
        if b.timestamp_ms >= c.from_ms:
            raise VerificationError(
                f"bundle.before (index {b.index}).timestamp {b.timestamp_ms} is not before the "
                f"period start {c.from_ms}: the period would start earlier"
            )
    if bundle.after is not None:
        a = _check_boundary("bundle.after", bundle.after, bundle.end)
        if a.timestamp_ms <= c.to_ms:
            raise VerificationError(
                f"bundle.after (index {a.index}).timestamp {a.timestamp_ms} is not after the "
                f"period end {c.to_ms}: the period would end later"
            )


def _check_boundary(where: str, b: Boundary, expected: int) -> Boundary:
    if b.index != expected:
        raise VerificationError(f"{where}.index is {b.index}, expected {expected}")
    _leaf_timestamp(f"{where} (index {b.index})", b.leaf, b.timestamp_ms)
    return b


def _verify_range_proof(bundle: Bundle, final: Checkpoint) -> None:
    rp = bundle.range_proof
    if final.size == 0:
        if rp is not None:
            raise VerificationError("bundle.range_proof: must be null for an empty log")
        return
    if rp is None:
        raise VerificationError("bundle.range_proof: missing")
    lo, hi = proof_range(bundle.start, bundle.end, final.size)
    if (rp.start, rp.end) != (lo, hi):
        raise VerificationError(
            f"bundle.range_proof covers [{rp.start}, {rp.end}), expected [{lo}, {hi}): the "
            f"period's entries and its boundary leaves"
        )
    leaves = [
        *([bundle.before.leaf] if bundle.before else []),
        *(e.leaf for e in bundle.entries),
        *([bundle.after.leaf] if bundle.after else []),
    ]
    try:
        verify_range(lo, hi, final.size, [leaf_hash(x) for x in leaves], rp.nodes, final.root_hash)
    except InvalidProofError as e:
        raise InvalidProofError(
            f"bundle.range_proof: {e}: a leaf in [{lo}, {hi}) or a proof node was altered"
        ) from e


def _report(bundle: Bundle, sizes: Sequence[int], cosigners: frozenset[str]) -> BundleReport:
    counts = {s: 0 for s in PAYLOAD_STATUSES}
    for e in bundle.entries:
        counts[e.payload_status] += 1
    return BundleReport(
        origin=bundle.origin,
        from_ms=bundle.claims.from_ms,
        to_ms=bundle.claims.to_ms,
        start=bundle.start,
        end=bundle.end,
        size=sizes[-1],
        checkpoint_sizes=tuple(sizes),
        cosigners=cosigners,
        closed=bundle.after is not None,
        entries=len(bundle.entries),
        payloads=counts[PRESENT] + counts[INLINE],
        inline=counts[INLINE],
        erased=counts[ERASED],
        withheld=counts[WITHHELD],
    )
