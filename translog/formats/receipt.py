"""Receipts and promises: what a submitter keeps to prove, offline, what the log accepted.

A **receipt** (``translog-receipt/v1``) holds a signed checkpoint and, for each entry, its index,
leaf, leaf hash, timestamp and (committed leaves only) the salt, plus the Merkle proof that the
entries are in the checkpoint's tree. It verifies with nothing but the log's verifier key.

* A single receipt is flat and carries the entry's RFC 9162 ``inclusion_proof``.
* A batch receipt carries ``entries`` and one ``range_proof``
  (:func:`translog.core.merkle.prove_range`)
  for the longest run of consecutive indexes; an entry outside that run (an idempotent
  duplicate of an older entry, say) carries its own ``inclusion_proof``. A client derives a
  standard per-entry inclusion proof with :func:`translog.core.merkle.inclusion_proofs_from_range`.

A **promise** (``translog-promise/v1``, for ``?wait=0``) is the log's signed note over::

    translog-promise/v1
    <origin>
    <leaf timestamp ms>
    <base64 leaf hash>
    <deadline ms>

saying that the leaf will be in the tree by the deadline (timestamp + maximum merge delay),
like an RFC 6962 SCT. The first line keeps it from ever parsing as a checkpoint.

Binary values are standard padded base64 and integers are JSON numbers. Parsing is strict:
unknown fields, wrong types and non-canonical base64 are rejected with a ``MalformedError``
that names the field. This module is pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields as _Fields
from translog.core.jsonfields import encode_base64 as _b64
from translog.core.leaf import KIND_INLINE, SALT_SIZE, decode_leaf, verify_payload
from translog.core.merkle import HASH_SIZE, HashReader, leaf_hash, prove_inclusion, verify_inclusion
from translog.core.range_proof import prove_range, verify_range
from translog.core.signing import NoteSigner, open_note, sign_note
from translog.core.vkey import parse_vkey
from translog.errors import InvalidProofError, MalformedError, VerificationError

FORMAT = "translog-receipt/v1"
PROMISE_FORMAT = "translog-promise/v1"


@dataclass(frozen=True, slots=True)
class ReceiptEntry:
    """One entry of a receipt."""

    index: int
    leaf: bytes
    leaf_hash: bytes
    timestamp_ms: int
    salt: bytes | None = None
    """The commitment's salt (committed leaves only); it belongs to the submitter."""
    duplicate: bool = False
    """True when an idempotency key matched an earlier entry; the fields are the earlier ones."""
    inclusion_proof: tuple[bytes, ...] | None = None
    """Single receipts, and batch entries outside the range proof."""


