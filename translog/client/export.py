"""Export an evidence bundle (:mod:`translog.formats.bundle`) for an audit period from a live log.

Everything is fetched through a :class:`~translog.client.SyncLogClient`, so every leaf, proof
and checkpoint is verified as it arrives; the finished bundle is verified once more, offline,
before it is returned. The period ``[from_ms, to_ms]`` (both inclusive) becomes an index range
by binary search over leaf timestamps, which never decrease along the log.

Payloads: inline leaves hold theirs. A committed entry's payload and salt are read with the
client's read token through :meth:`~translog.client.LogClient.entries` (concurrent
``GET /entries/<index>`` reads checked against the range-proven leaves, no proof per entry); an
erased one is marked ``erased``, and when the log refuses the token (401/403) the rest are
marked ``withheld`` without asking again.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from translog import __version__
from translog.client import SyncLogClient, VerifiedCheckpoint
from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.leaf import KIND_COMMITTED, decode_leaf
from translog.core.policy import WitnessPolicy
from translog.core.range_proof import prove_range
from translog.core.tiles import TileHashReader
from translog.core.vkey import parse_vkey
from translog.errors import AuthError, ConfigError, ForbiddenError, MalformedError
from translog.formats.bundle import Bundle, Selection, build_bundle, proof_range
from translog.formats.bundle_verify import verify_bundle, with_summary
from translog.formats.event_schema import Query
from translog.log.self_audit import ranges

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phases ``leaves`` and ``payloads``."""

LEAVES_PER_FETCH = 4096
PAYLOADS_PER_FETCH = 1024
"""Entries per :meth:`~translog.client.SyncLogClient.entries` call (progress granularity)."""


@dataclass(frozen=True)
class Export:
    """The exported bundle and what the exporter could not read."""

    bundle: Bundle
    refused: str | None = None
    """Why committed payloads were withheld (the log's answer to the read token), or None."""


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


def export_bundle(
    client: SyncLogClient,
    from_ms: int,
    to_ms: int,
    *,
    checkpoints: Sequence[bytes] = (),
    policy: WitnessPolicy | None = None,
    read_payloads: bool = True,
    progress: Progress = _no_progress,
    selection: Query | None = None,
    summary: bool = False,
) -> Export:
    """Fetch, prove and assemble the bundle for ``[from_ms, to_ms]`` as of the latest checkpoint.

    ``checkpoints`` are signed notes observed earlier (the last bundle's final checkpoint, say);
    they are chained to the latest by consistency proofs. ``policy`` is applied again in the
    offline self-check (give the client the same one).
    """
    if from_ms > to_ms:
        raise MalformedError(f"the period starts after it ends: from {from_ms} > to {to_ms}")
    final = client.checkpoint()
    notes = _chain(client, final, checkpoints)
    start = client.first_index_at_or_after(from_ms, checkpoint=final)
    end = client.first_index_at_or_after(to_ms + 1, checkpoint=final)
    lo, hi = proof_range(start, end, final.size)
    leaves = _leaves(client, lo, hi, final, progress)
    period = leaves[start - lo : end - lo]
    selected: Selection | None = None
    if selection is not None:
        query = replace(selection, from_ms=from_ms, to_ms=to_ms)
        indexes = _matching(client, query, start, end)
        selected = Selection(query.to_json(), tuple(indexes))
        payloads, refused = _selected_payloads(client, final, indexes, progress)
    elif read_payloads:
        payloads, refused = _payloads(client, final, start, period, progress)
    else:
        payloads, refused = {}, "not requested"
    nodes: tuple[bytes, ...] = ()
    if final.size:
        nodes = prove_range(lo, hi, final.size, TileHashReader(final.size, client.tile))
    bundle = build_bundle(
        origin=client.origin,
        from_ms=from_ms,
        to_ms=to_ms,
        start=start,
        end=end,
        leaves=leaves,
        payloads=payloads,
        checkpoints=[n for n, _ in notes],
        consistency_proofs=_proofs(client, [cp for _, cp in notes]),
        range_nodes=nodes,
        generated_at_ms=int(time.time() * 1000),
        generator=f"translog {__version__}",
        selection=selected,
    )
    if summary:
        bundle = with_summary(bundle, client.vkey, policy=policy)
    verify_bundle(bundle, client.vkey, policy=policy)
    return Export(bundle, refused)


