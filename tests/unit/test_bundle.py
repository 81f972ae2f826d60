"""Evidence bundles: build, round-trip, verify, and fail precisely on every kind of tampering.

The log is built in memory (:class:`~translog.core.merkle.MemoryHashes`): 40 leaves whose
timestamps rise in steps of 100 ms every third leaf (so timestamps tie), mixed inline and
committed, with committed payloads present, erased or withheld. The period [1400, 1850] is
indexes [12, 27), with boundary leaves 11 (1300) and 27 (1900).
"""

from __future__ import annotations

import base64
import bisect
import gzip
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from translog.core.checkpoint import Checkpoint, sign_checkpoint
from translog.core.leaf import committed_leaf, inline_leaf
from translog.core.merkle import MemoryHashes, leaf_hash, prove_consistency, tree_hash
from translog.core.note import Note, format_note, parse_note
from translog.core.policy import parse_policy
from translog.core.range_proof import prove_range
from translog.core.signing import CosignatureSigner, NoteSigner
from translog.errors import (
    InconsistencyError,
    InvalidProofError,
    MalformedError,
    TranslogError,
    UnknownKeyError,
    VerificationError,
)
from translog.formats.bundle import Bundle, build_bundle, proof_range
from translog.formats.bundle_json import encode_bundle, format_bundle, parse_bundle
from translog.formats.bundle_verify import verify_bundle

ORIGIN = "bundle.example/log"
SIGNER = NoteSigner.generate(ORIGIN)
VKEY = SIGNER.vkey
WITNESS = CosignatureSigner.generate("witness.example")
SIZE = 40
SIZES = (7, 16, 33, SIZE)
FROM, TO = 1400, 1850


