"""Offline verification of any file translog hands out, with nothing but the log's vkey.

:func:`verify_file` recognises the file and checks it with the matching verifier:

==============  ========================================  =====================================
kind            recognised by                             checked with
==============  ========================================  =====================================
``receipt``     JSON ``"format": "translog-receipt/v1"``  ``receipt.verify_receipt``
``receipts``    NDJSON, one receipt per line              the same, for every line
``promise``     JSON ``"format": "translog-promise/v1"``  ``receipt.verify_promise``
``proof``       first line ``c2sp.org/tlog-proof@v1``     ``proof.verify_proof``
``bundle``      JSON ``translog-bundle/v1``, or gzip      ``bundle_verify.verify_bundle``
``checkpoint``  a signed note                             ``checkpoint.open_checkpoint``
``evidence``    JSON ``translog-monitor-evidence/v1``     ``evidence.verify_evidence``
                (or ``translog-evidence/v1``)
==============  ========================================  =====================================

A witness policy, when given, must be met by the checkpoint the file rests on; it is never
skipped silently (a promise has no checkpoint, so only the ``none`` quorum accepts one). A file
that does not parse fails verification like a bad signature does: ``VerificationError`` with the
field named. This module is pure (no aiohttp, no lmdb), so auditors can verify anywhere.

Entry files (``translog-entry/v1``, written by ``translog prove`` beside the proof) hold an
entry's leaf and, where the reader was allowed to see them, its payload and salt. They prove
nothing alone; given with a proof file they supply the salt needed to check a committed payload.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields, encode_base64
from translog.core.leaf import KIND_INLINE, SALT_SIZE, decode_leaf, verify_payload
from translog.core.merkle import HASH_SIZE, leaf_hash
from translog.core.note import parse_note
from translog.core.policy import WitnessPolicy
from translog.core.signing import NoteVerifier
from translog.core.vkey import parse_vkey
from translog.errors import ConfigError, MalformedError, VerificationError
from translog.formats.bundle import FORMAT as BUNDLE_FORMAT
from translog.formats.bundle import PAYLOAD_STATUSES
from translog.formats.bundle_json import GZIP_MAGIC, parse_bundle
from translog.formats.bundle_verify import BundleReport, verify_bundle
from translog.formats.evidence import FORMAT as EVIDENCE_FORMAT
from translog.formats.evidence import LEGACY_FORMAT as LEGACY_EVIDENCE_FORMAT
from translog.formats.evidence import verify_evidence
from translog.formats.proof import HEADER as PROOF_HEADER
from translog.formats.proof import parse_proof, verify_proof
from translog.formats.receipt import FORMAT as RECEIPT_FORMAT
from translog.formats.receipt import PROMISE_FORMAT, Receipt, parse_promise, parse_receipt
from translog.formats.receipt import verify_promise as _verify_promise
from translog.formats.receipt import verify_receipt as _verify_receipt

ENTRY_FORMAT = "translog-entry/v1"


@dataclass(frozen=True)
class VerifyResult:
    """What was verified, for human output and for callers that want the numbers."""

    kind: str
    origin: str
    size: int | None = None
    """Size of the checkpoint the file rests on (None for a promise)."""
    root_hash: bytes | None = None
    indexes: tuple[int, ...] = ()
    timestamps: tuple[int, ...] = ()
    payloads_checked: int = 0
    cosigners: frozenset[str] = frozenset()
    bundle: BundleReport | None = None
    notes: tuple[str, ...] = field(default=())

    def lines(self) -> list[str]:
        """A concise human summary, first line ``ok: <kind> ...``."""
        out = [f"ok: {self.kind} for log {self.origin}"]
        if self.bundle is not None:
            out += _bundle_lines(self.bundle)
        elif self.indexes:
            when = _span(self.timestamps)
            out.append(f"  entries: {_ranges(self.indexes)} ({len(self.indexes)}), {when}")
        if self.size is not None and self.root_hash is not None:
            out.append(f"  checkpoint: size {self.size}, root {encode_base64(self.root_hash)}")
        if self.cosigners:
            out.append(f"  cosigned by: {', '.join(sorted(self.cosigners))}")
        if self.payloads_checked and self.bundle is None:
            out.append(f"  payloads verified: {self.payloads_checked}")
        out += [f"  {note}" for note in self.notes]
        return out


def iso_ms(ms: int) -> str:
    """``ms`` since the epoch as RFC 3339 UTC with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _span(timestamps: Sequence[int]) -> str:
    if not timestamps:
        return "no timestamps"
    lo, hi = min(timestamps), max(timestamps)
    return f"sequenced {iso_ms(lo)}" if lo == hi else f"sequenced {iso_ms(lo)} .. {iso_ms(hi)}"


