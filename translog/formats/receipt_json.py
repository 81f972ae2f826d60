"""The one receipt encoder: the compact JSON bytes of ``translog-receipt/v1``.

Both servers answer with these bytes. :func:`receipt_json` encodes a
:class:`~translog.formats.receipt.Receipt` (the single-process server, and the log process for
everything but the fast path); :func:`single_receipt_json` and :func:`batch_receipt_json`
encode the same fields straight from a run of consecutive entries, without an object per
entry (the multi-process fast path, :mod:`translog.http.multiprocess.worker`). Every path
goes through the same entry templates, and the bytes are exactly
``json.dumps(format_receipt(r), separators=(",", ":"))``.

The fast path's worker sends the log process every entry of one event-loop tick in one
message; the log process sequences them as one group, so they get consecutive indexes
``[start, end)``, and answers with one range proof (:func:`translog.core.merkle.prove_range`)
for the whole run. :class:`RunHashes` rebuilds every subtree hash the range recursion
visits, once per run, and checks that they give the signed checkpoint's root, so a receipt
never carries a proof that does not verify. From it come each single entry's RFC 9162
inclusion proof and each batch request's range proof of its own sub-run.

This module is pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from typing import Any

from translog.core.jsonfields import encode_base64 as b64
from translog.core.merkle import HASH_SIZE, node_hash
from translog.core.range_proof import range_proof_nodes
from translog.errors import StorageCorruptError
from translog.formats.receipt import FORMAT, Receipt, ReceiptEntry

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_FORMAT = FORMAT.encode("ascii")
_b2a = binascii.b2a_base64


class RunHashes:
    """Every subtree hash the range recursion for ``[start, end)`` in a tree of ``size`` visits.

    ``leaf_hashes`` is the concatenation of the run's 32-byte leaf hashes and ``proof`` its
    range proof. Raises ``StorageCorruptError`` when they do not give ``root``: the proof was
    read from the log's own storage, so a mismatch means the stored tree is damaged.
    """

    __slots__ = ("_texts", "end", "known", "size", "start")

    def __init__(
        self,
        start: int,
        end: int,
        size: int,
        leaf_hashes: bytes,
        proof: Sequence[bytes],
        root: bytes,
    ) -> None:
        if not 0 <= start < end <= size or len(leaf_hashes) != (end - start) * HASH_SIZE:
            raise StorageCorruptError(f"run [{start}, {end}) does not fit a tree of {size}")
        self.start, self.end, self.size = start, end, size
        known: dict[tuple[int, int], bytes] = {}
        elements = iter(proof)

        def walk(lo: int, hi: int) -> bytes:
            width = hi - lo
            if (hi <= start or lo >= end) and width & (width - 1) == 0:
                h = next(elements)
            elif width == 1:
                off = (lo - start) * HASH_SIZE
                h = leaf_hashes[off : off + HASH_SIZE]
            else:
                k = 1 << ((width - 1).bit_length() - 1)
                h = node_hash(walk(lo, lo + k), walk(lo + k, hi))
            known[(lo, hi)] = h
            return h

        try:
            computed = walk(0, size)
            leftover = next(elements, None)
        except StopIteration as e:
            raise StorageCorruptError(f"range proof for [{start}, {end}) is too short") from e
        if leftover is not None or computed != root:
            raise StorageCorruptError(
                f"range proof for [{start}, {end}) does not give the checkpoint root of {size}"
            )
        self.known = known
        self._texts: dict[tuple[int, int], str] = {}

    def _path(self, index: int) -> list[tuple[int, int]]:
        """The subtrees on the RFC 9162 audit path of ``index``, leaf level first."""
        path: list[tuple[int, int]] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = 1 << ((hi - lo - 1).bit_length() - 1)
            if index < lo + k:
                path.append((lo + k, hi))
                hi = lo + k
            else:
                path.append((lo, lo + k))
                lo += k
        path.reverse()
        return path

    def inclusion_proof(self, index: int) -> list[bytes]:
        """The audit path of ``index`` (inside the run) in the tree of ``size``."""
        return [self.known[node] for node in self._path(index)]

    def inclusion_proof_json(self, index: int) -> str:
        """The audit path of ``index`` as a JSON array of base64 strings.

        The receipts of one run share most of their paths, so each node is encoded once.
        """
        texts = self._texts
        out = []
        for node in self._path(index):
            text = texts.get(node)
            if text is None:
                text = texts[node] = f'"{b64(self.known[node])}"'
            out.append(text)
        return "[" + ",".join(out) + "]"

    def range_proof(self, start: int, end: int) -> list[bytes]:
        """The range proof of a sub-run ``[start, end)`` (every element is a visited subtree)."""
        return [
            self.known[(i << level, (i + 1) << level)]
            for level, i in range_proof_nodes(start, end, self.size)
        ]


_COMMITTED_ENTRY = (
    b'"index":%d,"leaf":"%s","leaf_hash":"%s","timestamp":%d,"salt":"%s","duplicate":%s'
)
_INLINE_ENTRY = b'"index":%d,"leaf":"%s","leaf_hash":"%s","timestamp":%d,"duplicate":%s'
_FALSE = b"false"
_TRUE = b"true"


def _entry_fields(
    index: int,
    leaf: bytes,
    leaf_hash: bytes,
    timestamp_ms: int,
    salt: bytes | None,
    duplicate: bool = False,
) -> bytes:
    """The fields of one receipt entry up to and including ``duplicate``."""
    dup = _TRUE if duplicate else _FALSE
    if salt is None:
        return _INLINE_ENTRY % (
            index,
            _b2a(leaf, newline=False),
            _b2a(leaf_hash, newline=False),
            timestamp_ms,
            dup,
        )
    return _COMMITTED_ENTRY % (
        index,
        _b2a(leaf, newline=False),
        _b2a(leaf_hash, newline=False),
        timestamp_ms,
        _b2a(salt, newline=False),
        dup,
    )


def _nodes_json(nodes: Sequence[bytes]) -> bytes:
    """A JSON array of base64 hashes."""
    return b"[" + b",".join(b'"%s"' % _b2a(h, newline=False) for h in nodes) + b"]"


def _entry_json(e: ReceiptEntry) -> bytes:
    fields = _entry_fields(e.index, e.leaf, e.leaf_hash, e.timestamp_ms, e.salt, e.duplicate)
    if e.inclusion_proof is None:
        return fields
    return fields + b',"inclusion_proof":' + _nodes_json(e.inclusion_proof)


def _single(quoted_checkpoint: bytes, entry: bytes) -> bytes:
    return b'{"format":"%s",%s,"checkpoint":%s}' % (_FORMAT, entry, quoted_checkpoint)


def _batch(
    quoted_checkpoint: bytes, entries: Sequence[bytes], start: int, end: int, nodes: bytes
) -> bytes:
    return (
        b'{"format":"%s","checkpoint":%s,"entries":[{%s}],"range_proof":{"start":%d,"end":%d,"nodes":%s}}'
        % (_FORMAT, quoted_checkpoint, b"},{".join(entries), start, end, nodes)
    )


def receipt_json(receipt: Receipt) -> bytes:
    """The receipt's compact JSON, as both servers send it."""
    quoted = quote_checkpoint(receipt.checkpoint)
    rp = receipt.range_proof
    if rp is None:
        return _single(quoted, _entry_json(receipt.entries[0]))
    entries = [_entry_json(e) for e in receipt.entries]
    return _batch(quoted, entries, rp.start, rp.end, _nodes_json(rp.nodes))


