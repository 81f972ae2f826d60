"""RFC 6962 / RFC 9162 Merkle tree math: hashing, roots, proofs and strict verification.

Everything here is a pure function over a :class:`HashReader`, in the manner of
``golang.org/x/mod/sumdb/tlog``: storage decides where hashes live, this module decides which
hashes a root or a proof needs and asks for all of them in one ``read_hashes`` call.

Vocabulary: ``size`` is a number of leaves, ``index`` is 0-based. A node ``(level, index)`` is
the root of the complete subtree holding leaves ``[index * 2**level, (index + 1) * 2**level)``;
level 0 holds the leaf hashes themselves.

Range proofs are in :mod:`translog.core.range_proof`; proofs about interior nodes (monitor
evidence) in :mod:`translog.core.node_proof`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, overload

from translog.errors import InvalidProofError, MalformedError, NotFoundError

HASH_SIZE = 32
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
"""The RFC 6962 interior-node prefix: ``SHA-256(0x01 || left || right)``."""

_Node = tuple[int, int]


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(_LEAF_PREFIX + data).digest()


def leaf_hashes(leaves: Iterable[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes of many leaves (the sequencer's hot path: one comprehension)."""
    sha = _sha256
    return [sha(b"\x00" + leaf).digest() for leaf in leaves]


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(NODE_PREFIX + left + right).digest()


