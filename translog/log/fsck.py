"""fsck: recompute the whole log from its entries and check everything that is stored.

Checks, in one streaming pass (memory stays O(log n)):

1. every entry decodes as a translog leaf; committed payloads match their commitment;
   leaf timestamps never decrease and never exceed the stored last timestamp;
2. every stored hash (every node the storage can serve) equals the hash recomputed from the
   entries, level by level: the first mismatch is reported with index, level, expected and
   found values;
3. the leaf-hash index holds exactly the recomputed leaf hashes (when the index is enabled):
   the storage's own auditor when it has one (LMDB: every run, see
   ``translog.storage.leafindex.Auditor``; blocks of a merge still being built are not part
   of the index and become a note), otherwise a lookup of every leaf;
4. every stored checkpoint verifies with the log's key, has the origin, is no larger than the
   tree, has the recomputed root for its size, and is consistent with the next one (the
   consistency proof is built from the stored hashes and verified against the signed roots).

It works through the :class:`~translog.storage.base.Storage` protocol, so it runs on the
memory twin in tests and on LMDB in production.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.leaf import KIND_COMMITTED, decode_leaf, verify_payload
from translog.core.merkle import (
    EMPTY_ROOT,
    Frontier,
    leaf_hash,
    prove_consistency,
    verify_consistency,
)
from translog.core.signing import NoteVerifier
from translog.errors import ProblemLimitError, TranslogError
from translog.storage.base import Storage

_BLOCK = 62 * 64  # entries read per step


@dataclass
class FsckReport:
    """What fsck found. ``ok`` is true when no problem was found."""

    size: int = 0
    entries_checked: int = 0
    hashes_checked: int = 0
    checkpoints_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Findings that are not problems (an unfinished leaf-hash index merge, say)."""

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


