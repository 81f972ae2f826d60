"""The evidence bundle file (``translog-bundle/v1``): writing it, and reading it strictly.

:func:`encode_bundle` writes a :class:`~translog.formats.bundle.Bundle` in the documented
layout (one top-level field, and one entry, per line; gzip if asked); :func:`parse_bundle`
reads one back, rejecting unknown fields, duplicate keys, wrong types and non-canonical base64
with a ``MalformedError`` naming the field's path. Pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from typing import Any

from translog.core.jsonfields import Fields, encode_base64, strict_json
from translog.core.leaf import SALT_SIZE
from translog.core.merkle import HASH_SIZE
from translog.core.note import decode_base64
from translog.errors import MalformedError
from translog.formats.bundle import (
    FORMAT,
    PAYLOAD_STATUSES,
    PRESENT,
    Boundary,
    Bundle,
    BundleEntry,
    Claims,
    Selection,
)
from translog.formats.event_schema import Query
from translog.formats.receipt import RangeProof

MAX_BUNDLE_BYTES = 1 << 32
"""Largest (decompressed) bundle :func:`parse_bundle` reads."""
GZIP_MAGIC = b"\x1f\x8b"


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
