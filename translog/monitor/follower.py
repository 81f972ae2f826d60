"""Following one log: poll, verify, prove consistency, recompute, and turn failures into alerts.

:class:`Follower` is the monitor's per-log engine (``translog audit`` uses the same code, once,
from the empty tree). One :meth:`Follower.poll`:

1. ``GET /checkpoint``; a transport failure counts towards **unavailable** (never tampering).
2. The log's signature (**bad_signature** if it is missing or does not verify) and the witness
   policy (**witness_policy**).
3. Against the last verified checkpoint: same size with another root is
   **same_size_different_root**; larger must be proven consistent from tiles (**fork** when
   the tiles rebuild the new signed root but not the old one); smaller is a **rollback**
   (a replayed old checkpoint, or a log that no longer serves the tree it signed) or a
   **fork** when the log's own tiles show the smaller tree is not a prefix.
4. Recompute: every new entry bundle is hashed, the tree extended from the stored edge
   (:class:`~translog.monitor.recompute.TreeBuilder`), every hash tile the log serves for the
   new size compared with the recomputation, and the root compared with the checkpoint. Entries
   that do not give the signed root are a **bundle_mismatch**; a served tile that differs from
   the recomputation, under a root that verified, a **tile_mismatch**. Only a checkpoint whose
   entries verified becomes the new state, written in one transaction.
5. **stale** when the checkpoint has not changed for ``stale_after_intervals``; promises past
   their deadline are looked up (**broken_promise**); content rules run over new payloads
   (**content_rule**).

Fetches are pipelined: a window of bundle and tile requests is in flight while the previous
bundle is hashed.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from translog.client.answers import leaf_entry
from translog.client.checkpoints import Trusted, VerifiedCheckpoint
from translog.client.entries import EntryReader
from translog.client.fetcher import MAX_BUNDLE_BYTES, TileFetcher
from translog.client.log_client import LogClient
from translog.client.proofs import Proofs
from translog.client.transport import Transport
from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, verify_consistency
from translog.core.node_proof import prove_node_inclusion, root_from_node_proof
from translog.core.policy import WitnessPolicy, parse_policy
from translog.core.range_proof import prove_range
from translog.core.signing import NoteVerifier
from translog.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileHashReader,
    TileRef,
    decode_bundle,
    partial_width,
)
from translog.core.vkey import parse_vkey
from translog.errors import (
    AuthError,
    ForbiddenError,
    InconsistencyError,
    InvalidProofError,
    MalformedError,
    NetworkError,
    NotFoundError,
    PushbackError,
    TranslogError,
    VerificationError,
)
from translog.formats.evidence import b64, evidence, hash_list, note_text
from translog.formats.receipt import format_promise, parse_promise, verify_promise
from translog.formats.rules import Firing, Rule, RuleEngine, parse_payload
from translog.monitor.alerts import Alert, Reporter
from translog.monitor.config import LogConfig
from translog.monitor.pipeline import Pipeline, PipelineError
from translog.monitor.recompute import TreeBuilder, bundle_leaf_hashes, split_edge
from translog.monitor.store import Availability, LogState, PromiseRecord, Store

FETCH_WINDOW = 32
"""Bundle and tile requests kept in flight during a recomputation."""
MAX_MISMATCHES = 16
UNAVAILABLE_AFTER = 3
"""Consecutive failed polls before an ``unavailable`` alert."""


def now_ms() -> int:
    """Wall-clock time, ms since the epoch."""
    return int(time.time() * 1000)


def _fp(*parts: bytes | str | int) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


@dataclass
class Mismatch:
    """A served tile or bundle that differs from the recomputation."""

    ref: TileRef
    served: bytes
    recomputed: bytes | None
    """The recomputed tile (hash tiles), None for a bundle."""
    position: int
    """First differing hash (tiles) or entry (bundles) within the tile."""
    reason: str


@dataclass
class Recomputed:
    """The outcome of extending the tree to a new size."""

    root: bytes
    builder: TreeBuilder
    tiles: list[Mismatch] = field(default_factory=list)
    bundles: list[Mismatch] = field(default_factory=list)
    entries: int = 0


@dataclass(frozen=True)
class Finding:
    """Two checkpoints that cannot both be true, or a rollback."""

    kind: str
    reason: str
    older: Trusted
    newer: Trusted
    proof: tuple[bytes, ...] = ()
    prefix_root: bytes | None = None

    def evidence_fields(self) -> dict[str, Any]:
        """The evidence fields of a fork, rollback or same-size finding."""
        out: dict[str, Any] = {
            "older": note_text(self.older.note),
            "newer": note_text(self.newer.note),
            "proof": hash_list(self.proof),
        }
        if self.prefix_root is not None:
            out["prefix_root"] = b64(self.prefix_root)
        return out


class SplitViewError(InconsistencyError):
    """A foreign checkpoint (from a witness or another monitor) contradicts the verified view.

    ``finding`` holds both checkpoints and the proof; ``evidence`` is the path of the evidence
    file written for it (also raised as an alert).
    """

    def __init__(self, finding: Finding, evidence_path: Path | None) -> None:
        super().__init__(
            finding.reason,
            older=finding.older.note,
            newer=finding.newer.note,
            proof=list(finding.proof),
        )
        self.finding = finding
        self.evidence = evidence_path


class TilesUnusable(Exception):
    """The log's tiles do not rebuild its signed root (the recomputation will say where)."""