def _ts(i: int) -> int:
    return 1000 + (i // 3) * 100


def _build_log() -> tuple[list[bytes], dict[int, tuple[bytes, bytes] | None]]:
    leaves: list[bytes] = []
    payloads: dict[int, tuple[bytes, bytes] | None] = {}
    for i in range(SIZE):
        payload = json.dumps({"event": "login", "n": i}).encode()
        if i % 4 == 1:
            leaves.append(inline_leaf(_ts(i), payload))
            continue
        salt = bytes([i]) * 32
        leaves.append(committed_leaf(_ts(i), payload, salt))
        if i % 7 == 0:
            payloads[i] = None  # erased
        elif i % 11 != 0:  # multiples of 11 are withheld: missing from the map
            payloads[i] = (payload, salt)
    return leaves, payloads


LEAVES, PAYLOADS = _build_log()
TREE = MemoryHashes(leaf_hash(x) for x in LEAVES)
TIMESTAMPS = [_ts(i) for i in range(SIZE)]


def checkpoint(size: int, *, cosign: bool = False, root: bytes | None = None) -> bytes:
    cp = Checkpoint(ORIGIN, size, root if root is not None else tree_hash(size, TREE))
    if not cosign:
        return sign_checkpoint(cp, SIGNER)
    return sign_checkpoint(cp, SIGNER, WITNESS)


def make(
    from_ms: int = FROM,
    to_ms: int = TO,
    *,
    sizes: tuple[int, ...] = SIZES,
    notes: list[bytes] | None = None,
    payloads: dict[int, tuple[bytes, bytes] | None] | None = None,
) -> Bundle:
    """A bundle for the period as of the last of ``sizes``, built like the exporter does."""
    size = sizes[-1]
    start = bisect.bisect_left(TIMESTAMPS[:size], from_ms)
    end = bisect.bisect_right(TIMESTAMPS[:size], to_ms)
    lo, hi = proof_range(start, end, size)
    return build_bundle(
        origin=ORIGIN,
        from_ms=from_ms,
        to_ms=to_ms,
        start=start,
        end=end,
        leaves=LEAVES[lo:hi],
        payloads=PAYLOADS if payloads is None else payloads,
        checkpoints=notes if notes is not None else [checkpoint(n) for n in sizes],
        consistency_proofs=[
            prove_consistency(a, b, TREE) if a else () for a, b in itertools.pairwise(sizes)
        ],
        range_nodes=prove_range(lo, hi, size, TREE) if size else (),
        generated_at_ms=1_800_000_000_000,
        generator="translog test",
    )


BUNDLE = make()
BUNDLE_JSON: dict[str, Any] = json.loads(encode_bundle(BUNDLE))


def edited(edit: Callable[[dict[str, Any]], None], source: Bundle = BUNDLE) -> bytes:
    obj = json.loads(encode_bundle(source))
    edit(obj)
    return json.dumps(obj).encode()


def check(data: bytes, **kwargs: Any) -> None:
    verify_bundle(parse_bundle(data), VKEY, **kwargs)


def flip(b64: str) -> str:
    """Flip one bit of the last byte of a base64 value."""
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# -- happy paths ---------------------------------------------------------------------------


def test_bundle_verifies_and_reports_what_it_proved() -> None:
    report = verify_bundle(parse_bundle(encode_bundle(BUNDLE)), VKEY)
    assert (report.start, report.end, report.size) == (12, 27, SIZE)
    assert (report.from_ms, report.to_ms) == (FROM, TO)
    assert report.checkpoint_sizes == SIZES
    statuses = [e.payload_status for e in BUNDLE.entries]
    assert report.entries == 15
    assert report.inline == statuses.count("inline") == 4
    assert report.erased == statuses.count("erased") == 1  # 14 (21 is inline)
    assert report.withheld == statuses.count("withheld") == 1  # 22
    assert report.payloads == 15 - 1 - 1
    assert BUNDLE.before is not None and BUNDLE.before.index == 11
    assert BUNDLE.after is not None and BUNDLE.after.index == 27


def test_json_round_trip_is_exact() -> None:
    data = encode_bundle(BUNDLE)
    assert parse_bundle(data) == BUNDLE
    assert encode_bundle(parse_bundle(data)) == data
    assert format_bundle(BUNDLE)["claims"]["authenticated"] is False


def test_gzip_round_trip() -> None:
    data = encode_bundle(BUNDLE, compress=True)
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data) == encode_bundle(BUNDLE)
    assert parse_bundle(data) == BUNDLE
    verify_bundle(parse_bundle(data), VKEY)


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda d: d[:-9], "truncated|corrupt"),
        (lambda d: d[:12] + bytes([d[12] ^ 0xFF]) + d[13:], "corrupt"),
        (lambda d: d + b"junk", "trailing data"),
    ],
    ids=["truncated", "corrupt", "trailing"],
)
def test_damaged_gzip_is_malformed(mangle: Callable[[bytes], bytes], match: str) -> None:
    with pytest.raises(MalformedError, match=match):
        parse_bundle(mangle(encode_bundle(BUNDLE, compress=True)))


def test_unauthenticated_claims_do_not_affect_verification() -> None:
    def edit(obj: dict[str, Any]) -> None:
        obj["claims"]["generated_at"] = 0
        obj["claims"]["generator"] = "someone else"

    verify_bundle(parse_bundle(edited(edit)), VKEY)


def test_period_bounds_may_move_while_the_same_entries_fit() -> None:
    # [1301, 1899] selects the same entries as [1400, 1850]: the bundle proves both periods.
    def edit(obj: dict[str, Any]) -> None:
        obj["claims"]["from"], obj["claims"]["to"] = 1301, 1899

    assert verify_bundle(parse_bundle(edited(edit)), VKEY).from_ms == 1301


@pytest.mark.parametrize(
    ("from_ms", "to_ms", "span"),
    [
        (0, 10**12, (0, SIZE)),  # the whole log: no boundary leaves
        (0, 999, (0, 0)),  # before the first entry: only the after boundary
        (5000, 6000, (SIZE, SIZE)),  # after the last entry: only the before boundary
        (1450, 1499, (15, 15)),  # between two timestamps
        (1400, 1400, (12, 15)),  # one timestamp, three tied entries
    ],
)
def test_edge_periods(from_ms: int, to_ms: int, span: tuple[int, int]) -> None:
    bundle = make(from_ms, to_ms)
    report = verify_bundle(parse_bundle(encode_bundle(bundle)), VKEY)
    assert (report.start, report.end) == span
    assert (bundle.before is None) == (span[0] == 0)
    assert (bundle.after is None) == (span[1] == SIZE)
    assert report.closed == (span[1] != SIZE)