def format_receipt(receipt: Receipt) -> dict[str, Any]:
    """The receipt as a JSON-ready dict (the layout of :mod:`translog.formats.receipt`)."""
    value: dict[str, Any] = json.loads(receipt_json(receipt))
    return value


def quote_checkpoint(note: bytes) -> bytes:
    """The checkpoint note as a JSON string literal (computed once per run)."""
    return _ENCODER.encode(note.decode("utf-8")).encode("ascii")


def single_receipt_json(
    quoted_checkpoint: bytes,
    index: int,
    leaf: bytes,
    leaf_hash: bytes,
    timestamp_ms: int,
    salt: bytes | None,
    proof_json: str,
) -> bytes:
    """A single receipt, exactly as the compact JSON of ``format_receipt`` (no duplicate).

    ``proof_json`` is the audit path from :meth:`RunHashes.inclusion_proof_json`.
    """
    fields = _entry_fields(index, leaf, leaf_hash, timestamp_ms, salt)
    return _single(quoted_checkpoint, fields + b',"inclusion_proof":' + proof_json.encode("ascii"))


def batch_receipt_json(
    quoted_checkpoint: bytes,
    start: int,
    leaves: Sequence[bytes],
    leaf_hashes: bytes,
    timestamp_ms: int,
    salts: Sequence[bytes | None],
    proof: Sequence[bytes],
    leaf_hashes_offset: int = 0,
) -> bytes:
    """A batch receipt for the consecutive entries ``start, start + 1, ...``, all stamped
    ``timestamp_ms``.

    ``leaf_hashes[leaf_hashes_offset:]`` holds their 32-byte leaf hashes in order; ``proof``
    is the range proof of ``[start, start + len(leaves))``.
    """
    parts = []
    off = leaf_hashes_offset
    b2a = _b2a
    index = start
    false = _FALSE
    for leaf, salt in zip(leaves, salts, strict=True):
        lh = b2a(leaf_hashes[off : off + HASH_SIZE], newline=False)
        off += HASH_SIZE
        if salt is None:
            parts.append(_INLINE_ENTRY % (index, b2a(leaf, newline=False), lh, timestamp_ms, false))
        else:
            salt_b64 = b2a(salt, newline=False)
            fields = (index, b2a(leaf, newline=False), lh, timestamp_ms, salt_b64, false)
            parts.append(_COMMITTED_ENTRY % fields)
        index += 1
    return _batch(quoted_checkpoint, parts, start, index, _nodes_json(proof))