class Follower:
    """Follows one log (see the module docstring)."""

    def __init__(
        self,
        log: LogConfig,
        reporter: Reporter,
        store: Store | None,
        *,
        rules: Sequence[Rule] = (),
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], int] = now_ms,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Follow ``log``; state in ``store`` (None: in memory, as ``translog audit`` does)."""
        self.config = log
        self.name = log.name
        self.verifier: NoteVerifier = parse_vkey(log.vkey)
        self.origin = self.verifier.name
        self.policy: WitnessPolicy | None = None
        if log.policy is not None:
            try:
                self.policy = parse_policy(log.policy.read_text())
            except OSError as e:
                raise TranslogError(f"log {log.name}: couldn't read policy {log.policy}") from e
        self.reporter = reporter
        self.store = store
        self._memory: LogState | None = None
        self._availability: Availability | None = None
        self.rules = [r for r in rules if not r.logs or log.name in r.logs]
        self.clock = clock
        self.progress = progress
        self.transport = Transport(
            log.url, timeout=log.timeout_seconds, retries=log.retries, session=session
        )
        self.fetcher = TileFetcher(self.transport, log.read_token)
        self.proofs = Proofs(self.transport, self.fetcher, read_token=log.read_token, use_ct=False)
        self.entry_reader = EntryReader(self.transport, log.read_token)
        self.client = LogClient(
            log.url,
            log.vkey,
            read_token=log.read_token,
            timeout=log.timeout_seconds,
            retries=log.retries,
            session=session,
        )
        self.translog_leaves = True
        self._warned: set[str] = set()
        self.fetch_window = FETCH_WINDOW
        self._observed_at = 0
        """When the checkpoint being judged was fetched: promises are judged against it."""
        self.final: Checkpoint | None = None
        """A frozen log's final checkpoint (from a verified log list): once the log has reached
        it, an unchanged checkpoint is expected and never ``stale``."""

    async def close(self) -> None:
        """Close the HTTP sessions this follower opened."""
        await self.transport.close()
        await self.client.close()

    # -- state -------------------------------------------------------------------------------

    def state(self) -> LogState | None:
        """The last verified state."""
        if self.store is None:
            return self._memory
        return self.store.log(self.name)

    def _put_state(self, s: LogState, windows: dict[tuple[str, str], Any] | None = None) -> None:
        if self.store is None:
            self._memory = s
            return
        with self.store.transaction():
            self.store.put_log(self.name, s)
            if windows is not None:
                self.store.put_windows(self.name, windows)

    def latest_verified(self) -> VerifiedCheckpoint | None:
        """The latest checkpoint whose entries this follower verified (None before the first)."""
        s = self.state()
        if s is None:
            return None
        cp, _, _ = open_checkpoint(s.note, self.verifier)
        return VerifiedCheckpoint(cp, s.note, frozenset())

    # -- one poll ----------------------------------------------------------------------------

    async def poll(self) -> list[Alert]:
        """Fetch, verify and recompute the log's latest checkpoint once; return new alerts."""
        before = len(self.reporter.raised)
        try:
            await self._poll()
        except (NetworkError, PushbackError) as e:
            await self._unreachable(str(e))
        return self.reporter.raised[before:]

    async def _poll(self) -> None:
        self._observed_at = self.clock()
        resp = await self.transport.request(
            "GET", "/checkpoint", auth=self.config.read_token, limit=1 << 20
        )
        note = resp.body
        await self._reachable(note)
        seen = await self._open(note)
        if seen is None:
            return
        state = self.state()
        trusted = (
            Trusted(0, EMPTY_ROOT, b"")
            if state is None
            else Trusted(state.size, state.root, state.note)
        )
        if state is not None and note == state.note:
            await self._after(state)
            return
        finding: Finding | None
        try:
            finding = await self.compare(trusted, seen)
        except TilesUnusable:
            finding = None  # recompute from the entries, which names the culprit
        if finding is not None:
            await self._report_finding(finding)
            return
        if state is not None and seen.size <= state.size:
            await self._after(state)
            return
        await self._advance(state, seen)

    async def audit(self, earlier: Sequence[Trusted] = ()) -> Trusted | None:
        """The one-shot full audit: recompute from the empty tree; return the checkpoint.

        ``earlier`` are checkpoints to hold the log to (a fork or rollback is an alert). An
        unreachable log is one ``unavailable`` alert at once.
        """
        try:
            resp = await self.transport.request(
                "GET", "/checkpoint", auth=self.config.read_token, limit=1 << 20
            )
            seen = await self._open(resp.body)
            if seen is None:
                return None
            for old in earlier:
                try:
                    finding = await self.compare(old, seen)
                except TilesUnusable:
                    finding = None
                if finding is not None:
                    await self._report_finding(finding)
            await self._advance(None, seen)
            return seen
        except (NetworkError, PushbackError) as e:
            self._availability = Availability(UNAVAILABLE_AFTER - 1, self.clock(), False, "")
            await self._unreachable(str(e))
            return None

    async def _open(self, note: bytes) -> Trusted | None:
        """Verify the log's signature and the policy; alert and return None if they fail."""
        witnesses = tuple(self.policy.witnesses.values()) if self.policy is not None else ()
        try:
            cp, parsed, _ = open_checkpoint(note, self.verifier, others=witnesses)
        except (VerificationError, MalformedError) as e:
            await self._alert(
                "bad_signature",
                _fp(note),
                f"the checkpoint served does not verify: {e}",
                {"checkpoint": note_text(note)},
            )
            return None
        if self.policy is not None:
            try:
                self.policy.verify(parsed.text, parsed.signatures)
            except VerificationError as e:
                assert self.config.policy is not None
                await self._alert(
                    "witness_policy",
                    _fp(note),
                    f"checkpoint size {cp.size} does not meet the witness policy: {e}",
                    {"checkpoint": note_text(note), "policy": self.config.policy.read_text()},
                )
                return None
        return Trusted(cp.size, cp.root_hash, note)

    # -- consistency -------------------------------------------------------------------------

    async def compare(self, trusted: Trusted, seen: Trusted) -> Finding | None:
        """Can ``seen`` follow ``trusted``? None if so, else the finding (fork, rollback...).

        Raises :class:`TilesUnusable` when the log's tiles do not rebuild ``seen``'s signed
        root (growth), and ``NetworkError`` when the log cannot be asked.
        """
        if seen.size == trusted.size:
            if seen.root_hash != trusted.root_hash:
                return Finding(
                    "same_size_different_root",
                    f"the log signed two different roots for tree size {seen.size}",
                    trusted,
                    seen,
                )
            return None
        if seen.size > trusted.size:
            if trusted.size == 0:
                return None
            try:
                found = await self.proofs.tile_consistency(trusted.size, seen.size)
            except (NotFoundError, VerificationError, MalformedError) as e:
                raise TilesUnusable(str(e)) from e
            if found.new_root != seen.root_hash:
                raise TilesUnusable(f"the tiles of size {seen.size} do not give its signed root")
            try:
                verify_consistency(
                    trusted.size, seen.size, trusted.root_hash, seen.root_hash, found.proof
                )
            except InvalidProofError:
                if not _proof_rebuilds(
                    trusted.size, seen.size, found.old_root, seen.root_hash, found.proof
                ):
                    raise TilesUnusable("the tiles' consistency proof is not the tree's") from None
                return Finding(
                    "fork",
                    f"the log forked: its checkpoint of size {seen.size} does not extend the "
                    f"verified checkpoint of size {trusted.size} (its tree has root "
                    f"{b64(found.old_root)} at size {trusted.size})",
                    trusted,
                    seen,
                    found.proof,
                    found.old_root,
                )
            return None
        # Smaller than what was verified: a replay of an old checkpoint, a rollback or a fork.
        why = f"the log presents tree size {seen.size} after size {trusted.size} was verified"
        if seen.size == 0:
            return Finding("rollback", f"rollback: {why}", trusted, seen)
        try:
            found = await self.proofs.tile_consistency(seen.size, trusted.size)
        except (NotFoundError, VerificationError, MalformedError) as e:
            return Finding(
                "rollback", f"rollback: {why}, and no longer serves that tree ({e})", trusted, seen
            )
        if found.new_root != trusted.root_hash:
            return Finding(
                "rollback",
                f"rollback: {why}, and its tiles no longer give that tree's root",
                trusted,
                seen,
            )
        try:
            verify_consistency(
                seen.size, trusted.size, seen.root_hash, trusted.root_hash, found.proof
            )
        except InvalidProofError:
            if not _proof_rebuilds(
                seen.size, trusted.size, found.old_root, trusted.root_hash, found.proof
            ):
                return Finding(
                    "rollback",
                    f"rollback: {why}, and its tiles no longer prove that tree",
                    trusted,
                    seen,
                )
            return Finding(
                "fork",
                f"the log forked: its checkpoint of size {seen.size} is not a prefix of the "
                f"verified checkpoint of size {trusted.size}",
                trusted,
                seen,
                found.proof,
                found.old_root,
            )
        return Finding(
            "rollback",
            f"rollback: {why} (an old checkpoint replayed; it is a prefix of the verified tree)",
            trusted,
            seen,
            found.proof,
            found.old_root,
        )

    async def _report_finding(self, f: Finding) -> Alert | None:
        return await self._alert(
            f.kind,
            _fp(f.older.note, f.newer.note),
            f.reason,
            f.evidence_fields(),
            {"older_size": f.older.size, "newer_size": f.newer.size},
        )

    async def check_foreign(self, note: bytes, source: str = "gossip") -> VerifiedCheckpoint:
        """Check a signed checkpoint of this log obtained elsewhere against the verified view.

        The gossip hook for witnesses and other monitors. ``note`` must carry the log's valid
        signature (``VerificationError`` otherwise). Same size: the roots must match. Smaller:
        the log's tiles for the verified size must prove it a prefix. Larger: the log's tiles
        for its size must prove the verified checkpoint a prefix of it (a log that does not
        serve that size raises ``NotFoundError``: nothing can be concluded yet). A
        contradiction raises :class:`SplitViewError` after raising a ``fork`` (or
        ``same_size_different_root``) alert with evidence, whose path the error carries.
        Returns the foreign checkpoint, verified.
        """
        cp, parsed, _ = open_checkpoint(
            note,
            self.verifier,
            others=tuple(self.policy.witnesses.values()) if self.policy else (),
        )
        seen = Trusted(cp.size, cp.root_hash, note)
        state = self.state()
        if state is None:
            raise NotFoundError(f"log {self.name}: no verified checkpoint yet")
        trusted = Trusted(state.size, state.root, state.note)
        try:
            finding = await self.compare(trusted, seen)
        except TilesUnusable as e:
            raise NotFoundError(
                f"log {self.name}: its tiles cannot judge the {source} checkpoint of size "
                f"{cp.size} yet ({e})"
            ) from e
        if finding is not None and finding.kind == "rollback":
            finding = None  # an older checkpoint from elsewhere is no rollback...
            if seen.size < trusted.size and not await self._prefix_ok(seen, trusted):
                raise NotFoundError(
                    f"log {self.name}: it no longer serves size {trusted.size} to judge the "
                    f"{source} checkpoint of size {seen.size}"
                )
        if finding is not None:
            finding = Finding(
                finding.kind,
                f"split view ({source}): {finding.reason}",
                finding.older,
                finding.newer,
                finding.proof,
                finding.prefix_root,
            )
            alert = await self._report_finding(finding)
            raise SplitViewError(finding, alert.evidence if alert else None)
        cosigners: frozenset[str] = frozenset()
        if self.policy is not None:
            cosigners = frozenset(self.policy.cosigners(parsed.text, parsed.signatures))
        return VerifiedCheckpoint(cp, note, cosigners)

    async def _prefix_ok(self, small: Trusted, big: Trusted) -> bool:
        try:
            found = await self.proofs.tile_consistency(small.size, big.size)
        except (NotFoundError, VerificationError, MalformedError):
            return False
        return found.new_root == big.root_hash and found.old_root == small.root_hash

    # -- recomputation -----------------------------------------------------------------------

    async def _advance(self, state: LogState | None, seen: Trusted) -> None:
        old_size = 0 if state is None else state.size
        builder = (
            TreeBuilder()
            if state is None
            else TreeBuilder(state.size, split_edge(state.size, state.edge))
        )
        want_leaves = bool(self.rules) and self.translog_leaves
        leaves: list[bytes] = []
        result = await recompute(
            self.transport,
            self.config.read_token,
            builder,
            old_size,
            seen.size,
            progress=self.progress,
            window=self.fetch_window,
            on_bundle=(lambda first, raw: leaves.extend(raw)) if want_leaves else None,
        )
        if result.bundles or result.root != seen.root_hash:
            await self._bundle_alert(seen, result)
            return
        for m in result.tiles:
            await self._tile_alert(seen, m, result)
        now = self.clock()
        windows = None
        firings: list[Firing] = []
        if want_leaves:
            engine = RuleEngine(
                self.rules, self.store.windows(self.name) if self.store is not None else {}
            )
            firings = await self._evaluate(engine, old_size, leaves)
            windows = engine.windows
        new_state = LogState(
            self.origin, seen.size, seen.root_hash, seen.note, builder.edge_blob(), now, now
        )
        self._put_state(new_state, windows)
        for firing in firings:
            await self._content_alert(firing, seen)
        await self._after(new_state)

    async def _bundle_alert(self, seen: Trusted, r: Recomputed) -> None:
        m = r.bundles[0] if r.bundles else None
        tiles0 = [t for t in r.tiles if t.ref.level == 0]
        fields: dict[str, Any] = {"checkpoint": note_text(seen.note)}
        node: tuple[int, int] | None = None
        bundle_ref: TileRef | None = None
        if m is not None:
            node = (0, m.ref.index * TILE_WIDTH + m.position)
            bundle_ref = m.ref
        elif tiles0:
            t = tiles0[0]
            node = (0, t.ref.index * TILE_WIDTH + t.position)
            bundle_ref = TileRef(0, t.ref.index, t.ref.width, entries=True)
        elif r.tiles:
            t = r.tiles[0]  # the entries and their level-0 tiles were both altered
            node = (t.ref.level * TILE_HEIGHT, t.ref.index * TILE_WIDTH + t.position)
            if node[0] == TILE_HEIGHT:
                bundle_ref = TileRef(0, node[1], TILE_WIDTH, entries=True)
        reason = (
            f"the entries the log serves do not give the root of its checkpoint of size {seen.size}"
        )
        if node is not None and bundle_ref is not None:
            proof = await self._node_proof(seen, node, overrides={})
            data = await self._raw(bundle_ref)
            fields.update(
                {
                    "bundle": bundle_ref.path,
                    "bundle_data": b64(data),
                    "node": list(node),
                    "expected": b64(proof[0]) if proof else "",
                    "path": hash_list(proof[1]) if proof else [],
                }
            )
            where = (
                m.reason
                if m is not None
                else f"entry {node[1] << node[0]} differs from the tree's leaf"
            )
            reason += f": {bundle_ref.path}: {where}"
        await self._alert(
            "bundle_mismatch",
            _fp(seen.note, str(node)),
            reason,
            fields,
            {"size": seen.size, "node": list(node) if node else None},
        )

    async def _tile_alert(self, seen: Trusted, m: Mismatch, r: Recomputed) -> None:
        assert m.recomputed is not None
        node = (m.ref.level * TILE_HEIGHT, m.ref.index * TILE_WIDTH + m.position)
        overrides = {(t.ref.level, t.ref.index): t.recomputed for t in r.tiles if t.recomputed}
        proof = await self._node_proof(seen, node, overrides=overrides)
        fields = {
            "checkpoint": note_text(seen.note),
            "tile": m.ref.path,
            "tile_data": b64(m.served),
            "node": list(node),
            "expected": b64(proof[0])
            if proof
            else b64(m.recomputed[m.position * 32 : m.position * 32 + 32]),
            "path": hash_list(proof[1]) if proof else [],
        }
        await self._alert(
            "tile_mismatch",
            _fp(m.ref.path, m.served),
            f"tile {m.ref.path} served for size {seen.size} differs from the hashes recomputed "
            f"from the entries: {m.reason}",
            fields,
            {"size": seen.size, "tile": m.ref.path},
        )

    async def _node_proof(
        self,
        seen: Trusted,
        node: tuple[int, int],
        overrides: Mapping[tuple[int, int], bytes | None],
    ) -> tuple[bytes, tuple[bytes, ...]] | None:
        """The hash of ``node`` in the signed tree and its path, from tiles, self-checked."""
        level, index = node
        size = seen.size
        wanted: dict[TileRef, None] = {}

        def dry(ref: TileRef) -> bytes:
            wanted[ref] = None
            return bytes(ref.width * HASH_SIZE)

        def compute(reader: TileHashReader) -> tuple[bytes, tuple[bytes, ...]]:
            h = reader.read_hashes([node])[0]
            return h, prove_node_inclusion(level, index, size, reader)

        try:
            compute(TileHashReader(size, dry))
            tiles: dict[TileRef, bytes] = {}
            for ref in wanted:
                o = overrides.get((ref.level, ref.index))
                tiles[ref] = o[: ref.width * HASH_SIZE] if o else await self._raw(ref)
            h, path = compute(TileHashReader(size, tiles.__getitem__))
            if root_from_node_proof(level, index, size, h, path) == seen.root_hash:
                return h, path
        except (TranslogError, KeyError):
            pass
        return None

    async def _raw(self, ref: TileRef) -> bytes:
        limit = MAX_BUNDLE_BYTES if ref.entries else ref.width * HASH_SIZE
        resp = await self.transport.request(
            "GET", "/" + ref.path, auth=self.config.read_token, limit=limit
        )
        return resp.body

    # -- content rules -----------------------------------------------------------------------

    async def _evaluate(self, engine: RuleEngine, first: int, leaves: list[bytes]) -> list[Firing]:
        entries = []
        for k, raw in enumerate(leaves):
            try:
                entries.append(leaf_entry(first + k, raw))
            except VerificationError:
                self.translog_leaves = False
                self._warn(
                    "leaves",
                    f"log {self.name}: entry {first + k} is not a translog leaf; content rules "
                    "are skipped for this log",
                )
                return []
        committed = [e for e in entries if e["kind"] == "committed"]
        if committed:
            try:
                await self.entry_reader.fill_payloads(committed)
            except (AuthError, ForbiddenError) as e:
                self._warn(
                    "token",
                    f"log {self.name}: committed payloads cannot be read ({e}); set read_token "
                    "for content rules on committed entries",
                )
        firings: list[Firing] = []
        for item in entries:
            doc = parse_payload(item["payload"])
            if doc is not None:
                firings += engine.feed(item["index"], item["timestamp"], doc)
        return firings

    async def _content_alert(self, firing: Firing, seen: Trusted) -> None:
        cp = VerifiedCheckpoint(
            open_checkpoint(seen.note, self.verifier)[0], seen.note, frozenset()
        )
        items = []
        for hit in firing.hits:
            e = (await self.client.entries(hit.index, hit.index + 1, checkpoint=cp))[0]
            proof = await self.proofs.verified_inclusion(hit.index, e["leaf_hash"], cp)
            item = {
                "index": hit.index,
                "leaf": b64(e["leaf"]),
                "payload": b64(e["payload"] or b""),
                "inclusion_proof": hash_list(proof),
            }
            if e["salt"] is not None:
                item["salt"] = b64(e["salt"])
            items.append(item)
        rule = firing.rule
        group = f" ({rule.group_by} = {firing.group})" if rule.group_by else ""
        count = (
            f"{len(firing.hits)} matches in {rule.window_ms // 1000} s"
            if rule.threshold
            else "a match"
        )
        await self._alert(
            "content_rule",
            _fp(rule.name, *[h.index for h in firing.hits]),
            f"rule {rule.name!r}: {count}{group}, entries "
            + ", ".join(str(h.index) for h in firing.hits),
            {"rule": _rule_json(rule), "checkpoint": note_text(seen.note), "entries": items},
            {"rule": rule.name, "group": firing.group, "indexes": [h.index for h in firing.hits]},
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(f"translog monitor: {message}", file=sys.stderr, flush=True)

    # -- freshness, availability, promises ---------------------------------------------------

    async def _after(self, state: LogState) -> None:
        """Checks that run on every successful poll: staleness and promises."""
        now = self.clock()
        n = self.config.stale_after_intervals
        final = self.final
        if final is not None and (state.size, state.root) == (final.size, final.root_hash):
            n = 0  # frozen: the final checkpoint never changes again
        elif final is not None and state.size > final.size:
            self._warn(
                "frozen-grew",
                f"log {self.name}: frozen at size {final.size} by the log list, but it now "
                f"serves size {state.size}",
            )
        if n:
            allowed = int(n * self.config.interval_seconds * 1000)
            if now - state.changed_at > allowed:
                await self._alert(
                    "stale",
                    _fp(state.note, state.changed_at),
                    f"the checkpoint (size {state.size}) has not changed for "
                    f"{(now - state.changed_at) / 1000:.1f} s, over {n} intervals "
                    f"({allowed / 1000:.1f} s)",
                    {
                        "checkpoint": note_text(state.note),
                        "unchanged_since": state.changed_at,
                        "stale_after_ms": allowed,
                    },
                    {"size": state.size, "unchanged_since": state.changed_at},
                    now=now,
                )
        await self._check_promises(state, self._observed_at)

    async def _unreachable(self, error: str) -> None:
        now = self.clock()
        a = self._get_availability()
        a = Availability(
            (a.failures if a else 0) + 1, a.since if a else now, a.alerted if a else False, error
        )
        if a.failures >= UNAVAILABLE_AFTER and not a.alerted:
            state = self.state()
            await self._alert(
                "unavailable",
                _fp(a.since),
                f"the log did not answer {a.failures} polls in a row since "
                f"{a.since} ({error}); this is unavailability, not tampering",
                {
                    "error": error,
                    "since": a.since,
                    "failures": a.failures,
                    "last_checkpoint": note_text(state.note) if state else None,
                },
                {"failures": a.failures, "since": a.since},
                now=now,
            )
            a = Availability(a.failures, a.since, True, error)
        self._set_availability(a)

    async def _reachable(self, note: bytes) -> None:
        a = self._get_availability()
        if a is None:
            return
        self._set_availability(None)
        if a.alerted:
            await self._alert(
                "available",
                _fp("back", a.since),
                f"the log answers again after {a.failures} failed polls",
                {"since": a.since, "checkpoint": note_text(note)},
                {"failures": a.failures},
            )

    def _get_availability(self) -> Availability | None:
        if self.store is None:
            return self._availability
        return self.store.availability(self.name)

    def _set_availability(self, a: Availability | None) -> None:
        if self.store is None:
            self._availability = a
            return
        with self.store.transaction():
            self.store.put_availability(self.name, a)

    def load_promises(self) -> int:
        """Read new promise files from ``promises_dir``; return how many were added."""
        d = self.config.promises_dir
        if d is None or self.store is None or not d.is_dir():
            return 0
        added = 0
        for path in sorted(d.glob("*.json")):
            try:
                obj = json.loads(path.read_bytes())
            except (OSError, ValueError):
                self._warn(f"promise:{path}", f"couldn't read promise file {path}")
                continue
            raws = obj.get("promises", [obj]) if isinstance(obj, dict) else []
            for raw in raws:
                try:
                    p = parse_promise(raw)
                    verify_promise(p, self.config.vkey)
                except (MalformedError, VerificationError) as e:
                    self._warn(f"promise:{path}", f"promise file {path}: {e}")
                    continue
                body = json.dumps(format_promise(p))
                rec = PromiseRecord(
                    p.leaf_hash, p.timestamp_ms, p.deadline_ms, body, "pending", None
                )
                with self.store.transaction():
                    added += self.store.add_promise(self.name, rec)
        return added

    async def _check_promises(self, state: LogState, observed_at: int) -> None:
        """Judge the promises due by ``observed_at``, when the log's checkpoint was fetched.

        The checkpoint the log published after a promise's deadline (plus the grace) must hold
        its entry; one fetched earlier proves nothing either way.
        """
        if self.store is None:
            return
        self.load_promises()
        grace = int(self.config.promise_grace_seconds * 1000)
        for p in self.store.promises(self.name):
            if p.deadline + grace >= observed_at or state.size == 0:
                continue
            await self._judge_promise(p, state, self.clock())

    async def _judge_promise(self, p: PromiseRecord, state: LogState, now: int) -> None:
        assert self.store is not None
        cp = VerifiedCheckpoint(
            open_checkpoint(state.note, self.verifier)[0], state.note, frozenset()
        )
        lo = await self.client.first_index_at_or_after(p.timestamp, checkpoint=cp)
        hi = await self.client.first_index_at_or_after(p.timestamp + 1, checkpoint=cp)
        start = max(lo - 1, 0)
        end = min(hi + 1, state.size)
        leaves = await self.client.leaves(start, end, checkpoint=cp)
        for k, leaf in enumerate(leaves):
            if leaf_hash(leaf) == p.leaf_hash:
                with self.store.transaction():
                    self.store.set_promise(self.name, p.leaf_hash, "kept", start + k)
                return
        closed = hi < state.size
        proof = await self.proofs.fetcher.with_tiles(
            state.size, lambda r: prove_range(start, end, state.size, r)
        )
        await self._alert(
            "broken_promise",
            _fp(p.leaf_hash),
            f"the promised leaf {b64(p.leaf_hash)} (accepted {p.timestamp}, deadline "
            f"{p.deadline}) is not in the tree of size {state.size}"
            + ("; later entries are sequenced without it" if closed else ""),
            {
                "promise": json.loads(p.body),
                "checkpoint": note_text(state.note),
                "start": start,
                "leaves": [b64(x) for x in leaves],
                "range_proof": hash_list(proof[0]),
            },
            {"leaf_hash": b64(p.leaf_hash), "deadline": p.deadline, "size": state.size},
            now=now,
        )
        with self.store.transaction():
            self.store.set_promise(self.name, p.leaf_hash, "broken", None)

    # -- alerts ------------------------------------------------------------------------------

    async def _alert(
        self,
        kind: str,
        fingerprint: str,
        reason: str,
        fields: dict[str, Any],
        details: dict[str, Any] | None = None,
        now: int | None = None,
    ) -> Alert | None:
        detected = now if now is not None else self.clock()
        ev = evidence(kind, self.origin, self.config.url, detected, reason, **fields)
        return await self.reporter.raise_alert(
            kind=kind,
            log=self.name,
            origin=self.origin,
            url=self.config.url,
            fingerprint=fingerprint,
            message=reason,
            evidence=ev,
            details=details,
            now=detected,
        )


def _proof_rebuilds(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether a proof from tiles joins the tiles' own old root to the signed new root.

    If it does, a different signed old root is a fork, proven; if not, the tiles are bad.
    """
    try:
        verify_consistency(old_size, new_size, old_root, new_root, proof)
    except InvalidProofError:
        return False
    return True


def _rule_json(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": rule.name,
        "match": {path: list(values) for path, values in rule.match},
        "threshold": rule.threshold,
        "window_ms": rule.window_ms,
    }
    if rule.group_by is not None:
        out["group_by"] = rule.group_by
    return out


# -- the recomputation pipeline -------------------------------------------------------------


async def _in_order(
    transport: Transport,
    refs: Sequence[TileRef],
    auth: str | None,
    window: int,
    pipeline: Pipeline | None = None,
) -> AsyncIterator[tuple[TileRef, bytes]]:
    """Fetch ``refs`` with up to ``window`` requests in flight; yield them in order.

    With a ``pipeline`` the requests go through it first; any it cannot answer (an error
    status, a dropped connection) is retried through ``transport``.
    """

    async def get(ref: TileRef) -> bytes:
        limit = MAX_BUNDLE_BYTES if ref.entries else ref.width * HASH_SIZE
        if pipeline is not None:
            try:
                return await pipeline.get("/" + ref.path, limit)
            except PipelineError:
                pass
        resp = await transport.request(
            "GET", "/" + ref.path, auth=auth, limit=limit, headers=_IDENTITY
        )
        return resp.body

    pending: collections.deque[tuple[TileRef, asyncio.Task[bytes]]] = collections.deque()
    it = iter(refs)
    try:
        for ref in it:
            pending.append((ref, asyncio.ensure_future(get(ref))))
            if len(pending) >= window:
                break
        while pending:
            ref, task = pending.popleft()
            data = await task
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, asyncio.ensure_future(get(nxt))))
            yield ref, data
    finally:
        for _, task in pending:
            task.cancel()


_IDENTITY = {"Accept-Encoding": "identity"}
"""Hashes and leaf commitments barely compress; gzip would cost the log more CPU than it saves
on loopback or a LAN (measured in benchmarks/bench_audit.py)."""


def _first_diff(a: bytes, b: bytes, unit: int) -> int:
    n = min(len(a), len(b))
    for i in range(0, n, unit):
        if a[i : i + unit] != b[i : i + unit]:
            return i // unit
    return n // unit


async def recompute(
    transport: Transport,
    auth: str | None,
    builder: TreeBuilder,
    old_size: int,
    new_size: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    window: int = FETCH_WINDOW,
    on_bundle: Callable[[int, list[bytes]], None] | None = None,
    pipelined: bool = True,
) -> Recomputed:
    """Extend ``builder`` (at ``old_size``) to ``new_size`` from the log's entry bundles.

    Every bundle and every hash tile of the new size that changed since ``old_size`` is fetched
    and compared with the recomputation. ``on_bundle(first_index, leaves)`` receives the new
    leaves when given (content rules). Transport failures raise ``NetworkError``.
    """
    if builder.size != old_size or new_size < old_size:
        raise MalformedError(f"cannot recompute from size {builder.size} to {new_size}")
    out = Recomputed(b"", builder)
    if new_size == old_size:
        out.root = builder.root()
        return out
    first_b = old_size // TILE_WIDTH
    last_b = (new_size - 1) // TILE_WIDTH
    refs: list[TileRef] = []
    for b in range(first_b, last_b + 1):
        width = min(TILE_WIDTH, new_size - b * TILE_WIDTH)
        refs.append(TileRef(0, b, width, entries=True))
        refs.append(TileRef(0, b, width))
    pipeline = (
        Pipeline(transport.url, auth, timeout=transport.timeout)
        if pipelined and len(refs) > 8
        else None
    )
    try:
        return await _recompute(
            transport, auth, builder, old_size, new_size, refs, out, progress, window,
            on_bundle, pipeline,
        )  # fmt: skip
    finally:
        if pipeline is not None:
            await pipeline.close()


async def _recompute(
    transport: Transport,
    auth: str | None,
    builder: TreeBuilder,
    old_size: int,
    new_size: int,
    refs: list[TileRef],
    out: Recomputed,
    progress: Callable[[int, int], None] | None,
    window: int,
    on_bundle: Callable[[int, list[bytes]], None] | None,
    pipeline: Pipeline | None,
) -> Recomputed:
    first_b = old_size // TILE_WIDTH
    total = new_size - old_size
    done = 0
    upper: list[tuple[TileRef, bytes]] = []
    bundle: bytes = b""
    async for ref, data in _in_order(transport, refs, auth, window, pipeline):
        if ref.entries:
            bundle = data
            continue
        b = ref.index
        skip = old_size - b * TILE_WIDTH if b == first_b else 0
        bref = TileRef(0, b, ref.width, entries=True)
        try:
            hashes, count = bundle_leaf_hashes(bundle)
        except MalformedError as e:
            hashes, count = b"", -1
            _note(out.bundles, Mismatch(bref, bundle, None, 0, f"does not decode: {e}"))
        if count >= 0 and count != ref.width:
            pos = _first_diff(hashes, data, HASH_SIZE)
            _note(
                out.bundles,
                Mismatch(bref, bundle, None, pos, f"holds {count} entries, {ref.width} expected"),
            )
        prefix = builder.level0()
        if count >= 0 and hashes[: skip * HASH_SIZE] != prefix:
            pos = _first_diff(hashes, prefix, HASH_SIZE)
            _note(
                out.bundles,
                Mismatch(bref, bundle, None, pos, f"entry {b * TILE_WIDTH + pos} changed"),
            )
        if hashes != data:
            pos = _first_diff(hashes, data, HASH_SIZE)
            _note(out.tiles, Mismatch(ref, data, hashes, pos, f"hash {pos} differs"))
        if count != ref.width:
            # Keep the tree aligned with the tile so the other tiles can still be checked.
            hashes = data if len(data) == ref.width * HASH_SIZE else bytes(ref.width * HASH_SIZE)
        if on_bundle is not None and count == ref.width:
            on_bundle(b * TILE_WIDTH + skip, decode_bundle(bundle)[skip:])
        upper += [t for t in builder.extend(hashes[skip * HASH_SIZE :]) if t[0].level > 0]
        done += ref.width - skip
        if progress is not None:
            progress(done, total)
        if len(upper) >= 8:
            await _compare_upper(transport, auth, upper, out)
            upper = []
    upper += [t for t in builder.partial_tiles() if t[0].level > 0]
    await _compare_upper(transport, auth, upper, out, new_size=new_size, old_size=old_size)
    out.root = builder.root()
    out.entries = total
    return out


def _note(into: list[Mismatch], m: Mismatch) -> None:
    if len(into) < MAX_MISMATCHES:
        into.append(m)


async def _compare_upper(
    transport: Transport,
    auth: str | None,
    tiles: list[tuple[TileRef, bytes]],
    out: Recomputed,
    *,
    new_size: int | None = None,
    old_size: int | None = None,
) -> None:
    """Fetch hash tiles above level 0 and compare them with the recomputed ones."""
    todo = []
    for ref, content in tiles:
        if new_size is not None and old_size is not None and ref.width < TILE_WIDTH:
            # A partial tile is new only if this level changed since the old size.
            if (old_size >> (TILE_HEIGHT * ref.level)) == (new_size >> (TILE_HEIGHT * ref.level)):
                continue
            if partial_width(new_size, ref.level) != ref.width:  # pragma: no cover
                continue
        todo.append((ref, content))
    async for ref, data in _in_order(transport, [r for r, _ in todo], auth, FETCH_WINDOW):
        content = dict(todo)[ref]
        if data != content:
            pos = _first_diff(content, data, HASH_SIZE)
            _note(out.tiles, Mismatch(ref, data, content, pos, f"hash {pos} differs"))
