"""translog.core.tiles: C2SP tlog-tiles paths, widths, tile contents, entry bundles,
TileHashReader."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.vectors import load_json
from translog.core.merkle import MemoryHashes, prove_consistency, prove_inclusion, tree_hash
from translog.core.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    TileHashReader,
    TileRef,
    check_tile_available,
    decode_bundle,
    encode_bundle,
    format_index,
    parse_tile_path,
    partial_width,
    read_tile,
    tile_nodes,
    tiles_for_size,
)
from translog.errors import MalformedError, NotFoundError, TooLargeError

EXAMPLES = load_json("c2sp/tlog_tiles_examples.json")


def _leaves(n: int) -> list[bytes]:
    # Distinct 32-byte values; the tile code never looks inside them. sha256 keeps it fast.
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", EXAMPLES["tile_index_path_encoding"]["cases"], ids=lambda c: str(c["n"])
)
def test_index_encoding_examples(case: dict[str, Any]) -> None:
    assert format_index(case["n"]) == case["path"]
    assert parse_tile_path(f"tile/0/{case['path']}") == TileRef(0, case["n"], 256)


@pytest.mark.parametrize(
    "case", EXAMPLES["tile_index_path_encoding"]["invalid_paths"], ids=lambda c: c["path"]
)
def test_index_encoding_invalid_examples(case: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        parse_tile_path(f"tile/0/{case['path']}")


@pytest.mark.parametrize(
    ("n", "want"),
    [(0, "000"), (5, "005"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067")],
)
def test_format_index(n: int, want: str) -> None:
    assert format_index(n) == want


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        (TileRef(0, 0, 256), "tile/0/000"),
        (TileRef(0, 1234067, 256), "tile/0/x001/x234/067"),
        (TileRef(0, 1234, 17), "tile/0/x001/234.p/17"),
        (TileRef(2, 5, 1), "tile/2/005.p/1"),
        (TileRef(63, 0, 255), "tile/63/000.p/255"),
        (TileRef(0, 5, 256, entries=True), "tile/entries/005"),
        (TileRef(0, 1000, 3, entries=True), "tile/entries/x001/000.p/3"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_paths_round_trip(ref: TileRef, path: str) -> None:
    assert ref.path == path
    assert parse_tile_path(path) == ref


MALFORMED_PATHS = [
    "",
    "tile",
    "tile/0",
    "tile/0/",
    "/tile/0/000",
    "tiles/0/000",
    "tile/0/000/",
    "tile//0/000",
    "tile/00/000",
    "tile/01/000",
    "tile/+1/000",
    "tile/-1/000",
    "tile/64/000",
    "tile/1e1/000",
    "tile/x/000",
    "tile/ 0/000",
    "tile/٣/000",  # Arabic-Indic digit three
    "tile/0/5",
    "tile/0/05",
    "tile/0/0005",
    "tile/0/x005",
    "tile/0/001/000",
    "tile/0/x1/000",
    "tile/0/x0001/000",
    "tile/0/X001/000",
    "tile/0/x000/005",  # non-canonical: leading zero group
    "tile/0/x001//000",
    "tile/0/x001/000/",
    "tile/0/+01",
    "tile/0/-01",
    "tile/0/0_1",
    "tile/0/١٢٣",  # Arabic-Indic digits
    "tile/0/x123/x456/x789/x012/x345/x678/x901/234",  # 8 groups: beyond 2**63
    "tile/0/x009/x300/x000/x000/x000/x000/000",  # 9.3e18 > 2**63 - 1
    "tile/0/000.p",
    "tile/0/000.p/",
    "tile/0/000.p/0",
    "tile/0/000.p/00",
    "tile/0/000.p/017",
    "tile/0/000.p/256",
    "tile/0/000.p/+5",
    "tile/0/000.p/5/",
    "tile/0/000.p/5/6",
    "tile/0/000.x/5",
    "tile/0/000p/5",
    "tile/0/.p/5",
    "tile/0/x001.p/5/000",
    "tile/entries",
    "tile/entries/",
    "tile/entries/5",
    "tile/entries/000.p/256",
    "tile/Entries/000",
    "tile/" + "1" * 5000 + "/000",  # longer than int() accepts: must still be MalformedError
    "tile/0/000.p/" + "1" * 5000,
]


@pytest.mark.parametrize("path", MALFORMED_PATHS, ids=lambda p: repr(p[:40]))
def test_malformed_paths_rejected(path: str) -> None:
    with pytest.raises(MalformedError):
        parse_tile_path(path)


def test_largest_index_accepted() -> None:
    n = 2**63 - 1
    assert parse_tile_path(f"tile/0/{format_index(n)}").index == n
    with pytest.raises(MalformedError):
        format_index(n + 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"level": 64, "index": 0, "width": 256},
        {"level": -1, "index": 0, "width": 256},
        {"level": 0, "index": -1, "width": 256},
        {"level": 0, "index": 0, "width": 0},
        {"level": 0, "index": 0, "width": 257},
        {"level": 1, "index": 0, "width": 256, "entries": True},
    ],
    ids=repr,
)
def test_tile_ref_rejects_bad_coordinates(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        TileRef(**kwargs)


tile_refs = st.builds(
    TileRef,
    level=st.integers(0, 63),
    index=st.one_of(st.integers(0, 5000), st.integers(0, 2**63 - 1)),
    width=st.integers(1, 256),
    entries=st.just(False),
) | st.builds(
    TileRef,
    level=st.just(0),
    index=st.integers(0, 2**63 - 1),
    width=st.integers(1, 256),
    entries=st.just(True),
)


@settings(max_examples=300, deadline=None)
@given(tile_refs)
def test_parse_format_round_trip(ref: TileRef) -> None:
    assert parse_tile_path(ref.path) == ref
    assert parse_tile_path(ref.path).path == ref.path


path_like = st.lists(
    st.sampled_from(["tile", "entries", "0", "1", "63", "64", "x001", "005", "000", ".p", "17"])
    | st.text(alphabet="0123456789x.p/+-_ ٣", max_size=6),
    max_size=6,
).map("/".join)


@settings(max_examples=300, deadline=None)
@given(path_like | st.text(max_size=30))
def test_parse_accepts_only_canonical_paths(path: str) -> None:
    # Anything parse accepts must format back to exactly the same string; anything else must
    # be MalformedError (never ValueError, IndexError, ...).
    try:
        ref = parse_tile_path(path)
    except MalformedError:
        return
    assert ref.path == path


# --- widths and tile counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", EXAMPLES["tiles_for_tree_size"], ids=lambda c: f"size-{c['tree_size']}"
)
def test_tiles_for_size_matches_spec_counts(case: dict[str, Any]) -> None:
    size = case["tree_size"]
    refs = tiles_for_size(size)
    levels = sorted(k for k in case if k.startswith("level"))
    assert {r.level for r in refs} == {int(k.removeprefix("level")) for k in levels}
    for key in levels:
        level = int(key.removeprefix("level"))
        want = case[key]
        full = [r for r in refs if r.level == level and r.width == TILE_WIDTH]
        partial = [r for r in refs if r.level == level and r.width < TILE_WIDTH]
        assert len(full) == want["full"], key
        assert [r.width for r in partial] == (
            [want["partial_width"]] if want["partial_width"] else []
        )
        assert partial_width(size, level) == (want["partial_width"] or 0)
        assert [r.index for r in full + partial] == list(range(len(full) + len(partial)))


def test_tiles_for_size_edges() -> None:
    assert tiles_for_size(0) == []
    assert tiles_for_size(1) == [TileRef(0, 0, 1)]
    assert tiles_for_size(255) == [TileRef(0, 0, 255)]
    assert tiles_for_size(257) == [TileRef(0, 0, 256), TileRef(0, 1, 1), TileRef(1, 0, 1)]
    assert tiles_for_size(70000, entries=True)[-1] == TileRef(0, 273, 112, entries=True)
    assert len(tiles_for_size(70000, entries=True)) == 274


def test_partial_width_formula() -> None:
    assert partial_width(70000, 0) == 112
    assert partial_width(70000, 1) == 17
    assert partial_width(70000, 2) == 1
    assert partial_width(70000, 3) == 0
    assert partial_width(256, 0) == 0


# --- tile contents ----------------------------------------------------------------------------

TREE_1000 = MemoryHashes(_leaves(1000))


def test_tile_nodes() -> None:
    assert tile_nodes(TileRef(0, 2, 3)) == [(0, 512), (0, 513), (0, 514)]
    assert tile_nodes(TileRef(1, 0, 2)) == [(8, 0), (8, 1)]
    assert len(tile_nodes(TileRef(2, 1, 256))) == 256
    with pytest.raises(MalformedError):
        tile_nodes(TileRef(0, 0, 256, entries=True))


def test_read_tile_on_memory_tree() -> None:
    full = read_tile(TileRef(0, 1, 256), TREE_1000)
    assert len(full) == 8192
    assert full[:32] == TREE_1000.read_hashes([(0, 256)])[0]
    partial = read_tile(TileRef(0, 3, 1000 - 768), TREE_1000)
    assert partial == b"".join(TREE_1000.read_hashes([(0, i) for i in range(768, 1000)]))
    level1 = read_tile(TileRef(1, 0, 3), TREE_1000)
    # Each level-1 hash is the root of a full level-0 tile.
    for i in range(3):
        assert level1[32 * i : 32 * (i + 1)] == tree_hash(256, _Shifted(TREE_1000, i * 256))
    with pytest.raises(NotFoundError):
        read_tile(TileRef(0, 3, 256), TREE_1000)


class _Shifted:
    """A reader for the 256 leaves starting at ``offset`` of another tree, seen as a tree."""

    def __init__(self, inner: MemoryHashes, offset: int) -> None:
        self.inner, self.offset = inner, offset

    def read_hashes(self, nodes: Any) -> list[bytes]:
        return self.inner.read_hashes([(lv, i + (self.offset >> lv)) for lv, i in nodes])


@pytest.mark.parametrize(
    ("ref", "ok_from"),
    [
        (TileRef(0, 0, 256), 256),
        (TileRef(0, 0, 17), 17),
        (TileRef(0, 1, 1), 257),
        (TileRef(1, 0, 1), 256),
        (TileRef(1, 0, 256), 65536),
        (TileRef(1, 2, 5), (2 * 256 + 5) * 256),
        (TileRef(2, 0, 1), 65536),
        (TileRef(0, 3, 4, entries=True), 3 * 256 + 4),
    ],
    ids=lambda v: v.path if isinstance(v, TileRef) else str(v),
)
def test_check_tile_available(ref: TileRef, ok_from: int) -> None:
    with pytest.raises(NotFoundError):
        check_tile_available(ref, ok_from - 1)
    check_tile_available(ref, ok_from)
    check_tile_available(ref, ok_from * 3)


# --- entry bundles ----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40))
def test_bundle_round_trip(entries: list[bytes]) -> None:
    data = encode_bundle(entries)
    assert len(data) == sum(2 + len(e) for e in entries)
    assert decode_bundle(data) == entries


def test_bundle_layout_and_limits() -> None:
    assert encode_bundle([b"ab", b"", b"c"]) == b"\x00\x02ab\x00\x00\x00\x01c"
    big = b"x" * 65535
    assert decode_bundle(encode_bundle([big])) == [big]
    with pytest.raises(TooLargeError):
        encode_bundle([b"ok", b"x" * 65536])
    assert decode_bundle(b"") == []


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\x00\x02a", b"\x00\x01a\x00", b"\x00\x01a\x00\x05abcd", b"\xff\xff" + b"x" * 10],
    ids=repr,
)
def test_truncated_bundles_rejected(data: bytes) -> None:
    with pytest.raises(MalformedError):
        decode_bundle(data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=50), min_size=1, max_size=10), st.data())
def test_any_truncation_rejected(entries: list[bytes], data: st.DataObject) -> None:
    encoded = encode_bundle(entries)
    # Cutting anywhere except at an entry boundary must fail.
    boundaries = {0}
    pos = 0
    for e in entries:
        pos += 2 + len(e)
        boundaries.add(pos)
    cut = data.draw(st.integers(1, len(encoded) - 1).filter(lambda c: c not in boundaries))
    with pytest.raises(MalformedError):
        decode_bundle(encoded[:cut])


# --- TileHashReader ---------------------------------------------------------------------------


def _fetcher(tree: MemoryHashes, log: list[TileRef]) -> Callable[[TileRef], bytes]:
    """Serve tiles from a tree, refusing any tile the tree's size cannot serve."""

    def fetch(ref: TileRef) -> bytes:
        check_tile_available(ref, tree.size)
        log.append(ref)
        return read_tile(ref, tree)

    return fetch


