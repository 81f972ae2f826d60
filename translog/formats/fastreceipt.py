"""Receipts for a run of consecutive entries, derived from one range proof.

The multi-process server (:mod:`translog.http.multiprocess.worker`) sends the log process every
entry of
one event-loop tick in one message; the log process sequences them as one group, so they get
consecutive indexes ``[start, end)``, and answers with one range proof
(:func:`translog.core.merkle.prove_range`) for the whole run. This module turns that answer into
the usual receipts (``translog-receipt/v1``, :mod:`translog.formats.receipt`): for a single entry
its
RFC 9162 inclusion proof, for a batch request the range proof of its own sub-run. Nothing here
changes the wire format; the JSON is byte for byte what
``json.dumps(format_receipt(...), separators=(",", ":"))`` gives, only built without an
intermediate dict per entry.

:class:`RunHashes` rebuilds every subtree hash the range recursion visits, once per run, and
checks that they give the signed checkpoint's root, so a receipt never carries a proof that
does not verify. This module is pure (no aiohttp, no lmdb).
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence

from translog.core.jsonfields import encode_base64 as b64
from translog.core.merkle import HASH_SIZE, node_hash
from translog.core.range_proof import range_proof_nodes
from translog.errors import StorageCorruptError
from translog.formats.receipt import FORMAT

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
    b'"index":%d,"leaf":"%s","leaf_hash":"%s","timestamp":%d,"salt":"%s","duplicate":false'
)
_INLINE_ENTRY = b'"index":%d,"leaf":"%s","leaf_hash":"%s","timestamp":%d,"duplicate":false'


def _entry_fields(
    index: int, leaf: bytes, leaf_hash: bytes, timestamp_ms: int, salt: bytes | None
) -> bytes:
    """The fields of one receipt entry up to and including ``duplicate`` (always false)."""
    if salt is None:
        return _INLINE_ENTRY % (
            index,
            _b2a(leaf, newline=False),
            _b2a(leaf_hash, newline=False),
            timestamp_ms,
        )
    return _COMMITTED_ENTRY % (
        index,
        _b2a(leaf, newline=False),
        _b2a(leaf_hash, newline=False),
        timestamp_ms,
        _b2a(salt, newline=False),
    )


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
    return b'{"format":"%s",%s,"inclusion_proof":%s,"checkpoint":%s}' % (
        _FORMAT,
        fields,
        proof_json.encode("ascii"),
        quoted_checkpoint,
    )


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
    for leaf, salt in zip(leaves, salts, strict=True):
        lh = b2a(leaf_hashes[off : off + HASH_SIZE], newline=False)
        off += HASH_SIZE
        if salt is None:
            parts.append(_INLINE_ENTRY % (index, b2a(leaf, newline=False), lh, timestamp_ms))
        else:
            fields = (index, b2a(leaf, newline=False), lh, timestamp_ms, b2a(salt, newline=False))
            parts.append(_COMMITTED_ENTRY % fields)
        index += 1
    nodes = b",".join(b'"%s"' % b2a(h, newline=False) for h in proof)
    return (
        b'{"format":"%s","checkpoint":%s,"entries":[{%s}],"range_proof":{"start":%d,"end":%d,"nodes":[%s]}}'
        % (
            _FORMAT,
            quoted_checkpoint,
            b"},{".join(parts),
            start,
            index,
            nodes,
        )
    )