def test_empty_log() -> None:
    bundle = make(0, 10, sizes=(0,))
    assert bundle.range_proof is None and bundle.entries == ()
    report = verify_bundle(parse_bundle(encode_bundle(bundle)), VKEY)
    assert (report.size, report.entries) == (0, 0)


def test_chain_from_an_empty_checkpoint_and_repeated_sizes() -> None:
    verify_bundle(make(sizes=(0, 16, 16, SIZE)), VKEY)


def test_erased_and_withheld_are_counted() -> None:
    bundle = make(payloads={})
    report = verify_bundle(bundle, VKEY)
    assert report.withheld == 11 and report.erased == 0 and report.payloads == 4


def test_build_rejects_wrong_leaf_count_and_no_checkpoint() -> None:
    with pytest.raises(MalformedError, match="expected 17 leaves"):
        build_bundle(
            origin=ORIGIN, from_ms=FROM, to_ms=TO, start=12, end=27, leaves=LEAVES[11:27],
            payloads={}, checkpoints=[checkpoint(SIZE)], consistency_proofs=[], range_nodes=(),
            generated_at_ms=0, generator="",
        )  # fmt: skip
    with pytest.raises(MalformedError, match="at least one checkpoint"):
        build_bundle(
            origin=ORIGIN, from_ms=FROM, to_ms=TO, start=12, end=27, leaves=LEAVES[11:28],
            payloads={}, checkpoints=[], consistency_proofs=[], range_nodes=(),
            generated_at_ms=0, generator="",
        )  # fmt: skip


# -- every field, tampered ---------------------------------------------------------------------


def _scalar_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _scalar_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _scalar_paths(v, (*path, i))
    else:
        yield path


UNAUTHENTICATED = {("claims", "generated_at"), ("claims", "generator")}
FIELD_PATHS = [p for p in _scalar_paths(BUNDLE_JSON) if p not in UNAUTHENTICATED]


def _path_id(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)[1:]


def _mutate(path: tuple[Any, ...], value: Any) -> Any:
    """A change to one field that no honest bundle for the same period could contain."""
    if path == ("claims", "from"):
        return BUNDLE_JSON["before"]["timestamp"]
    if path == ("claims", "to"):
        return BUNDLE_JSON["after"]["timestamp"]
    if path[-1] == "payload_status":
        return "present" if value != "present" else "withheld"
    if path[0] == "checkpoints":
        lines = value.split("\n")
        lines[2] = flip(lines[2])  # the root hash; the signature no longer matches
        return "\n".join(lines)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str) and path[-1] in ("format", "origin"):
        return value + "x"
    return flip(value)


def _expected(path: tuple[Any, ...]) -> tuple[str, ...]:
    """Substrings of which at least one must appear in the failure message."""
    head = path[0]
    # A leaf changed where no payload is at hand is caught by the range proof.
    also = ("range_proof",) if path[-1] == "leaf" else ()
    if head in ("entries", "checkpoints"):
        return (f"{head}[{path[1]}]", *also)
    if head == "consistency_proofs":
        return (f"consistency_proofs[{path[1]}]",)
    if head == "claims":
        return {"from": ("before",), "to": ("after",)}.get(path[1], (path[1],))
    return (head, *also)


def test_every_field_is_covered() -> None:
    heads = {p[0] for p in FIELD_PATHS}
    assert heads == set(BUNDLE_JSON)
    assert len([p for p in FIELD_PATHS if p[0] == "range_proof" and p[1] == "nodes"]) >= 3
    assert len([p for p in FIELD_PATHS if p[0] == "consistency_proofs"]) >= 8
    entry_fields = {p[2] for p in FIELD_PATHS if p[0] == "entries"}
    assert entry_fields == {"index", "leaf", "timestamp", "payload_status", "payload", "salt"}


