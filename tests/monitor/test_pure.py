"""The pure pieces: tree rebuilding from leaf hashes, node proofs, content-rule windows."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given
from hypothesis import strategies as st

from translog.core.merkle import MemoryHashes, leaf_hash, prove_consistency, tree_hash
from translog.core.node_proof import consistency_roots, prove_node_inclusion, root_from_node_proof
from translog.core.tiles import encode_bundle, read_tile, tiles_for_size
from translog.formats.rules import Hit, RuleEngine, check_firing, rule_from_config
from translog.monitor.recompute import TreeBuilder, bundle_leaf_hashes, split_edge


@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=6))
def test_builder_emits_every_tile_and_root_across_resumes(steps: list[int]) -> None:
    leaves = [os.urandom(8) for _ in range(sum(steps))]
    mh = MemoryHashes()
    builder = TreeBuilder()
    done = 0
    for n in steps:
        chunk = leaves[done : done + n]
        hashes, count = bundle_leaf_hashes(encode_bundle(chunk))
        assert count == n
        emitted = dict(builder.extend(hashes))
        for leaf in chunk:
            mh.append(leaf_hash(leaf))
        done += n
        assert builder.root() == mh.root()
        for ref, data in [*emitted.items(), *builder.partial_tiles()]:
            assert data == read_tile(ref, mh), ref.path
        # Resume from the stored edge, as after a restart.
        builder = TreeBuilder(builder.size, split_edge(builder.size, builder.edge_blob()))
    partial = {ref for ref, _ in builder.partial_tiles()}
    assert partial == {r for r in tiles_for_size(done) if r.width < 256}


def test_node_proofs_and_consistency_roots_on_small_trees() -> None:
    for n in range(1, 140, 7):
        mh = MemoryHashes([hashlib.sha256(bytes([i])).digest() for i in range(n)])
        root = mh.root()
        for level in range(0, 8):
            for k in range(n >> level):
                node = mh.read_hashes([(level, k)])[0]
                proof = prove_node_inclusion(level, k, n, mh)
                assert root_from_node_proof(level, k, n, node, proof) == root
        for old in range(1, n):
            proof = prove_consistency(old, n, mh)
            assert consistency_roots(old, n, proof, tree_hash(old, mh)) == (
                tree_hash(old, mh),
                root,
            )


def test_rule_windows_count_per_group_and_fire_once_per_burst() -> None:
    rule = rule_from_config(
        {"name": "r", "match": {"a": "x"}, "group_by": "u", "threshold": 2, "window_seconds": 10},
        "rule",
    )
    engine = RuleEngine([rule])
    fired = []
    events = [(0, 0, "al"), (1, 1000, "bo"), (2, 2000, "al"), (3, 20_000, "al"), (4, 21_000, "al")]
    for i, t, u in events:
        fired += engine.feed(i, t, {"a": "x", "u": u})
    assert fired == []  # al: 2 in the first window, then the window moved on
    fired = engine.feed(5, 22_000, {"a": "x", "u": "al"})
    assert [[h.index for h in f.hits] for f in fired] == [[3, 4, 5]]
    assert engine.windows.get(("r", '"al"')) is None  # counting starts again
    assert engine.windows[("r", '"bo"')] == [Hit(1, 1000)]
    assert engine.feed(6, 23_000, {"a": "y", "u": "al"}) == []
    assert check_firing(rule, [(3, 20_000, {"a": "x", "u": "al"})] * 3) == '"al"'


def test_rule_values_compare_as_json() -> None:
    rule = rule_from_config({"name": "r", "match": {"n": 1, "b.c": [True, "z"]}}, "rule")
    assert rule.matches({"n": 1, "b": {"c": True}})
    assert rule.matches({"n": 1.0, "b": {"c": "z"}})
    assert not rule.matches({"n": True, "b": {"c": True}})
    assert not rule.matches({"n": "1", "b": {"c": True}})
    assert not rule.matches({"n": 1})
    assert not rule.matches(["n"])
