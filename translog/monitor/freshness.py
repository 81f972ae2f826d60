"""Checks on every successful poll and on every failed one: staleness, availability, promises.

:class:`FreshnessChecks` raises ``stale`` when the checkpoint has not changed for
``stale_after_intervals``, ``unavailable`` (and ``available``) as the log stops (and starts)
answering, and ``broken_promise`` when a promise past its deadline is not in the tree.
"""

from __future__ import annotations

import json

from translog.client.checkpoints import VerifiedCheckpoint
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import leaf_hash
from translog.core.range_proof import prove_range
from translog.errors import MalformedError, VerificationError
from translog.formats.evidence import b64, hash_list, note_text
from translog.formats.receipt import format_promise, parse_promise, verify_promise
from translog.monitor.follower_base import FollowerBase, fingerprint_of
from translog.monitor.store import Availability, LogState, PromiseRecord

UNAVAILABLE_AFTER = 3
"""Consecutive failed polls before an ``unavailable`` alert."""


class FreshnessChecks(FollowerBase):
    """Staleness, availability and promise checks of a follower."""

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
                    fingerprint_of(state.note, state.changed_at),
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
                fingerprint_of(a.since),
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
                fingerprint_of("back", a.since),
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
            fingerprint_of(p.leaf_hash),
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
