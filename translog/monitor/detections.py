"""Turning what a recomputation or a content rule found into alerts with evidence.

:class:`Detections` raises ``bundle_mismatch`` (entries that do not give the signed root),
``tile_mismatch`` (a served tile that differs from the recomputation, under a root that
verified) and ``content_rule`` alerts, each with the tiles, bundles and proofs that let the
evidence be checked offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from translog.client.answers import leaf_entry
from translog.client.checkpoints import Trusted, VerifiedCheckpoint
from translog.client.fetcher import MAX_BUNDLE_BYTES
from translog.core.checkpoint import open_checkpoint
from translog.core.merkle import HASH_SIZE
from translog.core.node_proof import prove_node_inclusion, root_from_node_proof
from translog.core.tiles import TILE_HEIGHT, TILE_WIDTH, TileHashReader, TileRef
from translog.errors import AuthError, ForbiddenError, TranslogError, VerificationError
from translog.formats.evidence import b64, hash_list, note_text
from translog.formats.rules import Firing, Rule, RuleEngine, parse_payload
from translog.monitor.follower_base import FollowerBase, fingerprint_of
from translog.monitor.rebuild import Mismatch, Recomputed


class Detections(FollowerBase):
    """Alerts for mismatched bundles and tiles and for content rules that fired."""

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
            fingerprint_of(seen.note, str(node)),
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
            fingerprint_of(m.ref.path, m.served),
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
            fingerprint_of(rule.name, *[h.index for h in firing.hits]),
            f"rule {rule.name!r}: {count}{group}, entries "
            + ", ".join(str(h.index) for h in firing.hits),
            {"rule": _rule_json(rule), "checkpoint": note_text(seen.note), "entries": items},
            {"rule": rule.name, "group": firing.group, "indexes": [h.index for h in firing.hits]},
        )


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