def _matching(client: SyncLogClient, query: Query, start: int, end: int) -> list[int]:
    """Indexes in ``[start, end)`` whose events match ``query`` (verified search pages)."""
    found: list[int] = []
    cursor: int | None = None
    while True:
        page = client.search(query, cursor=cursor, limit=500, order="asc")
        found += [r.index for r in page.results if start <= r.index < end]
        cursor = page.next_cursor
        if cursor is None or cursor >= end:
            return sorted(set(found))


def _selected_payloads(
    client: SyncLogClient, cp: VerifiedCheckpoint, indexes: Sequence[int], progress: Progress
) -> tuple[dict[int, tuple[bytes, bytes] | None], str | None]:
    """Payload and salt of each selected entry, read in runs of consecutive indexes."""
    out: dict[int, tuple[bytes, bytes] | None] = {}
    for first, last in ranges(indexes):
        for lo in range(first, last + 1, PAYLOADS_PER_FETCH):
            hi = min(lo + PAYLOADS_PER_FETCH, last + 1)
            try:
                entries = client.entries(lo, hi, checkpoint=cp)
            except (AuthError, ForbiddenError) as e:
                return out, str(e)
            for entry in entries:
                if entry["kind"] == "committed":
                    payload, salt = entry["payload"], entry["salt"]
                    ok = payload is not None and salt is not None
                    out[entry["index"]] = (payload, salt) if ok else None
            progress("payloads", len(out), len(indexes))
    return out, None


def _chain(
    client: SyncLogClient, final: VerifiedCheckpoint, extra: Sequence[bytes]
) -> list[tuple[bytes, Checkpoint]]:
    """The earlier checkpoints (verified, size order, no duplicates), then the final one."""
    verifier = parse_vkey(client.vkey)
    seen: dict[bytes, Checkpoint] = {}
    for i, note in enumerate(extra):
        cp, _, _ = open_checkpoint(note, verifier)
        if cp.size > final.size:
            raise ConfigError(
                f"checkpoint {i + 1} has size {cp.size}, more than the log's latest checkpoint "
                f"({final.size}); export again once the log has published it"
            )
        if note != final.note:
            seen[note] = cp
    ordered = sorted(seen.items(), key=lambda item: item[1].size)
    return [*ordered, (final.note, final.checkpoint)]


def _proofs(client: SyncLogClient, cps: Sequence[Checkpoint]) -> list[tuple[bytes, ...]]:
    """Verified consistency proofs joining each checkpoint to the next."""
    proofs: list[tuple[bytes, ...]] = []
    for old, new in itertools.pairwise(cps):
        if old.size == 0:
            proofs.append(())
            continue
        proofs.append(
            client.consistency_proof(
                old.size, new.size, old_root=old.root_hash, new_root=new.root_hash
            )
        )
    return proofs


def _leaves(
    client: SyncLogClient, lo: int, hi: int, cp: VerifiedCheckpoint, progress: Progress
) -> list[bytes]:
    """The verified leaves ``[lo, hi)``, fetched in slices with progress."""
    out: list[bytes] = []
    for first in range(lo, hi, LEAVES_PER_FETCH):
        out += client.leaves(first, min(first + LEAVES_PER_FETCH, hi), checkpoint=cp)
        progress("leaves", len(out), hi - lo)
    return out


def _payloads(
    client: SyncLogClient,
    cp: VerifiedCheckpoint,
    start: int,
    leaves: Sequence[bytes],
    progress: Progress,
) -> tuple[dict[int, tuple[bytes, bytes] | None], str | None]:
    """Payload and salt of each committed entry (None once erased); stop when refused.

    Only slices holding committed leaves are read; inline ones hold their payloads.
    """
    committed = [decode_leaf(leaf).kind == KIND_COMMITTED for leaf in leaves]
    out: dict[int, tuple[bytes, bytes] | None] = {}
    for lo in range(0, len(leaves), PAYLOADS_PER_FETCH):
        hi = min(lo + PAYLOADS_PER_FETCH, len(leaves))
        if not any(committed[lo:hi]):
            continue
        try:
            entries = client.entries(start + lo, start + hi, checkpoint=cp)
        except (AuthError, ForbiddenError) as e:
            return out, str(e)
        for entry in entries:
            if entry["kind"] == "committed":
                payload, salt = entry["payload"], entry["salt"]
                out[entry["index"]] = None if payload is None or salt is None else (payload, salt)
        progress("payloads", len(out), sum(committed))
    return out, None
