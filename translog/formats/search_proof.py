"""Verify a ``translog-search/v1`` answer offline: checkpoint, inclusion, commitments, query.

What the explorer page does in the browser, in Python: the checkpoint must carry the log's
signature, each result's leaf must hash into the checkpoint's root through its inclusion
proof, a present payload must open the leaf's commitment with its salt, and its event must
satisfy the query. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields
from translog.core.leaf import KIND_COMMITTED, commitment, decode_leaf
from translog.core.merkle import leaf_hash, verify_inclusion
from translog.core.note import decode_base64
from translog.core.vkey import parse_vkey
from translog.errors import MalformedError, TranslogError, VerificationError
from translog.formats.event_schema import Query, parse_event


@dataclass(frozen=True)
class VerifiedResult:
    """One verified search result."""

    index: int
    leaf: bytes
    status: str
    """``present``, ``inline`` or ``erased``."""
    event: Mapping[str, Any] | None
    payload: bytes | None
    salt: bytes | None
    erasure: Mapping[str, Any] | None


@dataclass(frozen=True)
class VerifiedPage:
    """A verified answer: its checkpoint, results and the next cursor."""

    checkpoint: Checkpoint
    note: bytes
    results: list[VerifiedResult]
    next_cursor: int | None


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedError(f"{where}: expected base64 text")
    return decode_base64(value)


def verify_search_answer(
    answer: Mapping[str, Any], vkey: str, query: Query | None = None
) -> VerifiedPage:
    """Check every result of a search answer; raise ``VerificationError`` naming the result."""
    try:
        note = str(answer["checkpoint"]).encode()
        cp, _, _ = open_checkpoint(note, parse_vkey(vkey))
        raw_results = answer["results"]
        if not isinstance(raw_results, list):
            raise MalformedError("search.results: expected an array")
        cursor = answer.get("next_cursor")
        if cursor is not None and (isinstance(cursor, bool) or not isinstance(cursor, int)):
            raise MalformedError("search.next_cursor: expected an integer or null")
    except KeyError as e:
        raise VerificationError(f"search answer: missing {e}") from None
    except TranslogError as e:
        raise VerificationError(f"search answer: {e}") from e
    results = [_verify_result(r, i, cp, query) for i, r in enumerate(raw_results)]
    return VerifiedPage(cp, note, results, cursor)


def _verify_result(raw: object, i: int, cp: Checkpoint, query: Query | None) -> VerifiedResult:
    where = f"search.results[{i}]"
    try:
        f = Fields(raw, where)
        index = f.get_int("index")
        leaf = _b64(f.value("leaf"), f"{where}.leaf")
        raw_proof = f.value("inclusion_proof")
        if not isinstance(raw_proof, list):
            raise MalformedError(f"{where}.inclusion_proof: expected an array")
        proof = [_b64(h, f"{where}.inclusion_proof") for h in raw_proof]
        status = f.get_str("status")
        verify_inclusion(leaf_hash(leaf), index, cp.size, proof, cp.root_hash)
        decoded = decode_leaf(leaf)
        payload = salt = None
        event = None
        erasure = None
        if status == "erased":
            erasure = f.value("erasure") if f.has("erasure") else {}
        elif status == "present":
            if decoded.kind != KIND_COMMITTED:
                raise VerificationError(f"{where}: status present but the leaf is inline")
            payload = _b64(f.value("payload"), f"{where}.payload")
            salt = _b64(f.value("salt"), f"{where}.salt")
            if commitment(salt, payload) != decoded.commitment:
                raise VerificationError(f"{where}: payload and salt do not open the leaf")
        elif status == "inline":
            payload = decoded.payload or b""
        else:
            raise MalformedError(f"{where}.status: unknown {status[:20]!r}")
        if payload is not None:
            event = parse_event(payload, f"{where}.event")
            if query is not None and not query.matches(event):
                raise VerificationError(f"{where}: the event does not match the query")
    except VerificationError:
        raise
    except TranslogError as e:
        raise VerificationError(f"{where}: {e}") from e
    except (TypeError, AttributeError) as e:
        raise VerificationError(f"{where}: malformed: {e}") from e
    return VerifiedResult(
        index, leaf, status, event, payload, salt, erasure if isinstance(erasure, dict) else None
    )
