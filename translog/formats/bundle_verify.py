"""Verifying an evidence bundle offline, and the one-page summary it may carry.

:func:`verify_bundle` checks a :class:`~translog.formats.bundle.Bundle` against the log's
verifier key alone and returns a :class:`BundleReport` of what it proves: the checkpoints and
their consistency chain, every entry, the boundary leaves, the range proof, the selection and
the summary. :func:`bundle_summary` computes that summary (what the exporter writes and the
verifier checks) and :func:`with_summary` attaches it. Pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import encode_base64
from translog.core.leaf import KIND_INLINE, decode_leaf, verify_payload
from translog.core.merkle import leaf_hash, verify_consistency
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
from translog.formats.bundle import (
    ERASED,
    INLINE,
    PAYLOAD_STATUSES,
    PRESENT,
    WITHHELD,
    Boundary,
    Bundle,
    BundleEntry,
    proof_range,
)
from translog.formats.bundle_json import parse_bundle
from translog.formats.event_schema import Query, parse_event
from translog.formats.event_summary import summarize


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
    counts = _payload_counts(bundle)
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
    counts = _payload_counts(bundle)
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


def _payload_counts(bundle: Bundle) -> dict[str, int]:
    """How many of the bundle's entries have each payload status."""
    counts = {s: 0 for s in PAYLOAD_STATUSES}
    for e in bundle.entries:
        counts[e.payload_status] += 1
    return counts