@pytest.mark.parametrize("path", FIELD_PATHS, ids=_path_id)
def test_tampering_any_field_fails_naming_it(path: tuple[Any, ...]) -> None:
    def edit(obj: dict[str, Any]) -> None:
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = _mutate(path, parent[path[-1]])

    with pytest.raises(TranslogError) as info:
        check(edited(edit))
    message = str(info.value)
    assert message.startswith("bundle."), message
    assert any(name in message for name in _expected(path)), message


# -- precise messages for the important cases ---------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]

    def edit(obj: dict[str, Any]) -> None:
        parent = obj
        for key in keys[:-1]:
            parent = parent[key]
        if value is _DELETE:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = value(parent[keys[-1]]) if callable(value) else value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (_set("format", "translog-bundle/v2"), MalformedError, r"bundle\.format: expected"),
        (_set("origin", "other.example/log"), VerificationError, r"bundle\.origin is"),
        (_set("claims.authenticated", True), MalformedError, r"claims\.authenticated: must be"),
        (_set("claims.from", 2000), MalformedError, r"bundle\.claims: from 2000 is after to"),
        (
            _set("claims.from", 1401),
            VerificationError,
            r"entries\[0\] \(index 12\)\.timestamp 1400 is outside the period \[1401, 1850\]",
        ),
        (
            _set("claims.to", 1799),
            VerificationError,
            r"entries\[12\] \(index 24\)\.timestamp 1800 is outside the period",
        ),
        (
            _set("claims.from", 1300),
            VerificationError,
            r"bundle\.before \(index 11\)\.timestamp 1300 is not before the period start 1300",
        ),
        (
            _set("claims.to", 1900),
            VerificationError,
            r"bundle\.after \(index 27\)\.timestamp 1900 is not after the period end 1900",
        ),
        (
            _set("index_range.start", 13),
            VerificationError,
            r"index_range \[13, 27\) needs 14 entries, got 15",
        ),
        (_set("index_range.end", 26), VerificationError, r"needs 14 entries, got 15"),
        (_set("index_range.start", 28), MalformedError, r"index_range: start 28 is after end 27"),
        (
            _set("entries.3.index", 99),
            VerificationError,
            r"bundle\.entries\[3\]\.index is 99, expected 15: entries must be contiguous",
        ),
        (
            _set("entries.2.timestamp", 1401),
            VerificationError,
            r"entries\[2\] \(index 14\)\.timestamp 1401 differs from the leaf's 1400",
        ),
        (
            _set("entries.0.payload", flip),
            VerificationError,
            r"entries\[0\] \(index 12\)\.payload/\.salt: payload \(\d+ bytes\) and salt do not"
            r" match",
        ),
        (
            _set("entries.0.salt", flip),
            VerificationError,
            r"entries\[0\] \(index 12\)\.payload/\.salt",
        ),
        (
            _set("entries.0.salt", "AAAA"),
            MalformedError,
            r"bundle\.entries\[0\]\.salt: expected 32 bytes, got 3",
        ),
        (
            _set("entries.0.leaf", lambda v: "AA" + v[2:]),
            VerificationError,
            r"entries\[0\] \(index 12\)\.leaf does not decode: unknown leaf version 0",
        ),
        (
            _set("entries.10.leaf", flip),
            InvalidProofError,  # index 22: withheld
            r"bundle\.range_proof: range proof for \[11, 28\) does not match the root of size 40",
        ),
        (
            _set("entries.1.payload_status", "withheld"),
            VerificationError,
            r"entries\[1\] \(index 13\)\.payload_status is 'withheld', but the leaf is inline",
        ),
        (
            _set("entries.10.payload_status", "inline"),
            VerificationError,
            r"entries\[10\] \(index 22\)\.payload_status is 'inline', but the leaf is committed",
        ),
        (
            _set("entries.0.payload_status", "erased"),
            MalformedError,
            r"bundle\.entries\[0\]\.payload: unknown field",
        ),
        (
            _set("entries.0.payload", _DELETE),
            MalformedError,
            r"bundle\.entries\[0\]\.payload: missing",
        ),
        (_set("entries.0.extra", 1), MalformedError, r"bundle\.entries\[0\]\.extra: unknown field"),
        (
            _set("entries.0.payload_status", "lost"),
            MalformedError,
            r"payload_status: expected one of",
        ),
        (
            _set("before", None),
            VerificationError,
            r"bundle\.before: missing: index_range\.start is 12",
        ),
        (_set("after", None), VerificationError, r"bundle\.after: missing: index_range\.end is 27"),
        (_set("before.index", 10), VerificationError, r"bundle\.before\.index is 10, expected 11"),
        (_set("after.index", 28), VerificationError, r"bundle\.after\.index is 28, expected 27"),
        (
            _set("before.timestamp", 1299),
            VerificationError,
            r"bundle\.before \(index 11\)\.timestamp 1299 differs from the leaf's 1300",
        ),
        (_set("after.leaf", flip), InvalidProofError, r"bundle\.range_proof"),
        (_set("range_proof", None), VerificationError, r"bundle\.range_proof: missing"),
        (
            _set("range_proof.start", 12),
            VerificationError,
            r"bundle\.range_proof covers \[12, 28\), expected \[11, 28\)",
        ),
        (
            _set("range_proof.nodes", lambda v: v[:-1]),
            InvalidProofError,
            r"bundle\.range_proof: range proof has wrong length",
        ),
        (
            _set("range_proof.nodes.0", flip),
            InvalidProofError,
            r"bundle\.range_proof: range proof for \[11, 28\) does not match the root",
        ),
        (
            _set("checkpoints", lambda v: [v[1], v[0], *v[2:]]),
            VerificationError,
            r"bundle\.checkpoints\[1\]: size 7 is smaller than the size 16 of checkpoints\[0\]",
        ),
        (
            _set("checkpoints.3", lambda v: v.replace("\n40\n", "\n41\n")),
            VerificationError,
            r"bundle\.checkpoints\[3\] \(final\): .*signature",
        ),
        (
            _set("checkpoints.0", lambda v: v.replace(ORIGIN, "other.example/log")),
            UnknownKeyError,
            r"bundle\.checkpoints\[0\]: checkpoint has no signature by log key",
        ),
        (_set("checkpoints", []), MalformedError, r"bundle\.checkpoints: expected at least one"),
        (
            _set("consistency_proofs", lambda v: v[:-1]),
            MalformedError,
            r"bundle\.consistency_proofs: expected 3 proofs for 4 checkpoints, got 2",
        ),
        (
            _set("consistency_proofs.1.0", flip),
            InvalidProofError,
            r"bundle\.consistency_proofs\[1\] \(checkpoints\[1\] size 16 to "
            r"checkpoints\[2\] size 33\): consistency proof does not match",
        ),
        (
            _set("consistency_proofs.2", lambda v: [*v, v[0]]),
            InvalidProofError,
            r"consistency_proofs\[2\] .*wrong length",
        ),
        (
            _set("consistency_proofs.0.0", "x"),
            MalformedError,
            r"bundle\.consistency_proofs\[0\]\[0\]: invalid base64",
        ),
        (_set("extra", 1), MalformedError, r"bundle\.extra: unknown field"),
        (_set("entries", {}), MalformedError, r"bundle\.entries: expected a list"),
    ],
)
def test_precise_failures(
    edit: Callable[[dict[str, Any]], None], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check(edited(edit))


def test_duplicate_keys_and_nan_are_rejected() -> None:
    data = encode_bundle(BUNDLE).replace(b'"origin": ', b'"origin": "x", "origin": ', 1)
    with pytest.raises(MalformedError, match="duplicate key 'origin'"):
        parse_bundle(data)
    data = encode_bundle(BUNDLE).replace(b'"from": 1400', b'"from": NaN', 1)
    with pytest.raises(MalformedError, match="NaN is not allowed"):
        parse_bundle(data)


def test_a_bundle_for_another_log_fails() -> None:
    other = NoteSigner.generate("other.example/log")
    with pytest.raises(VerificationError, match=r"the vkey is for 'other\.example/log'"):
        verify_bundle(BUNDLE, other.vkey)


# -- completeness: leaving out or reordering entries ---------------------------------------


def _drop_entry(k: int, *, renumber: bool) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        del obj["entries"][k]
        obj["index_range"]["end"] -= 1
        if renumber:
            for e in obj["entries"][k:]:
                e["index"] -= 1
            obj["after"]["index"] -= 1
            obj["range_proof"]["end"] -= 1

    return edit


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (_drop_entry(7, renumber=False), r"entries\[7\]\.index is 20, expected 19"),
        (_drop_entry(7, renumber=True), r"range proof has wrong length|does not match the root"),
        (_drop_entry(14, renumber=True), r"range proof has wrong length|does not match the root"),
    ],
    ids=["middle", "middle-renumbered", "last-renumbered"],
)
def test_a_dropped_entry_fails(edit: Callable[[dict[str, Any]], None], match: str) -> None:
    with pytest.raises(VerificationError, match=match):
        check(edited(edit))