@dataclass(frozen=True, slots=True)
class RangeProof:
    """A range proof for the leaves ``[start, end)`` (see
    :func:`translog.core.merkle.prove_range`)."""

    start: int
    end: int
    nodes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A signed checkpoint and the entries proven in it. Batch receipts have a range proof."""

    checkpoint: bytes
    entries: tuple[ReceiptEntry, ...]
    range_proof: RangeProof | None = None

    @property
    def batch(self) -> bool:
        """Whether this is a batch receipt."""
        return self.range_proof is not None


@dataclass(frozen=True, slots=True)
class Promise:
    """A signed promise that ``leaf`` will be in the tree by ``deadline_ms``."""

    leaf: bytes
    leaf_hash: bytes
    timestamp_ms: int
    deadline_ms: int
    note: bytes
    salt: bytes | None = None
    duplicate: bool = False
    """Not signed: True when an idempotency key named an earlier entry, whose leaf this is."""


# -- building ------------------------------------------------------------------------------


def longest_run(indexes: Sequence[int]) -> tuple[int, int]:
    """The longest run ``[start, end)`` of consecutive values in ``indexes`` (first on ties)."""
    if not indexes:
        raise MalformedError("a receipt needs at least one entry")
    values = sorted(set(indexes))
    best = (values[0], values[0] + 1)
    run_start = values[0]
    for prev, cur in itertools.pairwise(values):
        if cur != prev + 1:
            run_start = cur
        if cur + 1 - run_start > best[1] - best[0]:
            best = (run_start, cur + 1)
    return best


def build_receipt(
    checkpoint: bytes,
    size: int,
    entries: Sequence[ReceiptEntry],
    reader: HashReader,
    *,
    batch: bool,
) -> Receipt:
    """Prove ``entries`` in the tree of ``size`` (the checkpoint's size) and make a receipt.

    A batch receipt reads one range proof plus one audit path per entry outside its run.
    """
    if not batch:
        if len(entries) != 1:
            raise MalformedError(f"a single receipt has one entry, got {len(entries)}")
        e = entries[0]
        proof = prove_inclusion(e.index, size, reader)
        # Built directly: dataclasses.replace costs more than the rest of this on a busy log.
        entry = ReceiptEntry(
            e.index, e.leaf, e.leaf_hash, e.timestamp_ms, e.salt, e.duplicate, proof
        )
        return Receipt(checkpoint, (entry,))
    start, end = longest_run([e.index for e in entries])
    nodes = prove_range(start, end, size, reader)
    out = [
        e
        if start <= e.index < end
        else replace(e, inclusion_proof=prove_inclusion(e.index, size, reader))
        for e in entries
    ]
    return Receipt(checkpoint, tuple(out), RangeProof(start, end, nodes))


# -- parsing -------------------------------------------------------------------------------


def _parse_format(f: _Fields, expected: str) -> None:
    value = f.get_str("format")
    if value != expected:
        raise MalformedError(f"{f.path}.format: expected {expected!r}, got {value[:40]!r}")


def _parse_entry(f: _Fields, *, proof: bool) -> ReceiptEntry:
    return ReceiptEntry(
        index=f.get_int("index"),
        leaf=f.get_bytes("leaf"),
        leaf_hash=f.get_bytes("leaf_hash", HASH_SIZE),
        timestamp_ms=f.get_int("timestamp"),
        salt=f.get_bytes("salt", SALT_SIZE) if f.has("salt") else None,
        duplicate=f.get_bool("duplicate"),
        inclusion_proof=f.get_hashes("inclusion_proof") if proof else None,
    )


def parse_receipt(obj: object) -> Receipt:
    """Parse a receipt's JSON value strictly; ``MalformedError`` names the offending field."""
    f = _Fields(obj, "receipt")
    _parse_format(f, FORMAT)
    checkpoint = f.get_str("checkpoint").encode("utf-8")
    if not f.has("entries"):
        entry = _parse_entry(f, proof=True)
        f.done()
        return Receipt(checkpoint, (entry,))
    rf = _Fields(f.value("range_proof"), "receipt.range_proof")
    rp = RangeProof(rf.get_int("start"), rf.get_int("end"), rf.get_hashes("nodes"))
    rf.done()
    if rp.start >= rp.end:
        raise MalformedError(f"receipt.range_proof: empty range [{rp.start}, {rp.end})")
    entries = tuple(_parse_batch_entry(raw, i, rp) for i, raw in enumerate(f.get_list("entries")))
    f.done()
    covered = {e.index for e in entries if rp.start <= e.index < rp.end}
    if len(covered) != rp.end - rp.start:
        missing = next(i for i in range(rp.start, rp.end) if i not in covered)
        raise MalformedError(f"receipt.range_proof: no entry for index {missing}")
    return Receipt(checkpoint, entries, rp)


def _parse_batch_entry(raw: object, i: int, rp: RangeProof) -> ReceiptEntry:
    f = _Fields(raw, f"receipt.entries[{i}]")
    outside = not rp.start <= f.get_int("index") < rp.end
    run = f"range_proof [{rp.start}, {rp.end})"
    if outside and not f.has("inclusion_proof"):
        raise MalformedError(f"{f.path}.inclusion_proof: missing for an entry outside {run}")
    if not outside and f.has("inclusion_proof"):
        raise MalformedError(f"{f.path}.inclusion_proof: not allowed for an entry inside {run}")
    entry = _parse_entry(f, proof=outside)
    f.done()
    return entry


# -- verification --------------------------------------------------------------------------


def _check_entry(where: str, e: ReceiptEntry, size: int) -> None:
    """Check one entry's own fields: leaf hash, leaf encoding, timestamp, salt, index."""
    if leaf_hash(e.leaf) != e.leaf_hash:
        raise VerificationError(f"{where}.leaf_hash does not match the leaf")
    try:
        decoded = decode_leaf(e.leaf)
    except MalformedError as err:
        raise MalformedError(f"{where}.leaf: {err}") from err
    if decoded.timestamp_ms != e.timestamp_ms:
        raise VerificationError(
            f"{where}.timestamp {e.timestamp_ms} differs from the leaf's {decoded.timestamp_ms}"
        )
    if e.salt is not None and decoded.kind == KIND_INLINE:
        raise VerificationError(f"{where}.salt is given but the leaf is inline")
    if e.index >= size:
        raise InvalidProofError(f"{where}.index {e.index} is beyond the checkpoint size {size}")


def _check_inclusion(where: str, e: ReceiptEntry, cp: Checkpoint) -> None:
    assert e.inclusion_proof is not None  # parse_receipt guarantees it
    try:
        verify_inclusion(e.leaf_hash, e.index, cp.size, e.inclusion_proof, cp.root_hash)
    except InvalidProofError as err:
        raise InvalidProofError(f"{where}.inclusion_proof: {err}") from err


def _check_batch(receipt: Receipt, cp: Checkpoint) -> None:
    rp = receipt.range_proof
    assert rp is not None
    run: dict[int, bytes] = {}
    for i, e in enumerate(receipt.entries):
        where = f"receipt.entries[{i}]"
        if not rp.start <= e.index < rp.end:
            _check_inclusion(where, e, cp)
        elif run.setdefault(e.index, e.leaf_hash) != e.leaf_hash:
            raise VerificationError(f"{where}: index {e.index} appears with two different leaves")
    hashes = [run[i] for i in range(rp.start, rp.end)]
    try:
        verify_range(rp.start, rp.end, cp.size, hashes, rp.nodes, cp.root_hash)
    except InvalidProofError as err:
        raise InvalidProofError(f"receipt.range_proof: {err}") from err


def _where(receipt: Receipt, i: int) -> str:
    return f"receipt.entries[{i}]" if receipt.batch else "receipt"


def verify_receipt(
    receipt: Receipt | Mapping[str, Any],
    vkey: str,
    payload: bytes | None = None,
    *,
    payloads: Sequence[bytes] | None = None,
) -> None:
    """Verify a receipt offline against the log's verifier key ``vkey``.

    Checks the checkpoint's signature and origin, every entry's leaf hash, leaf encoding and
    timestamp, and the inclusion (range proof or audit path) of every entry in the checkpoint.
    With ``payload`` (single receipts) or ``payloads`` (one per entry, batch receipts) it
    also checks that each leaf holds its payload. Raises a ``VerificationError`` subclass or
    ``MalformedError``; returns None.
    """
    if not isinstance(receipt, Receipt):
        receipt = parse_receipt(receipt)
    cp, _, _ = open_checkpoint(receipt.checkpoint, parse_vkey(vkey))
    for i, e in enumerate(receipt.entries):
        _check_entry(_where(receipt, i), e, cp.size)
    if receipt.batch:
        _check_batch(receipt, cp)
    else:
        _check_inclusion("receipt", receipt.entries[0], cp)
    if payload is not None:
        payloads = [payload]
    if payloads is None:
        return
    if len(payloads) != len(receipt.entries):
        raise MalformedError(
            f"{len(payloads)} payloads given for a receipt of {len(receipt.entries)} entries"
        )
    for i, (e, data) in enumerate(zip(receipt.entries, payloads, strict=True)):
        try:
            verify_payload(e.leaf, data, e.salt)
        except VerificationError as err:
            raise VerificationError(f"{_where(receipt, i)}: {err}") from err


# -- promises ------------------------------------------------------------------------------


def promise_text(origin: str, timestamp_ms: int, leaf_hash: bytes, deadline_ms: int) -> str:
    """The note text a promise signs."""
    return f"{PROMISE_FORMAT}\n{origin}\n{timestamp_ms}\n{_b64(leaf_hash)}\n{deadline_ms}\n"


def sign_promise(
    signer: NoteSigner,
    leaf: bytes,
    salt: bytes | None,
    max_merge_delay_ms: int,
    *,
    duplicate: bool = False,
) -> Promise:
    """Promise, signed with the log's note key, that ``leaf`` is merged within the delay."""
    timestamp_ms = decode_leaf(leaf).timestamp_ms
    lh = leaf_hash(leaf)
    deadline_ms = timestamp_ms + max_merge_delay_ms
    note = sign_note(promise_text(signer.name, timestamp_ms, lh, deadline_ms), [signer])
    return Promise(leaf, lh, timestamp_ms, deadline_ms, note, salt, duplicate)


def format_promise(promise: Promise) -> dict[str, Any]:
    """The promise as a JSON-ready dict."""
    obj: dict[str, Any] = {
        "format": PROMISE_FORMAT,
        "leaf": _b64(promise.leaf),
        "leaf_hash": _b64(promise.leaf_hash),
        "timestamp": promise.timestamp_ms,
    }
    if promise.salt is not None:
        obj["salt"] = _b64(promise.salt)
    obj["deadline"] = promise.deadline_ms
    obj["duplicate"] = promise.duplicate
    obj["promise"] = promise.note.decode("utf-8")
    return obj


def parse_promise(obj: object) -> Promise:
    """Parse a promise's JSON value strictly; ``MalformedError`` names the offending field."""
    f = _Fields(obj, "promise")
    _parse_format(f, PROMISE_FORMAT)
    promise = Promise(
        leaf=f.get_bytes("leaf"),
        leaf_hash=f.get_bytes("leaf_hash", HASH_SIZE),
        timestamp_ms=f.get_int("timestamp"),
        salt=f.get_bytes("salt", SALT_SIZE) if f.has("salt") else None,
        deadline_ms=f.get_int("deadline"),
        note=f.get_str("promise").encode("utf-8"),
        duplicate=f.get_bool("duplicate"),
    )
    f.done()
    return promise


def verify_promise(promise: Promise | Mapping[str, Any], vkey: str) -> None:
    """Verify a promise offline: the log's signature and that the note matches the fields."""
    if not isinstance(promise, Promise):
        promise = parse_promise(promise)
    verifier = parse_vkey(vkey)
    note, _ = open_note(promise.note, [verifier])
    entry = ReceiptEntry(0, promise.leaf, promise.leaf_hash, promise.timestamp_ms, promise.salt)
    _check_entry("promise", entry, 1)
    if promise.deadline_ms < promise.timestamp_ms:
        raise VerificationError(
            f"promise.deadline {promise.deadline_ms} is before its timestamp {promise.timestamp_ms}"
        )
    expected = promise_text(
        verifier.name, promise.timestamp_ms, promise.leaf_hash, promise.deadline_ms
    )
    if note.text != expected:
        raise VerificationError(_text_mismatch(note.text, expected))


def _text_mismatch(text: str, expected: str) -> str:
    names = ("format line", "origin", "timestamp", "leaf hash", "deadline")
    got, want = text.split("\n"), expected.split("\n")
    for name, a, b in zip(names, got, want, strict=False):
        if a != b:
            return f"promise note {name} is {a[:64]!r}, expected {b[:64]!r}"
    return f"promise note has {len(got) - 1} lines, expected {len(want) - 1}"