class HashReader(Protocol):
    """Read access to the stored hashes of complete subtrees.

    Contract: for each ``(level, index)`` in ``nodes``, in order, return
    ``MTH(D[index * 2**level : (index + 1) * 2**level])``, the hash of that COMPLETE subtree.
    The functions in this module call ``read_hashes`` once per operation with every node they
    need, so a storage backend can serve one operation from one read transaction. A reader
    raises :class:`~translog.errors.NotFoundError` for a node it does not have.
    """

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the hash of each requested complete subtree, in request order."""
        ...


def subtree_nodes(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split leaves ``[lo, hi)`` into maximal complete subtrees, left to right.

    This is the compact range of ``[lo, hi)``. For ``lo == 0`` there is one node per 1-bit of
    ``hi``, largest first. Requires ``0 <= lo <= hi``.
    """
    if not 0 <= lo <= hi:
        raise MalformedError(f"invalid leaf range: [{lo}, {hi})")
    nodes: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            # A subtree must start at a multiple of its width.
            level = min(level, (lo & -lo).bit_length() - 1)
        nodes.append((level, lo >> level))
        lo += 1 << level
    return nodes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Return the root of a compact range from its hashes given left to right.

    RFC 6962 splits at the largest power of two, so the root is
    ``NH(h0, NH(h1, ... NH(h[k-2], h[k-1])))``: fold from the right.
    """
    sha = _sha256
    prefix = NODE_PREFIX
    it = reversed(hashes)
    right = next(it)
    for left in it:
        right = sha(prefix + left + right).digest()
    return right


def tree_hash(size: int, reader: HashReader) -> bytes:
    """Return the root of the first ``size`` leaves (``EMPTY_ROOT`` for 0), in one read."""
    if size < 0:
        raise MalformedError(f"invalid tree size: {size}")
    if size == 0:
        return EMPTY_ROOT
    return _fold(reader.read_hashes(subtree_nodes(0, size)))


def tree_hash_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the root of a tree made of ``leaf_hashes`` (``EMPTY_ROOT`` when empty)."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


def plan_audit_path(level: int, index: int, size: int) -> tuple[list[_Node], int, int]:
    """Plan the RFC 9162 audit path of the complete node ``(level, index)`` in a tree of ``size``.

    Returns ``(nodes, split, tail)``. Below the level where the paths to this node and to the
    last leaf meet, the siblings are ``nodes[:split]`` (all complete) and then the one sibling
    that may be incomplete: it lies on the right edge, so it is given as its compact range
    ``nodes[split:split + tail]`` and must be folded. ``nodes[split + tail:]`` is the border:
    complete left siblings along the right edge, one per 1-bit of the remaining index.
    """
    inner = (index ^ ((size - 1) >> level)).bit_length()
    nodes = [(level + j, (index >> j) ^ 1) for j in range(inner - 1)]
    split = len(nodes)
    tail = 0
    if inner:
        top = level + inner - 1
        # Here the node's ancestor is a left child, so its sibling is on the right.
        start = ((index >> (inner - 1)) | 1) << top
        edge = subtree_nodes(start, size)
        nodes += edge
        tail = len(edge)
    rest = index >> inner
    j = level + inner
    while rest:
        if rest & 1:
            nodes.append((j, rest - 1))
        rest >>= 1
        j += 1
    return nodes, split, tail


def assemble_audit_path(hashes: list[bytes], split: int, tail: int) -> tuple[bytes, ...]:
    """Turn the hashes read for a :func:`plan_audit_path` plan into proof elements."""
    if tail <= 1:
        return tuple(hashes)
    end = split + tail
    return (*hashes[:split], _fold(hashes[split:end]), *hashes[end:])


def prove_inclusion(index: int, size: int, reader: HashReader) -> tuple[bytes, ...]:
    """Return the RFC 9162 §2.1.3 inclusion proof of leaf ``index`` in the tree of ``size``.

    The proof lists sibling hashes from the leaf level up. All hashes come from one
    ``read_hashes`` call.
    """
    if not 0 <= index < size:
        raise MalformedError(f"leaf index {index} is out of range for tree size {size}")
    nodes, split, tail = plan_audit_path(0, index, size)
    if not nodes:
        return ()
    return assemble_audit_path(reader.read_hashes(nodes), split, tail)


def prove_consistency(old_size: int, new_size: int, reader: HashReader) -> tuple[bytes, ...]:
    """Return the RFC 9162 §2.1.4 consistency proof from ``old_size`` to ``new_size``.

    Requires ``0 < old_size <= new_size``; equal sizes give an empty proof. The proof is the
    largest complete subtree ending at leaf ``old_size - 1`` (left out when ``old_size`` is a
    power of two, since it is then the old root itself) followed by that subtree's audit path
    in the new tree.
    """
    if old_size <= 0:
        raise MalformedError(f"consistency proof from size {old_size} is not defined")
    if old_size > new_size:
        raise MalformedError(f"old size {old_size} is greater than new size {new_size}")
    if old_size == new_size:
        return ()
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    nodes, split, tail = plan_audit_path(level, index, new_size)
    if index == 0:
        return assemble_audit_path(reader.read_hashes(nodes), split, tail)
    hashes = reader.read_hashes([(level, index), *nodes])
    return (hashes[0], *assemble_audit_path(hashes[1:], split, tail))


def check_hash(what: str, value: bytes) -> None:
    """Raise InvalidProofError unless ``value`` is exactly one hash long."""
    if len(value) != HASH_SIZE:
        raise InvalidProofError(f"{what} has wrong length: expected {HASH_SIZE}, got {len(value)}")


def check_proof_hashes(kind: str, proof: Sequence[bytes]) -> None:
    """Raise InvalidProofError unless every proof element is exactly one hash long."""
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise InvalidProofError(
                f"{kind} proof hash {i} has wrong length: expected {HASH_SIZE}, got {len(p)}"
            )


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` gives for ``leaf_hash`` at ``index`` in a tree of ``size``.

    Raises InvalidProofError for an index out of range, a wrong proof length or any hash that
    is not 32 bytes. The caller compares the result with a trusted root.
    """
    if not 0 <= index < size:
        raise InvalidProofError(f"leaf index {index} is out of range for tree size {size}")
    check_hash("leaf hash", leaf_hash)
    check_proof_hashes("inclusion", proof)
    inner = (index ^ (size - 1)).bit_length()
    expected = inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise InvalidProofError(
            f"inclusion proof has wrong length: expected {expected}, got {len(proof)}"
        )
    sha = _sha256
    prefix = NODE_PREFIX
    h = leaf_hash
    for i in range(inner):
        if (index >> i) & 1:
            h = sha(prefix + proof[i] + h).digest()
        else:
            h = sha(prefix + h + proof[i]).digest()
    # Above the meeting point the path runs along the right edge: only left siblings.
    for i in range(inner, expected):
        h = sha(prefix + proof[i] + h).digest()
    return h


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` places ``leaf_hash`` at ``index`` in the tree of ``size`` and ``root``.

    Strict: every hash must be 32 bytes and the proof length exact. Raises InvalidProofError.
    """
    check_hash("root hash", root)
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if computed != root:
        raise InvalidProofError(
            f"inclusion proof for index {index} does not match the root of size {size}"
        )


def _check_consistency_args(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Reject sizes, hash lengths and equal-size cases before any hashing."""
    if old_size <= 0:
        raise InvalidProofError(f"consistency proof from size {old_size} is not accepted")
    if old_size > new_size:
        raise InvalidProofError(f"old size {old_size} is greater than new size {new_size}")
    check_hash("old root hash", old_root)
    check_hash("new root hash", new_root)
    check_proof_hashes("consistency", proof)
    if old_size == new_size:
        if proof:
            raise InvalidProofError(
                f"consistency proof has wrong length: expected 0, got {len(proof)}"
            )
        if old_root != new_root:
            raise InvalidProofError(f"roots differ for equal tree sizes {old_size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size``/``new_root`` extends that of ``old_size``/``old_root``.

    Strict, matching transparency-dev/merkle: ``old_size`` 0 is always rejected (even 0 -> 0),
    ``old_size > new_size`` is rejected, equal sizes need an empty proof and equal roots, and
    the proof length and every hash length must be exact. Raises InvalidProofError.
    """
    _check_consistency_args(old_size, new_size, old_root, new_root, proof)
    if old_size == new_size:
        return
    old_h, new_h = consistency_proof_roots(old_size, new_size, proof, old_root)
    if old_h != old_root:
        raise InvalidProofError(f"consistency proof does not match the old root of size {old_size}")
    if new_h != new_root:
        raise InvalidProofError(f"consistency proof does not match the new root of size {new_size}")


def consistency_proof_roots(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes]:
    """Rebuild (old root, new root) from a consistency proof, checking only its length.

    Requires ``0 < old_size < new_size`` and hashes of the right length (the callers check).
    Raises InvalidProofError for a wrong proof length.
    """
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    inner = (index ^ ((new_size - 1) >> level)).bit_length()
    # When old_size is a power of two the old tree is a node of the new one: seed with it.
    first = 1 if index else 0
    expected = first + inner + (index >> inner).bit_count()
    if len(proof) != expected:
        raise InvalidProofError(
            f"consistency proof has wrong length: expected {expected}, got {len(proof)}"
        )
    return _consistency_roots(proof[0] if index else old_root, index, inner, proof, first)


def _consistency_roots(
    seed: bytes, index: int, inner: int, proof: Sequence[bytes], first: int
) -> tuple[bytes, bytes]:
    """Rebuild (old root, new root) from a consistency proof whose length was checked."""
    sha = _sha256
    prefix = NODE_PREFIX
    old_h = new_h = seed
    for i in range(inner):
        p = proof[first + i]
        if (index >> i) & 1:
            old_h = sha(prefix + p + old_h).digest()
            new_h = sha(prefix + p + new_h).digest()
        else:
            # Right siblings are leaves after old_size: only the new root grows.
            new_h = sha(prefix + new_h + p).digest()
    for i in range(first + inner, len(proof)):
        p = proof[i]
        old_h = sha(prefix + p + old_h).digest()
        new_h = sha(prefix + p + new_h).digest()
    return old_h, new_h


class MemoryHashes:
    """An in-memory :class:`HashReader` that stores every complete node of every level.

    Used by tests and by the in-memory storage twin. ``read_hashes`` raises NotFoundError for
    nodes that are not complete yet.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Create a tree, optionally appending ``leaf_hashes``."""
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        """The number of leaves."""
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash and every node it completes."""
        if len(leaf_hash) != HASH_SIZE:
            raise MalformedError(
                f"leaf hash has wrong length: expected {HASH_SIZE}, got {len(leaf_hash)}"
            )
        levels = self._levels
        levels[0].append(leaf_hash)
        index = len(levels[0]) - 1
        level = 0
        h = leaf_hash
        while index & 1:
            h = _sha256(NODE_PREFIX + levels[level][index - 1] + h).digest()
            level += 1
            index >>= 1
            if level == len(levels):
                levels.append([])
            levels[level].append(h)

    def read_hashes(self, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        """Return the stored hash of each complete node; NotFoundError for any other."""
        levels = self._levels
        out: list[bytes] = []
        for level, index in nodes:
            if level < 0 or index < 0 or level >= len(levels) or index >= len(levels[level]):
                raise NotFoundError(f"no hash for node at level {level}, index {index}")
            out.append(levels[level][index])
        return out

    def root(self) -> bytes:
        """The root of the whole tree (``EMPTY_ROOT`` when empty)."""
        return tree_hash(self.size, self)


class Frontier:
    """The compact range of a growing tree: enough to append leaves and compute the root.

    The sequencer appends leaf hashes and persists the complete nodes each append creates.
    ``copy()`` is cheap, so a batch can be computed tentatively and dropped if its commit
    fails.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        """Create the frontier of the empty tree."""
        self._size = 0
        # Roots of the maximal complete subtrees of [0, size), largest (leftmost) first.
        self._stack: list[bytes] = []

    @classmethod
    def from_reader(cls, size: int, reader: HashReader) -> Frontier:
        """Restore the frontier of the tree of ``size`` leaves from stored hashes (one read)."""
        frontier = cls()
        nodes = subtree_nodes(0, size)
        frontier._stack = list(reader.read_hashes(nodes)) if nodes else []
        frontier._size = size
        return frontier

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash; return every complete node created as ``(level, index, hash)``.

        The list starts with the leaf itself at level 0, followed by each interior node the
        append completed, lowest first.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise MalformedError(
                f"leaf hash has wrong length: expected {HASH_SIZE}, got {len(leaf_hash)}"
            )
        index = self._size
        self._size = index + 1
        created = [(0, index, leaf_hash)]
        if index & 1:
            stack = self._stack
            sha = _sha256
            h = leaf_hash
            level = 0
            while index & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                level += 1
                index >>= 1
                created.append((level, index, h))
            stack.append(h)
        else:
            self._stack.append(leaf_hash)
        return created

    def extend(self, leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
        """Append many leaf hashes; return every node they complete, as ``(level, index, hash)``.

        The same nodes as calling :meth:`append` for each hash, but listed level by level
        (each level in index order): :meth:`extend_levels`, flattened.
        """
        start = self._size
        return list(NodeLevels(start, self.extend_levels(leaf_hashes)))

    def extend_levels(self, leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
        """Append many leaf hashes; return the nodes they complete as one list per level.

        With ``old`` and ``new`` the sizes before and after, ``levels[L]`` holds the hashes of
        the nodes ``(L, i)`` for ``i`` in ``[old >> L, new >> L)``, in index order. Only levels
        that gained a node are listed (none for no hashes); ``levels[0]`` is the leaf hashes.
        Computed a level at a time: every interior node of the batch is one SHA-256 in a list
        comprehension over the level below, and no per-node tuple is built.
        """
        if set(map(len, leaf_hashes)) - {HASH_SIZE}:
            raise MalformedError(f"leaf hashes must be {HASH_SIZE} bytes")
        old = self._size
        new = old + len(leaf_hashes)
        # The old frontier holds one node per set bit of ``old``, highest level first.
        held = self._stack
        sha = _sha256
        low: list[bytes] = []  # the new frontier's nodes below ``level``, lowest first
        levels: list[list[bytes]] = []
        row = list(leaf_hashes)
        level = 0
        while (new >> level) > (old >> level):
            levels.append(row)
            if (old >> level) & 1:  # the left sibling of the first new node is held
                row = [held[(old >> (level + 1)).bit_count()], *row]
            if len(row) & 1:
                low.append(row[-1])
            row = [sha(b"\x01" + a + b).digest() for a, b in zip(row[::2], row[1::2], strict=False)]
            level += 1
        # No new node from here up: the old frontier's nodes at these levels stay.
        low.reverse()
        self._stack = held[: (old >> level).bit_count()] + low
        self._size = new
        return levels

    def root(self) -> bytes:
        """The root of the current tree (``EMPTY_ROOT`` when empty)."""
        if not self._stack:
            return EMPTY_ROOT
        return _fold(self._stack)

    def copy(self) -> Frontier:
        """Return an independent copy (the stack holds at most 64 hashes)."""
        other = Frontier.__new__(Frontier)
        other._size = self._size
        other._stack = self._stack.copy()
        return other


class NodeLevels(Sequence[tuple[int, int, bytes]]):
    """The complete nodes a run of appended leaves created, held as one list per level.

    ``levels[L]`` holds the hashes of the nodes ``(L, (start >> L) + k)``, ``k = 0, 1, …``: the
    shape :meth:`Frontier.extend_levels` returns, where ``start`` is the size before. As a
    sequence it is the ``(level, index, hash)`` triples, level by level and each level in
    index order, so it can stand wherever such a list is expected
    (:attr:`translog.storage.base.WriteBatch.nodes`), and a consumer that stores nodes by
    level can take ``levels`` as they are, with no per-node tuple.
    """

    __slots__ = ("levels", "start")

    def __init__(self, start: int, levels: list[list[bytes]]) -> None:
        self.start = start
        self.levels = levels

    def __len__(self) -> int:
        return sum(map(len, self.levels))

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        for level, hashes in enumerate(self.levels):
            yield from zip(itertools.repeat(level), itertools.count(self.start >> level), hashes)

    @overload
    def __getitem__(self, i: int) -> tuple[int, int, bytes]: ...

    @overload
    def __getitem__(self, i: slice) -> list[tuple[int, int, bytes]]: ...

    def __getitem__(self, i: int | slice) -> tuple[int, int, bytes] | list[tuple[int, int, bytes]]:
        return list(self)[i]