def test_a_dropped_entry_with_a_fresh_range_proof_still_fails() -> None:
    # Even an exporter that recomputes everything cannot hide index 20: the proof covers
    # indexes, so the leaves from 20 on sit one place off and the root differs.
    def edit(obj: dict[str, Any]) -> None:
        _drop_entry(8, renumber=True)(obj)
        lo, hi = obj["range_proof"]["start"], obj["range_proof"]["end"]
        obj["range_proof"]["nodes"] = [
            base64.b64encode(h).decode() for h in prove_range(lo, hi, SIZE, TREE)
        ]

    with pytest.raises(InvalidProofError, match=r"bundle\.range_proof: range proof for \[11, 27\)"):
        check(edited(edit))


def test_dropping_a_boundary_fails() -> None:
    def drop_before(obj: dict[str, Any]) -> None:
        obj["before"] = None
        obj["range_proof"]["start"] = 12

    with pytest.raises(VerificationError, match=r"bundle\.before: missing"):
        check(edited(drop_before))


def test_shrinking_the_period_to_hide_its_first_entry_fails() -> None:
    # Present entry 12 as the "before" boundary: its timestamp is inside the period.
    def edit(obj: dict[str, Any]) -> None:
        first = obj["entries"].pop(0)
        obj["before"] = {k: first[k] for k in ("index", "leaf", "timestamp")}
        obj["index_range"]["start"] = 13
        obj["range_proof"]["start"] = 12
        obj["range_proof"]["nodes"] = [
            base64.b64encode(h).decode() for h in prove_range(12, 28, SIZE, TREE)
        ]

    with pytest.raises(
        VerificationError, match=r"before \(index 12\)\.timestamp 1400 is not before"
    ):
        check(edited(edit))


