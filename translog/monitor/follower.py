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
bundle is hashed (:mod:`~translog.monitor.rebuild`).

This module holds the poll itself; the follower's shared state is in
:mod:`~translog.monitor.follower_base`, and the checks it runs in
:mod:`~translog.monitor.consistency` (steps 3 and the gossip hook),
:mod:`~translog.monitor.detections` (the alerts of step 4 and content rules) and
:mod:`~translog.monitor.freshness` (step 5 and availability).
"""

from __future__ import annotations

from collections.abc import Sequence

from translog.client.checkpoints import Trusted
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import EMPTY_ROOT
from translog.errors import (
    MalformedError,
    NetworkError,
    PushbackError,
    TilesUnusableError,
    VerificationError,
)
from translog.formats.evidence import note_text
from translog.formats.rules import Firing, RuleEngine
from translog.monitor.alerts import Alert
from translog.monitor.consistency import ConsistencyChecks, Finding
from translog.monitor.detections import Detections
from translog.monitor.follower_base import fingerprint_of
from translog.monitor.freshness import UNAVAILABLE_AFTER, FreshnessChecks
from translog.monitor.rebuild import recompute
from translog.monitor.recompute import TreeBuilder, split_edge
from translog.monitor.store import Availability, LogState


class Follower(ConsistencyChecks, Detections, FreshnessChecks):
    """Follows one log (see the module docstring)."""

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
        except TilesUnusableError:
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
                except TilesUnusableError:
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
                fingerprint_of(note),
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
                    fingerprint_of(note),
                    f"checkpoint size {cp.size} does not meet the witness policy: {e}",
                    {"checkpoint": note_text(note), "policy": self.config.policy.read_text()},
                )
                return None
        return Trusted(cp.size, cp.root_hash, note)

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