class _Checker:
    def __init__(
        self,
        storage: Storage,
        verifier: NoteVerifier,
        origin: str,
        max_problems: int,
        progress: Callable[[int, int], None] | None,
        check_leaf_index: bool,
    ) -> None:
        self.storage = storage
        self.verifier = verifier
        self.origin = origin
        self.max_problems = max_problems
        self.progress = progress
        self.check_leaf_index = check_leaf_index
        self.report = FsckReport(size=storage.size())

    def problem(self, text: str) -> None:
        self.report.problems.append(text)
        if len(self.report.problems) >= self.max_problems:
            raise ProblemLimitError

    def flush(self, found: list[tuple[int, str]]) -> None:
        """Report a block's problems in leaf order, so the first one named is the first."""
        for _, text in sorted(found, key=lambda item: item[0]):
            self.problem(text)
        found.clear()

    def run(self) -> FsckReport:
        try:
            checkpoints = self.load_checkpoints()
            roots = self.recompute({cp.size for _, cp in checkpoints})
            self.check_checkpoints(checkpoints, roots)
        except ProblemLimitError:
            pass
        return self.report

    def load_checkpoints(self) -> list[tuple[int, Checkpoint]]:
        out: list[tuple[int, Checkpoint]] = []
        stored = list(self.storage.checkpoints())
        latest = self.storage.latest_checkpoint()
        if latest is not None:
            stored.append(latest)
        last_ts = 0
        for i, item in enumerate(stored):
            what = "latest checkpoint" if i == len(stored) - 1 and latest else "checkpoint"
            try:
                cp, _, _ = open_checkpoint(item.note, self.verifier, origin=self.origin)
            except TranslogError as e:
                self.problem(f"{what} stored for size {item.size}: {e}")
                continue
            if cp.size != item.size:
                self.problem(f"{what} stored under size {item.size} has size {cp.size}")
                continue
            if cp.size > self.report.size:
                self.problem(
                    f"{what} of size {cp.size} is beyond the tree's {self.report.size} leaves"
                )
                continue
            if item.timestamp_ms < last_ts and what == "checkpoint":
                self.problem(f"checkpoint of size {cp.size}: timestamp went backwards")
            last_ts = max(last_ts, item.timestamp_ms)
            out.append((item.timestamp_ms, cp))
        return out

    def recompute(self, wanted_sizes: set[int]) -> dict[int, bytes]:
        roots: dict[int, bytes] = {0: EMPTY_ROOT}
        frontier = Frontier()
        size = self.report.size
        last_ts = 0
        stored_ts = self.storage.last_timestamp()
        found: list[tuple[int, str]] = []
        auditor = self.storage.leaf_index_auditor() if self.check_leaf_index else None
        for start in range(0, size, _BLOCK):
            end = min(size, start + _BLOCK)
            nodes: list[tuple[int, int, bytes]] = []
            hashes: list[bytes] = []
            for entry in self.storage.get_entries(start, end):
                index = entry.index
                try:
                    leaf = decode_leaf(entry.leaf)
                    if leaf.kind == KIND_COMMITTED and entry.payload is not None:
                        verify_payload(entry.leaf, entry.payload, entry.salt)
                except TranslogError as e:
                    found.append((index, f"entry {index}: {e}"))
                    leaf = None
                if leaf is not None:
                    if leaf.timestamp_ms < last_ts:
                        found.append(
                            (
                                index,
                                f"entry {index}: timestamp {leaf.timestamp_ms} "
                                f"is before the previous entry's {last_ts}",
                            )
                        )
                    last_ts = max(last_ts, leaf.timestamp_ms)
                h = leaf_hash(entry.leaf)
                hashes.append(h)
                nodes.extend(frontier.append(h))
                if frontier.size in wanted_sizes:
                    roots[frontier.size] = frontier.root()
            self.compare(nodes, found)
            if auditor is not None:
                found += auditor.feed(start, hashes)
            elif self.check_leaf_index:
                self.check_index(start, hashes, found)
            self.flush(found)
            self.report.entries_checked = end
            if self.progress is not None:
                self.progress(end, size)
        if auditor is not None:
            found += auditor.finish()
            self.report.notes += auditor.notes
            self.flush(found)
        if last_ts > stored_ts:
            self.problem(f"stored last timestamp {stored_ts} is before entry timestamp {last_ts}")
        return roots

    def check_index(self, start: int, hashes: list[bytes], found: list[tuple[int, str]]) -> None:
        for index, h in enumerate(hashes, start):
            got = self.storage.find_leaf_hash(h)
            if got is None or got > index:
                found.append((index, f"leaf-hash index: entry {index} not found (got {got})"))

    def compare(self, nodes: list[tuple[int, int, bytes]], found: list[tuple[int, str]]) -> None:
        want = [(level, index) for level, index, _ in nodes]
        try:
            stored = self.storage.read_hashes(want)
        except TranslogError as e:
            found.append((nodes[0][1] if nodes else 0, f"couldn't read stored hashes: {e}"))
            return
        for (level, index, expected), got in zip(nodes, stored, strict=True):
            if got != expected:
                # Order a node by the last leaf it covers, after that leaf's own problems.
                position = ((index + 1) << level) - 1
                found.append(
                    (
                        position,
                        f"hash mismatch at index {index}, level {level}: "
                        f"expected {expected.hex()}, found {got.hex()}",
                    )
                )
        self.report.hashes_checked += len(nodes)

    def check_checkpoints(
        self, checkpoints: list[tuple[int, Checkpoint]], roots: dict[int, bytes]
    ) -> None:
        prev: Checkpoint | None = None
        for _, cp in checkpoints:
            expected = roots.get(cp.size)
            if expected is not None and expected != cp.root_hash:
                self.problem(
                    f"checkpoint of size {cp.size}: root mismatch: expected "
                    f"{expected.hex()} (recomputed), found {cp.root_hash.hex()}"
                )
            elif prev is not None and prev.size > 0:
                self.check_consistency(prev, cp)
            self.report.checkpoints_checked += 1
            prev = cp

    def check_consistency(self, old: Checkpoint, new: Checkpoint) -> None:
        try:
            proof = prove_consistency(old.size, new.size, self.storage)
            verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
        except TranslogError as e:
            self.problem(f"checkpoints of size {old.size} and {new.size} are not consistent: {e}")


def fsck(
    storage: Storage,
    verifier: NoteVerifier,
    origin: str,
    *,
    max_problems: int = 20,
    progress: Callable[[int, int], None] | None = None,
    check_leaf_index: bool = True,
) -> FsckReport:
    """Check ``storage`` completely; see the module docstring for what is checked."""
    return _Checker(storage, verifier, origin, max_problems, progress, check_leaf_index).run()