def test_reordered_pair_fails() -> None:
    def swap(obj: dict[str, Any]) -> None:
        e = obj["entries"]
        e[3], e[4] = e[4], e[3]

    with pytest.raises(VerificationError, match=r"entries\[3\]\.index is 16, expected 15"):
        check(edited(swap))

    def swap_and_renumber(obj: dict[str, Any]) -> None:
        swap(obj)
        e = obj["entries"]
        e[3]["index"], e[4]["index"] = 15, 16

    with pytest.raises(InvalidProofError, match=r"bundle\.range_proof"):
        check(edited(swap_and_renumber))


def test_timestamps_must_not_decrease() -> None:
    # A log that sequenced out of order: leaf 5 is older than leaf 4. Exported honestly,
    # the bundle is still rejected, because completeness rests on ordered timestamps.
    leaves = [inline_leaf(t, b"x") for t in (10, 20, 30, 40, 50, 45, 60)]
    tree = MemoryHashes(leaf_hash(x) for x in leaves)
    bundle = build_bundle(
        origin=ORIGIN, from_ms=15, to_ms=55, start=1, end=6, leaves=leaves,
        payloads={}, checkpoints=[sign_checkpoint(Checkpoint(ORIGIN, 7, tree.root()), SIGNER)],
        consistency_proofs=[], range_nodes=prove_range(0, 7, 7, tree),
        generated_at_ms=0, generator="",
    )  # fmt: skip
    with pytest.raises(
        VerificationError, match=r"entries\[4\] \(index 5\)\.timestamp 45 is before"
    ):
        verify_bundle(bundle, VKEY)


