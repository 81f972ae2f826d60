"""Rebuild (or catch up) a log's storage from what it published to an object store.

:func:`sync_from_store` brings local storage up to the store's checkpoint:

1. the public checkpoint is read and verified with the log's key and origin;
2. the entry bundles from the local size to the checkpoint's size are fetched (a few at a
   time), the leaves hashed into a copy of the local tree, and the resulting root compared
   with the checkpoint's **before anything is written**: nothing unverified is stored;
3. committed payloads come from the private payload bundles when there is a private store
   that can be read; each one must match its leaf's commitment, or it is left out (the entry
   is then stored as erased), never stored wrong; a record marked erased (the publisher
   rewrites published bundles after each erasure) is stored as erased;
4. the entries and every new tree node are appended in batches (one LMDB transaction each);
5. the checkpoint history objects are verified (signature, origin, root at their size in the
   rebuilt tree) and recorded in order, the store's checkpoint last.

Not rebuilt: the idempotency (dedupe) index and promised-but-unsequenced entries (neither is
published); tokens and keys, which the operator brings (docs/OBJSTORE.md).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass

from translog.core.checkpoint import open_checkpoint
from translog.core.leaf import KIND_COMMITTED, commitment, decode_leaf
from translog.core.merkle import Frontier, leaf_hash, tree_hash
from translog.core.signing import NoteVerifier
from translog.core.tiles import TILE_WIDTH, TileRef, decode_bundle
from translog.errors import MalformedError, NotFoundError, StorageCorruptError, TranslogError
from translog.publish import layout
from translog.publish.store import ObjectStore
from translog.storage.base import NewEntry, Storage, StoredCheckpoint, WriteBatch

BATCH_ENTRIES = 65_536
FETCH_AHEAD = 32


@dataclass
class SyncReport:
    """What :func:`sync_from_store` did."""

    old_size: int = 0
    size: int = 0
    entries: int = 0
    payloads: int = 0
    payloads_missing: int = 0
    payloads_rejected: int = 0
    payloads_erased: int = 0
    """Committed entries whose payload bundle record says erased (restored as erased)."""
    checkpoints: int = 0


def _fetch(store: ObjectStore, key: str) -> bytes:
    obj = store.get(key)
    if obj is None:
        raise NotFoundError(f"{store.url} has no {key}")
    return obj.body


def sync_from_store(
    storage: Storage,
    public: ObjectStore,
    private: ObjectStore | None,
    verifier: NoteVerifier,
    origin: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = 8,
    note: bytes | None = None,
) -> SyncReport:
    """Append to ``storage`` everything the store's checkpoint covers that it lacks.

    ``note``: sync to this signed checkpoint instead of the store's current one.
    """
    if note is None:
        note = _fetch(public, layout.CHECKPOINT_KEY)
    try:
        cp, _, _ = open_checkpoint(note, verifier, origin=origin)
    except TranslogError as e:
        raise StorageCorruptError(f"the checkpoint in {public.url} does not verify: {e}") from e
    report = SyncReport(old_size=storage.size(), size=cp.size)
    start = storage.size()
    if start >= cp.size:
        if cp.size and tree_hash(cp.size, storage) != cp.root_hash:
            raise StorageCorruptError(
                f"local tree differs from {public.url} at size {cp.size}: refusing to sync"
            )
        report.checkpoints = _sync_history(
            storage, public, private, verifier, origin, note, cp.size
        )
        return report
    frontier = Frontier.from_reader(start, storage)
    entries: list[NewEntry] = []
    nodes: list[tuple[int, int, bytes]] = []
    ts = storage.last_timestamp()
    refs = [
        TileRef(0, t, min(TILE_WIDTH, cp.size - t * TILE_WIDTH), True)
        for t in range(start // TILE_WIDTH, (cp.size + TILE_WIDTH - 1) // TILE_WIDTH)
    ]
    pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="tl-rebuild")
    try:
        fetches = [pool.submit(_fetch_tile, public, private, ref) for ref in refs[:FETCH_AHEAD]]
        for i, ref in enumerate(refs):
            if i + FETCH_AHEAD < len(refs):
                fetches.append(pool.submit(_fetch_tile, public, private, refs[i + FETCH_AHEAD]))
            leaves, payloads = fetches[i].result()
            fetches[i] = None  # type: ignore[call-overload]
            first = ref.index * TILE_WIDTH
            skip = max(0, start - first)
            for k in range(skip, ref.width):
                leaf = leaves[k]
                entry, ok = _entry(leaf, payloads[k] if payloads is not None else None, first + k)
                if entry.salt is not None:
                    report.payloads += 1
                elif ok is False:
                    report.payloads_rejected += 1
                elif payloads is not None and payloads[k] == (None, None, True):
                    report.payloads_erased += 1
                elif ok is None:
                    report.payloads_missing += 1
                entries.append(entry)
                nodes.extend(frontier.append(leaf_hash(leaf)))
                ts = max(ts, int.from_bytes(leaf[1:9], "big"))
            if progress is not None:
                progress(frontier.size - start, cp.size - start)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if frontier.root() != cp.root_hash:
        raise StorageCorruptError(
            f"the entries in {public.url} do not hash to its checkpoint's root at size "
            f"{cp.size}: nothing was written"
        )
    _append(storage, start, entries, nodes, ts)
    report.entries = len(entries)
    report.checkpoints = _sync_history(storage, public, private, verifier, origin, note, cp.size)
    return report


def _fetch_tile(
    public: ObjectStore, private: ObjectStore | None, ref: TileRef
) -> tuple[list[bytes], list[tuple[bytes | None, bytes | None, bool]] | None]:
    leaves = decode_bundle(_fetch(public, ref.path))
    if len(leaves) != ref.width:
        raise MalformedError(f"{ref.path} holds {len(leaves)} entries, expected {ref.width}")
    payloads = None
    if private is not None:
        obj = private.get(layout.payloads_key(ref))
        if obj is not None:
            payloads = layout.decode_payloads(obj.body)
            if len(payloads) != ref.width:
                raise MalformedError(
                    f"{layout.payloads_key(ref)} holds {len(payloads)} records, expected "
                    f"{ref.width}"
                )
    return leaves, payloads


def _entry(
    leaf: bytes, record: tuple[bytes | None, bytes | None, bool] | None, index: int
) -> tuple[NewEntry, bool | None]:
    """The entry to store; the flag: True payload verified, False rejected, None missing."""
    decoded = decode_leaf(leaf)
    if decoded.kind != KIND_COMMITTED:
        return NewEntry(leaf), True
    salt, payload = (None, None) if record is None else record[:2]
    if salt is None or payload is None:
        return NewEntry(leaf), None
    if commitment(salt, payload) != decoded.commitment:
        return NewEntry(leaf), False
    return NewEntry(leaf, salt, payload), True


def _append(
    storage: Storage,
    start: int,
    entries: list[NewEntry],
    nodes: list[tuple[int, int, bytes]],
    ts: int,
) -> None:
    """Write in batches; the nodes of each batch are those whose leaves it holds."""
    pos = 0
    node_pos = 0
    while pos < len(entries):
        end = min(len(entries), pos + BATCH_ENTRIES)
        limit = start + end
        batch_nodes: list[tuple[int, int, bytes]] = []
        while node_pos < len(nodes):
            level, idx, _h = nodes[node_pos]
            if (idx + 1) << level > limit:
                break
            batch_nodes.append(nodes[node_pos])
            node_pos += 1
        last_ts = int.from_bytes(entries[end - 1].leaf[1:9], "big") if end < len(entries) else ts
        storage.append(WriteBatch(start + pos, entries[pos:end], batch_nodes, last_ts))
        pos = end


def _sync_history(
    storage: Storage,
    public: ObjectStore,
    private: ObjectStore | None,
    verifier: NoteVerifier,
    origin: str,
    latest_note: bytes,
    latest_size: int,
) -> int:
    """Record verified history checkpoints above the local latest, then the store's one."""
    latest = storage.latest_checkpoint()
    floor = -1
    if latest is not None:
        floor = open_checkpoint(latest.note, verifier, origin=origin)[0].size
    count = 0
    latest_ts = 0
    if private is not None:
        for key in private.list("checkpoints/"):
            name = key.rsplit("/", 1)[-1]
            if not name.isdigit() or int(name) <= floor or int(name) > latest_size:
                continue
            ts, note = layout.decode_history(_fetch(private, key))
            cp = open_checkpoint(note, verifier, origin=origin)[0]
            if cp.size != int(name):
                raise StorageCorruptError(f"{key} holds a checkpoint of size {cp.size}")
            if tree_hash(cp.size, storage) != cp.root_hash:
                raise StorageCorruptError(f"{key} does not match the rebuilt tree")
            storage.put_checkpoint(StoredCheckpoint(cp.size, ts, note))
            floor = cp.size
            latest_ts = ts
            count += 1
    if floor < latest_size:
        ts = max(latest_ts, storage.last_timestamp())
        storage.put_checkpoint(StoredCheckpoint(latest_size, ts, latest_note))
        count += 1
    return count