def _ranges(indexes: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    values = sorted(set(indexes))
    parts: list[str] = []
    run_start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(run_start) if run_start == prev else f"{run_start}-{prev}")
        if v is not None:
            run_start = prev = v
    return ", ".join(parts)


def _bundle_lines(r: BundleReport) -> list[str]:
    span = f"[{r.start}, {r.end})" if r.end > r.start else f"empty at index {r.start}"
    closed = (
        "closed: a later entry is past the period"
        if r.closed
        else "open: the period reaches the end of the tree, later entries may fall in it"
    )
    lines = [
        f"  period: {iso_ms(r.from_ms)} .. {iso_ms(r.to_ms)} (both inclusive)",
        f"  complete: entries {span} are every entry of the period in the tree of size {r.size}",
        f"  {closed}",
        f"  entries: {r.entries}; payloads verified {r.payloads} ({r.inline} inline), "
        f"erased {r.erased}, withheld {r.withheld}",
        f"  checkpoints: sizes {', '.join(map(str, r.checkpoint_sizes))}, consistent",
    ]
    if r.selected is not None:
        lines.append(
            f"  selection: {r.selected} entries match the query; every revealed payload "
            "was checked against it"
        )
    if r.summary_checked:
        lines.append("  summary: recomputed from the bundle, every figure matches")
    return lines


# -- file kinds ------------------------------------------------------------------------------


def detect_kind(data: bytes) -> str:
    """The kind of a file (see the module docstring); MalformedError if none fits."""
    if data[:2] == GZIP_MAGIC:
        return "bundle"
    if data.startswith(PROOF_HEADER.encode() + b"\n"):
        return "proof"
    if data.lstrip()[:1] != b"{":
        return "checkpoint"
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return "receipts"
    fmt = obj.get("format") if isinstance(obj, dict) else None
    kinds = {
        RECEIPT_FORMAT: "receipt",
        PROMISE_FORMAT: "promise",
        BUNDLE_FORMAT: "bundle",
        ENTRY_FORMAT: "entry",
        EVIDENCE_FORMAT: "evidence",
        LEGACY_EVIDENCE_FORMAT: "evidence",
    }
    if not isinstance(fmt, str) or fmt not in kinds:
        shown = fmt[:40] if isinstance(fmt, str) else fmt
        raise MalformedError(
            f"unknown file format {shown!r}: expected a receipt, promise, bundle, "
            f"c2sp tlog-proof or signed checkpoint"
        )
    return kinds[fmt]


def ndjson_lines(data: bytes, what: str = "input") -> list[bytes]:
    """The non-blank lines of an NDJSON document, each checked to be JSON (``\\r`` dropped).

    Each line is one payload for ``translog submit --ndjson``; the same split is used to match
    payloads to batch receipts.
    """
    out = []
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        try:
            json.loads(line)
        except (ValueError, RecursionError) as e:
            raise MalformedError(f"{what} line {number}: not JSON ({e})") from e
        out.append(line)
    return out


def verify_file(
    data: bytes,
    vkey: str,
    *,
    policy: WitnessPolicy | None = None,
    payload: bytes | None = None,
    entry: bytes | None = None,
) -> VerifyResult:
    """Detect what ``data`` is and verify it offline against the log's ``vkey``.

    ``payload`` is the submitted payload (for a batch receipt or NDJSON receipts: the NDJSON
    file that was submitted, one payload per line); ``entry`` an entry file to check with a
    proof file. Raises ``VerificationError`` (or a subclass) naming what failed; a malformed
    ``vkey`` or a policy that does not list the log raise ``MalformedError``/``ConfigError``.
    """
    verifier = parse_vkey(vkey)
    if policy is not None and policy.logs and verifier not in policy.logs:
        raise ConfigError(f"the witness policy does not list log {verifier.label}")
    try:
        kind = detect_kind(data)
        return _VERIFIERS[kind](data, verifier, policy, payload, entry)
    except MalformedError as e:
        raise VerificationError(f"malformed input: {e}") from e


_Payload = bytes | None


def _no_extra(kind: str, payload: _Payload, entry: _Payload) -> None:
    if payload is not None:
        raise VerificationError(f"a payload cannot be checked against a {kind}")
    if entry is not None:
        raise VerificationError(f"an entry file goes with a proof file, not a {kind}")


def _checked_checkpoint(
    note: bytes, verifier: NoteVerifier, policy: WitnessPolicy | None, where: str
) -> tuple[Checkpoint, frozenset[str]]:
    others = tuple(policy.witnesses.values()) if policy is not None else ()
    try:
        cp, parsed, _ = open_checkpoint(note, verifier, others=others)
        if policy is None:
            return cp, frozenset()
        return cp, frozenset(policy.verify(parsed.text, parsed.signatures))
    except (VerificationError, MalformedError) as e:
        raise type(e)(f"{where}: {e}") from e