# -- checkpoints: forks and witness policy --------------------------------------------------


def test_two_roots_for_one_size_is_an_inconsistency() -> None:
    forged = checkpoint(16, root=b"\x01" * 32)
    notes = [checkpoint(7), checkpoint(16), forged, checkpoint(33), checkpoint(SIZE)]
    bundle = make(sizes=(7, 16, 16, 33, SIZE), notes=notes)
    with pytest.raises(InconsistencyError, match=r"consistency_proofs\[1\] .*two different roots"):
        verify_bundle(bundle, VKEY)
    with pytest.raises(InconsistencyError) as info:
        verify_bundle(bundle, VKEY)
    assert info.value.older == notes[1] and info.value.newer == forged


def test_a_forked_checkpoint_fails_the_chain() -> None:
    notes = [checkpoint(7), checkpoint(16, root=b"\x01" * 32), checkpoint(33), checkpoint(SIZE)]
    with pytest.raises(InvalidProofError, match=r"consistency_proofs\[0\].*does not match"):
        verify_bundle(make(notes=notes), VKEY)


POLICY = parse_policy(f"log {VKEY}\nwitness w {WITNESS.vkey}\nquorum w\n")


def test_policy_is_required_on_the_final_checkpoint() -> None:
    notes = [checkpoint(n) for n in SIZES[:-1]] + [checkpoint(SIZE, cosign=True)]
    report = verify_bundle(make(notes=notes), VKEY, policy=POLICY)
    assert report.cosigners == {"w"}
    with pytest.raises(VerificationError, match=r"checkpoints\[3\] \(final\): witness policy not"):
        verify_bundle(BUNDLE, VKEY, policy=POLICY)


def test_a_bad_cosignature_on_any_checkpoint_fails() -> None:
    good = checkpoint(16, cosign=True)
    note = parse_note(good)
    sigs = list(note.signatures)
    raw = bytearray(sigs[1].signature)
    raw[8] ^= 1  # the first byte of the Ed25519 signature, after the 8-byte timestamp
    sigs[1] = type(sigs[1])(sigs[1].name, sigs[1].key_id, bytes(raw))
    bad = format_note(Note(note.text, tuple(sigs)))
    notes = [checkpoint(7), bad, checkpoint(33), checkpoint(SIZE, cosign=True)]
    with pytest.raises(VerificationError, match=r"bundle\.checkpoints\[1\]: "):
        verify_bundle(make(notes=notes), VKEY, policy=POLICY)


# -- parsing never fails any other way --------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=200))
def test_parse_fuzz_bytes(data: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_bundle(data)


@given(_json)
def test_parse_fuzz_json(value: Any) -> None:
    with pytest.raises(MalformedError):
        parse_bundle(json.dumps(value).encode())


@given(st.sampled_from(FIELD_PATHS), _json)
def test_parse_fuzz_field_values(path: tuple[Any, ...], value: Any) -> None:
    obj = json.loads(json.dumps(BUNDLE_JSON))
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    try:
        bundle = parse_bundle(json.dumps(obj).encode())
    except MalformedError:
        return
    try:
        verify_bundle(bundle, VKEY)
    except TranslogError as e:
        assert isinstance(e, VerificationError | MalformedError), repr(e)