def _sample(n: int, k: int) -> list[int]:
    step = max(1, n // k)
    return sorted({*range(0, n, step), n - 1})


BIG = MemoryHashes(_leaves(70000))


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 65536, 65537, 70000])
def test_tile_reader_gives_the_same_proofs(size: int) -> None:
    fetched: list[TileRef] = []
    reader = TileHashReader(size, _fetcher(BIG, fetched))
    assert tree_hash(size, reader) == tree_hash(size, BIG)
    for index in _sample(size, 40):
        assert prove_inclusion(index, size, reader) == prove_inclusion(index, size, BIG)
    for old in _sample(size, 40):
        old += 1
        assert prove_consistency(old, size, reader) == prove_consistency(old, size, BIG)
    # Only tiles that exist for this size, the widest one each time, each fetched once.
    assert len(fetched) == len(set(fetched))
    assert set(fetched) <= set(tiles_for_size(size))


def test_tile_reader_reads_every_node_of_a_small_tree() -> None:
    size = 1000
    reader = TileHashReader(size, _fetcher(TREE_1000, []))
    for level in range(10):
        nodes = [(level, i) for i in range(size >> level)]
        assert reader.read_hashes(nodes) == TREE_1000.read_hashes(nodes), f"level {level}"


def test_tile_reader_rejects_missing_nodes_and_bad_tiles() -> None:
    reader = TileHashReader(300, _fetcher(TREE_1000, []))
    for node in [(0, 300), (1, 150), (9, 0), (8, 1), (0, -1), (-1, 0)]:
        with pytest.raises(NotFoundError):
            reader.read_hashes([node])
    short = TileHashReader(300, lambda ref: b"\x00" * (32 * ref.width - 1))
    with pytest.raises(MalformedError):
        short.read_hashes([(0, 0)])


def test_tile_reader_fetches_partial_tile_of_its_size() -> None:
    fetched: list[TileRef] = []
    reader = TileHashReader(300, _fetcher(TREE_1000, fetched))
    reader.read_hashes([(0, 299), (0, 10), (8, 0)])
    # Level 8 is read straight from the level-1 tile, whose partial width for 300 is 1.
    assert fetched == [TileRef(0, 1, 44), TileRef(0, 0, 256), TileRef(1, 0, 1)]
    assert TILE_HEIGHT == 8