def _checkpoint(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("checkpoint", payload, entry)
    try:
        parse_note(data)
    except MalformedError as e:
        raise MalformedError(
            "not a receipt, promise, bundle, c2sp tlog-proof or signed checkpoint "
            f"(as a signed note: {e})"
        ) from e
    cp, cosigners = _checked_checkpoint(data, v, policy, "checkpoint")
    return VerifyResult("checkpoint", cp.origin, cp.size, cp.root_hash, cosigners=cosigners)


def _receipt_json(raw: bytes, line: int | None = None) -> Receipt:
    where = "receipt" if line is None else f"receipts line {line}"
    try:
        return parse_receipt(json.loads(raw))
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"{where}: not JSON ({e})") from e
    except MalformedError as e:
        if line is None:
            raise
        raise MalformedError(f"{where}: {e}") from e


def _one_receipt(
    receipt: Receipt, v: NoteVerifier, policy: WitnessPolicy | None, payloads: list[bytes] | None
) -> tuple[Checkpoint, frozenset[str]]:
    cp, cosigners = _checked_checkpoint(receipt.checkpoint, v, policy, "receipt.checkpoint")
    _verify_receipt(receipt, v.vkey, payloads=payloads)
    return cp, cosigners


def _receipt(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("receipt", None, entry)
    receipt = _receipt_json(data)
    payloads = None
    if payload is not None:
        payloads = ndjson_lines(payload, "payload") if receipt.batch else [payload]
    cp, cosigners = _one_receipt(receipt, v, policy, payloads)
    kind = "batch receipt" if receipt.batch else "receipt"
    return _entries_result(kind, cp, cosigners, [receipt], payloads)


def _receipts(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("receipts file", None, entry)
    receipts = [
        _receipt_json(line, n) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()
    ]
    lines = ndjson_lines(payload, "payload") if payload is not None else None
    total = sum(len(r.entries) for r in receipts)
    if lines is not None and len(lines) != total:
        raise VerificationError(
            f"the payload file has {len(lines)} lines for {total} receipt entries"
        )
    last: tuple[Checkpoint, frozenset[str]] | None = None
    offset = 0
    for n, receipt in enumerate(receipts, 1):
        chunk = None if lines is None else lines[offset : offset + len(receipt.entries)]
        offset += len(receipt.entries)
        try:
            cp, cosigners = _one_receipt(receipt, v, policy, chunk)
        except VerificationError as e:
            raise type(e)(f"receipts line {n}: {e}") from e
        if last is None or cp.size >= last[0].size:
            last = cp, cosigners
    assert last is not None  # detect_kind saw at least one line
    return _entries_result("receipts", last[0], last[1], receipts, lines)


def _entries_result(
    kind: str,
    cp: Checkpoint,
    cosigners: frozenset[str],
    receipts: Sequence[Receipt],
    payloads: Sequence[bytes] | None,
) -> VerifyResult:
    entries = [e for r in receipts for e in r.entries]
    notes = () if len(receipts) == 1 else (f"{len(receipts)} receipts, largest checkpoint shown",)
    return VerifyResult(
        kind,
        cp.origin,
        cp.size,
        cp.root_hash,
        indexes=tuple(e.index for e in entries),
        timestamps=tuple(e.timestamp_ms for e in entries),
        payloads_checked=len(payloads or ()),
        cosigners=cosigners,
        notes=notes,
    )


def _promise(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("promise", None, entry)
    promise = parse_promise(json.loads(data))
    if policy is not None and policy.quorum != "none":
        raise VerificationError(
            "a promise carries no checkpoint, so the witness policy cannot be met; prove the "
            "entry once it is merged"
        )
    _verify_promise(promise, v.vkey)
    if payload is not None:
        try:
            verify_payload(promise.leaf, payload, promise.salt)
        except VerificationError as e:
            raise VerificationError(f"promise: {e}") from e
    leaf = encode_base64(promise.leaf_hash)
    return VerifyResult(
        "promise",
        v.name,
        timestamps=(promise.timestamp_ms,),
        payloads_checked=int(payload is not None),
        notes=(f"promise: leaf {leaf} merged by {iso_ms(promise.deadline_ms)}",),
    )


def _proof(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    proof = parse_proof(data)
    if proof.extra is None:
        raise VerificationError("proof file carries no translog leaf in its extra line")
    _, cosigners = _checked_checkpoint(proof.checkpoint, v, policy, "proof file checkpoint")
    try:
        cp = verify_proof(proof, v)
    except VerificationError as e:
        raise type(e)(f"proof file: {e}") from e
    where = f"proof file (index {proof.index})"
    try:
        leaf = decode_leaf(proof.extra)
    except MalformedError as e:
        raise VerificationError(f"{where}: the leaf does not decode: {e}") from e
    checked = _check_entry_file(entry, proof.index, proof.extra, v.name) if entry else None
    salt = checked[1] if checked else None
    if payload is None and checked is not None:
        payload = checked[0]
    if payload is not None:
        if leaf.kind != KIND_INLINE and salt is None:
            raise VerificationError(
                f"{where}: the leaf is a commitment; give the entry file with its salt (--entry)"
            )
        try:
            verify_payload(proof.extra, payload, salt)
        except VerificationError as e:
            raise VerificationError(f"{where}: {e}") from e
    return VerifyResult(
        "proof",
        cp.origin,
        cp.size,
        cp.root_hash,
        indexes=(proof.index,),
        timestamps=(leaf.timestamp_ms,),
        payloads_checked=int(payload is not None),
        cosigners=cosigners,
        notes=("leaf: " + ("inline" if leaf.kind == KIND_INLINE else "salted commitment"),),
    )


def _bundle(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("bundle (it carries its own payloads)", payload, entry)
    report = verify_bundle(parse_bundle(data), v.vkey, policy=policy)
    return VerifyResult(
        "bundle",
        report.origin,
        report.size,
        None,
        cosigners=report.cosigners,
        payloads_checked=report.payloads,
        bundle=report,
    )


def _entry(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    raise VerificationError(
        "an entry file proves nothing alone: verify its .tlog-proof file and give the entry "
        "file with --entry"
    )


def _evidence(
    data: bytes, v: NoteVerifier, policy: WitnessPolicy | None, payload: _Payload, entry: _Payload
) -> VerifyResult:
    _no_extra("monitor evidence file", payload, entry)
    report = verify_evidence(data, v, policy)
    status = "proven" if report.proven else "observed (see the notes)"
    return VerifyResult(f"evidence ({report.kind}, {status})", report.origin, notes=report.lines)


_VERIFIERS = {
    "evidence": _evidence,
    "checkpoint": _checkpoint,
    "receipt": _receipt,
    "receipts": _receipts,
    "promise": _promise,
    "proof": _proof,
    "bundle": _bundle,
    "entry": _entry,
}


# -- entry files -----------------------------------------------------------------------------


def format_entry(
    origin: str,
    index: int,
    leaf: bytes,
    *,
    payload: bytes | None = None,
    salt: bytes | None = None,
    payload_status: str,
) -> dict[str, Any]:
    """An entry file (``translog-entry/v1``) as a JSON-ready dict.

    ``payload_status`` is ``inline``, ``present`` (payload and salt given), ``erased`` or
    ``withheld``, as in bundles.
    """
    decoded = decode_leaf(leaf)
    obj: dict[str, Any] = {
        "format": ENTRY_FORMAT,
        "origin": origin,
        "index": index,
        "leaf": encode_base64(leaf),
        "leaf_hash": encode_base64(leaf_hash(leaf)),
        "timestamp": decoded.timestamp_ms,
        "kind": "inline" if decoded.kind == KIND_INLINE else "committed",
        "payload_status": payload_status,
    }
    if payload is not None:
        obj["payload"] = encode_base64(payload)
    if salt is not None:
        obj["salt"] = encode_base64(salt)
    return obj


def _check_entry_file(
    data: bytes, index: int, leaf: bytes, origin: str
) -> tuple[bytes | None, bytes | None]:
    """Parse an entry file and check it names this leaf; return its (payload, salt)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise MalformedError(f"entry file: not JSON ({e})") from e
    f = Fields(obj, "entry")
    fmt = f.get_str("format")
    if fmt != ENTRY_FORMAT:
        raise MalformedError(f"entry.format: expected {ENTRY_FORMAT!r}, got {fmt[:40]!r}")
    decoded = decode_leaf(leaf)
    checks = (
        ("origin", f.get_str("origin"), origin),
        ("index", f.get_int("index"), index),
        ("leaf", f.get_bytes("leaf"), leaf),
        ("leaf_hash", f.get_bytes("leaf_hash", HASH_SIZE), leaf_hash(leaf)),
        ("timestamp", f.get_int("timestamp"), decoded.timestamp_ms),
        ("kind", f.get_str("kind"), "inline" if decoded.kind == KIND_INLINE else "committed"),
    )
    for name, got, want in checks:
        if got != want:
            raise VerificationError(f"entry.{name} differs from the proof file's entry")
    status = f.get_str("payload_status")
    if status not in PAYLOAD_STATUSES:
        raise MalformedError(f"entry.payload_status: unknown value {status[:20]!r}")
    payload = f.get_bytes("payload") if f.has("payload") else None
    salt = f.get_bytes("salt", SALT_SIZE) if f.has("salt") else None
    f.done()
    return payload, salt
