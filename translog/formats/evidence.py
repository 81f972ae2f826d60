"""Monitor evidence files, ``translog-monitor-evidence/v1``, and their offline check (pure).

Every alert the monitor raises comes with one JSON file that ``translog verify FILE --vkey V``
checks with no network access. What a file can prove depends on its kind:

* **proven** from the log's own signatures and hashes, whoever hands the file over: ``fork``
  and ``same_size_different_root`` (two signed checkpoints that cannot both be true),
  ``tile_mismatch`` and ``bundle_mismatch`` (a node of the signed tree, with its path to the
  signed root, that differs from what the log served), ``broken_promise`` when a later entry
  is past the promise's leaf (a signed promise, and a range proof showing every entry of that
  timestamp without the promised one), ``content_rule`` (the entries, proven included, and the
  rule re-evaluated over their signed timestamps and payloads);
* **observed**: ``rollback`` (both checkpoints are signed; their order is the monitor's
  observation), ``stale`` (a signed checkpoint and the monitor's clock), ``bad_signature``
  (the bytes served do not verify under the vkey; anyone could produce such bytes, so this
  shows what was served, not who served it), ``witness_policy`` and ``unavailable`` (never
  evidence of tampering).

The check confirms the claim: for a ``bad_signature`` it succeeds when the checkpoint does
*not* verify. Parsing is strict; every failure is a ``VerificationError`` naming the field.
The older ``translog-evidence/v1`` files written by ``translog checkpoint``/``consistency``
are checked as ``fork``/``rollback``/``same_size_different_root`` evidence.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from translog.core.checkpoint import Checkpoint, open_checkpoint
from translog.core.jsonfields import Fields, encode_base64
from translog.core.leaf import decode_leaf, verify_payload
from translog.core.merkle import (
    HASH_SIZE,
    leaf_hash,
    root_from_inclusion_proof,
    tree_hash_from_leaf_hashes,
    verify_consistency,
)
from translog.core.node_proof import consistency_roots, root_from_node_proof
from translog.core.note import decode_base64
from translog.core.policy import WitnessPolicy, parse_policy
from translog.core.range_proof import root_from_range
from translog.core.signing import NoteVerifier
from translog.core.tiles import TILE_HEIGHT, TILE_WIDTH, decode_bundle, parse_tile_path
from translog.errors import ConfigError, InvalidProofError, MalformedError, VerificationError
from translog.formats.receipt import parse_promise, verify_promise
from translog.formats.rules import check_firing, parse_payload, rule_from_config

FORMAT = "translog-monitor-evidence/v1"
LEGACY_FORMAT = "translog-evidence/v1"

SEVERITY = {
    "bad_signature": "tampering",
    "witness_policy": "tampering",
    "fork": "tampering",
    "rollback": "tampering",
    "same_size_different_root": "tampering",
    "tile_mismatch": "tampering",
    "bundle_mismatch": "tampering",
    "stale": "tampering",
    "broken_promise": "tampering",
    "unavailable": "availability",
    "available": "availability",
    "content_rule": "content",
}
"""Alert kinds and their severity. Unavailability is never reported as tampering."""
KINDS = tuple(SEVERITY)


def b64(data: bytes) -> str:
    """Standard padded base64."""
    return encode_base64(data)


def note_text(note: bytes) -> str:
    """A signed note as JSON text (notes are UTF-8; anything else is kept visibly replaced)."""
    return note.decode("utf-8", "replace")


def evidence(
    kind: str, origin: str, url: str, detected_at: int, reason: str, **fields: Any
) -> dict[str, Any]:
    """A ``translog-monitor-evidence/v1`` object (fields in a stable order)."""
    if kind not in SEVERITY:
        raise MalformedError(f"unknown alert kind {kind!r}")
    return {
        "format": FORMAT,
        "kind": kind,
        "severity": SEVERITY[kind],
        "origin": origin,
        "url": url,
        "detected_at": detected_at,
        "reason": reason,
        **fields,
    }


@dataclass(frozen=True)
class EvidenceReport:
    """What checking an evidence file established."""

    kind: str
    origin: str
    proven: bool
    """True when the claim follows from signatures and hashes alone (see module docstring)."""
    lines: tuple[str, ...]


# -- checking ---------------------------------------------------------------------------------


def verify_evidence(
    data: bytes, verifier: NoteVerifier, policy: WitnessPolicy | None = None
) -> EvidenceReport:
    """Check an evidence file against the log's key; raise ``VerificationError`` if it fails."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"evidence: not JSON ({e})") from e
    f = Fields(obj, "evidence")
    try:
        fmt = f.get_str("format")
        if fmt == LEGACY_FORMAT:
            return _legacy(f, verifier)
        if fmt != FORMAT:
            raise MalformedError(f"evidence.format: expected {FORMAT!r}, got {fmt[:40]!r}")
        kind = f.get_str("kind")
        check = _CHECKS.get(kind)
        if check is None:
            raise MalformedError(f"evidence.kind: unknown kind {kind[:40]!r}")
        origin = f.get_str("origin")
        if origin != verifier.name:
            raise VerificationError(
                f"evidence.origin is {origin[:80]!r}, the vkey names {verifier.name!r}"
            )
        for name in ("severity", "url", "reason"):
            f.get_str(name)
        f.get_int("detected_at")
        proven, lines = check(f, verifier, policy)
        f.done()
    except (MalformedError, ConfigError) as e:
        raise VerificationError(f"malformed evidence: {e}") from e
    return EvidenceReport(kind, origin, proven, (f"reason: {f.get_str('reason')}", *lines))


def _checkpoint(
    f: Fields, name: str, verifier: NoteVerifier, policy: WitnessPolicy | None = None
) -> Checkpoint:
    note = f.get_str(name).encode("utf-8")
    witnesses = tuple(policy.witnesses.values()) if policy is not None else ()
    try:
        cp, _, _ = open_checkpoint(note, verifier, others=witnesses)
    except (VerificationError, MalformedError) as e:
        raise VerificationError(f"evidence.{name}: {e}") from e
    return cp


def _hash(f: Fields, name: str) -> bytes:
    return f.get_bytes(name, HASH_SIZE)


def _bad_signature(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    note = f.get_str("checkpoint").encode("utf-8")
    try:
        open_checkpoint(note, v)
    except (VerificationError, MalformedError) as e:
        return False, [f"confirmed: the checkpoint served does not verify: {e}"]
    raise VerificationError("evidence refuted: the checkpoint carries a valid log signature")


def _witness_policy(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    policy = parse_policy(f.get_str("policy"))
    note = f.get_str("checkpoint").encode("utf-8")
    cp = _checkpoint(f, "checkpoint", v, policy)
    try:
        _, parsed, _ = open_checkpoint(note, v, others=tuple(policy.witnesses.values()))
        policy.verify(parsed.text, parsed.signatures)
    except VerificationError as e:
        return False, [f"confirmed: checkpoint size {cp.size} does not meet the policy: {e}"]
    raise VerificationError("evidence refuted: the checkpoint meets the witness policy")


def _pair(
    f: Fields, v: NoteVerifier, older: str = "older", newer: str = "newer"
) -> tuple[Checkpoint, Checkpoint]:
    return _checkpoint(f, older, v), _checkpoint(f, newer, v)


def _same_size(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    a, b = _pair(f, v)
    f.get_hashes("proof")
    if f.has("prefix_root"):
        _hash(f, "prefix_root")
    if a.size != b.size or a.root_hash == b.root_hash:
        raise VerificationError("evidence refuted: the checkpoints do not share a size")
    return True, [
        f"proven: the log signed two roots for tree size {a.size}:",
        f"  {b64(a.root_hash)}",
        f"  {b64(b.root_hash)}",
    ]


def _fork(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    a, b = _pair(f, v)
    proof = f.get_hashes("proof")
    prefix = _hash(f, "prefix_root") if f.has("prefix_root") else None
    if a.size == b.size:
        if a.root_hash == b.root_hash:
            raise VerificationError("evidence refuted: the checkpoints are identical trees")
        return True, [f"proven: the log signed two roots for tree size {a.size}"]
    small, big = (a, b) if a.size < b.size else (b, a)
    if small.size == 0:
        raise VerificationError("evidence refuted: the empty tree is a prefix of every tree")
    try:
        verify_consistency(small.size, big.size, small.root_hash, big.root_hash, proof)
    except InvalidProofError:
        pass
    else:
        raise VerificationError(
            f"evidence refuted: the proof shows size {small.size} is a prefix of size {big.size}"
        )
    seed = prefix if prefix is not None else small.root_hash
    try:
        old_root, new_root = consistency_roots(small.size, big.size, proof, seed)
    except InvalidProofError as e:
        raise VerificationError(f"evidence.proof: {e}") from e
    if new_root != big.root_hash:
        raise VerificationError(
            f"evidence not proven: the proof does not rebuild the root of size {big.size}"
        )
    if old_root == small.root_hash:  # pragma: no cover - verify_consistency accepted it above
        raise VerificationError("evidence refuted: the proof joins the checkpoints")
    return True, [
        f"proven: the tree of size {big.size} has root {b64(old_root)} at size {small.size},",
        f"  but the log signed root {b64(small.root_hash)} for size {small.size}",
    ]


def _rollback(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    older, newer = _pair(f, v)
    f.get_hashes("proof")
    if f.has("prefix_root"):
        _hash(f, "prefix_root")
    if newer.size >= older.size:
        raise VerificationError(
            f"evidence refuted: the later checkpoint (size {newer.size}) is not smaller than "
            f"the earlier one (size {older.size})"
        )
    return False, [
        f"observed: the log presented size {newer.size} after size {older.size} "
        "(both signed by the log; the order is the monitor's observation)"
    ]


def _legacy(f: Fields, v: NoteVerifier) -> EvidenceReport:
    origin = f.get_str("origin")
    if origin != v.name:
        raise VerificationError(f"evidence.origin is {origin[:80]!r}, the vkey names {v.name!r}")
    for name in ("url", "reason"):
        f.get_str(name)
    f.get_int("detected_at")
    older, newer = _pair(f, v)
    if older.size == newer.size:
        proven, lines = _same_size(f, v, None)
        kind = "same_size_different_root"
    elif f.get_hashes("proof"):
        proven, lines = _fork(f, v, None)
        kind = "fork"
    else:
        proven, lines = _rollback(f, v, None)
        kind = "rollback"
    f.done()
    return EvidenceReport(kind, origin, proven, (f"reason: {f.get_str('reason')}", *lines))


def _node_claim(f: Fields, cp: Checkpoint) -> tuple[int, int, bytes]:
    node = f.get_list("node")
    if len(node) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in node):
        raise MalformedError("evidence.node: expected [level, index]")
    level, index = int(str(node[0])), int(str(node[1]))
    expected = _hash(f, "expected")
    path = f.get_hashes("path")
    try:
        root = root_from_node_proof(level, index, cp.size, expected, path)
    except InvalidProofError as e:
        raise VerificationError(f"evidence.path: {e}") from e
    if root != cp.root_hash:
        raise VerificationError(
            f"evidence not proven: node ({level}, {index}) with its path does not give the "
            f"signed root of size {cp.size}"
        )
    return level, index, expected


def _tile_mismatch(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    cp = _checkpoint(f, "checkpoint", v)
    ref = parse_tile_path(f.get_str("tile"))
    if ref.entries:
        raise MalformedError("evidence.tile: a hash tile path is expected")
    data = f.get_bytes("tile_data")
    level, index, expected = _node_claim(f, cp)
    if level != TILE_HEIGHT * ref.level or index // TILE_WIDTH != ref.index:
        raise VerificationError(f"evidence.node ({level}, {index}) is not in tile {ref.path}")
    pos = index % TILE_WIDTH
    served = data[pos * HASH_SIZE : (pos + 1) * HASH_SIZE]
    if len(data) != ref.width * HASH_SIZE:
        what = f"the served tile has {len(data)} bytes, {ref.width * HASH_SIZE} expected"
    elif served == expected:
        raise VerificationError(f"evidence refuted: tile {ref.path} holds the signed node")
    else:
        what = f"it served {b64(served)} at position {pos}"
    return True, [
        f"proven: in the tree of size {cp.size}, node ({level}, {index}) is {b64(expected)};",
        f"  tile {ref.path} disagrees: {what}",
    ]


def _bundle_mismatch(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    cp = _checkpoint(f, "checkpoint", v)
    ref = parse_tile_path(f.get_str("bundle"))
    if not ref.entries:
        raise MalformedError("evidence.bundle: an entry bundle path is expected")
    try:
        entries = decode_bundle(f.get_bytes("bundle_data"))
    except MalformedError as e:
        return True, _bundle_lines(cp, f, ref.path, f"it does not decode: {e}")
    level, index, expected = _node_claim(f, cp)
    first = index << level
    if not ref.index * TILE_WIDTH <= first < (ref.index + 1) * TILE_WIDTH:
        raise VerificationError(f"evidence.node ({level}, {index}) is not under {ref.path}")
    lo = first - ref.index * TILE_WIDTH
    hi = lo + (1 << level)
    if len(entries) < min(hi, ref.width):
        what = f"it holds {len(entries)} entries, {ref.width} expected"
    else:
        served = tree_hash_from_leaf_hashes([leaf_hash(e) for e in entries[lo:hi]])
        if served == expected:
            raise VerificationError(f"evidence refuted: {ref.path} holds the signed entries")
        what = f"its entries [{first}, {first + (1 << level)}) hash to {b64(served)}"
    return True, _bundle_lines(cp, f, ref.path, what, level, index, expected)


def _bundle_lines(
    cp: Checkpoint,
    f: Fields,
    path: str,
    what: str,
    level: int | None = None,
    index: int | None = None,
    expected: bytes | None = None,
) -> list[str]:
    if level is None:
        _node_claim(f, cp)
        return [f"proven: entry bundle {path} is not the log's (size {cp.size}): {what}"]
    return [
        f"proven: in the tree of size {cp.size}, node ({level}, {index}) is "
        f"{b64(expected or b'')};",
        f"  entry bundle {path} disagrees: {what}",
    ]


def _stale(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    cp = _checkpoint(f, "checkpoint", v)
    since = f.get_int("unchanged_since")
    after = f.get_int("stale_after_ms")
    detected = f.get_int("detected_at")
    if detected - since <= after:
        raise VerificationError(
            f"evidence refuted: {detected - since} ms unchanged is within {after} ms"
        )
    return False, [
        f"observed: checkpoint size {cp.size} (signed) unchanged for "
        f"{(detected - since) / 1000:.1f} s, over the {after / 1000:.1f} s allowed "
        "(the monitor's clock)"
    ]


def _unavailable(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    error = f.get_str("error")
    f.get_int("since")
    failures = f.get_int("failures")
    lines = [f"observed: unavailable after {failures} failed polls: {error}"]
    if f.has("last_checkpoint") and f.value("last_checkpoint") is not None:
        cp = _checkpoint(f, "last_checkpoint", v)
        lines.append(f"  last verified checkpoint: size {cp.size} (signed)")
    lines.append("  this is unavailability, not evidence of tampering")
    return False, lines


def _available(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    f.get_int("since")
    cp = _checkpoint(f, "checkpoint", v)
    return False, [f"observed: reachable again, checkpoint size {cp.size} (signed)"]


def _broken_promise(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    promise_obj = f.value("promise")
    promise = parse_promise(promise_obj)
    try:
        verify_promise(promise, v.vkey)
    except VerificationError as e:
        raise VerificationError(f"evidence.promise: {e}") from e
    cp = _checkpoint(f, "checkpoint", v)
    start = f.get_int("start")
    leaves = [
        decode_base64_field(x, f"evidence.leaves[{i}]") for i, x in enumerate(f.get_list("leaves"))
    ]
    proof = f.get_hashes("range_proof")
    end = start + len(leaves)
    t = promise.timestamp_ms
    if cp.size == 0 or not leaves:
        if cp.size != 0:
            raise MalformedError("evidence.leaves: empty")
        return False, ["observed: the log is empty after the promise's deadline"]
    try:
        root = root_from_range(start, end, cp.size, [leaf_hash(x) for x in leaves], proof)
    except InvalidProofError as e:
        raise VerificationError(f"evidence.range_proof: {e}") from e
    if root != cp.root_hash:
        raise VerificationError("evidence.range_proof: does not give the signed root")
    times = []
    for i, leaf in enumerate(leaves):
        try:
            times.append(decode_leaf(leaf).timestamp_ms)
        except MalformedError as e:
            raise VerificationError(f"evidence.leaves[{i}]: {e}") from e
        if leaf_hash(leaf) == promise.leaf_hash:
            raise VerificationError(f"evidence refuted: the promised leaf is entry {start + i}")
    if any(b < a for a, b in itertools.pairwise(times)):
        raise VerificationError("evidence.leaves: timestamps decrease")
    if start > 0 and times[0] >= t:
        raise VerificationError("evidence.leaves: the first leaf is not before the promise")
    if times[-1] > t:
        tail = "and the log has sequenced entries after that time" + (
            ", past the deadline" if times[-1] > promise.deadline_ms else ""
        )
        return True, [
            f"proven: entries [{start}, {end}) of the tree of size {cp.size} include every "
            f"entry with the promise's timestamp {t}, and not the promised leaf "
            f"{b64(promise.leaf_hash)};",
            f"  {tail}: it can never be merged consistently",
        ]
    if end != cp.size:
        raise VerificationError("evidence.leaves: must reach a later timestamp or the tree's end")
    return False, [
        f"observed: the promised leaf {b64(promise.leaf_hash)} is not among entries "
        f"[{start}, {end}), the end of the tree of size {cp.size} (proven),",
        f"  after its deadline {promise.deadline_ms} (the monitor's clock)",
    ]


def decode_base64_field(value: object, where: str) -> bytes:
    """A base64 string from a JSON list, strictly."""
    if not isinstance(value, str):
        raise MalformedError(f"{where}: expected a base64 string")
    try:
        return decode_base64(value)
    except MalformedError as e:
        raise MalformedError(f"{where}: {e}") from e


def _content_rule(f: Fields, v: NoteVerifier, p: WitnessPolicy | None) -> tuple[bool, list[str]]:
    rule = rule_from_config(f.value("rule"), "evidence.rule")
    cp = _checkpoint(f, "checkpoint", v)
    items: list[tuple[int, int, object]] = []
    for i, raw in enumerate(f.get_list("entries")):
        e = Fields(raw, f"evidence.entries[{i}]")
        index = e.get_int("index")
        leaf = e.get_bytes("leaf")
        payload = e.get_bytes("payload")
        salt = e.get_bytes("salt") if e.has("salt") else None
        proof = e.get_hashes("inclusion_proof")
        e.done()
        try:
            if root_from_inclusion_proof(leaf_hash(leaf), index, cp.size, proof) != cp.root_hash:
                raise VerificationError("does not give the signed root")
            verify_payload(leaf, payload, salt)
            ts = decode_leaf(leaf).timestamp_ms
        except (VerificationError, MalformedError) as err:
            raise VerificationError(f"evidence.entries[{i}] (index {index}): {err}") from err
        items.append((index, ts, parse_payload(payload)))
    try:
        group = check_firing(rule, items)
    except ConfigError as e:
        raise VerificationError(f"evidence refuted: {e}") from e
    counted = f"{len(items)} entries" + (
        f" within {rule.window_ms // 1000} s" if rule.threshold else ""
    )
    shown = f" for group {group}" if group else ""
    return True, [
        f"proven: rule {rule.name!r} matches {counted}{shown}, all included in the tree of "
        f"size {cp.size}"
    ]


_CHECKS = {
    "bad_signature": _bad_signature,
    "witness_policy": _witness_policy,
    "fork": _fork,
    "same_size_different_root": _same_size,
    "rollback": _rollback,
    "tile_mismatch": _tile_mismatch,
    "bundle_mismatch": _bundle_mismatch,
    "stale": _stale,
    "unavailable": _unavailable,
    "available": _available,
    "broken_promise": _broken_promise,
    "content_rule": _content_rule,
}


def hash_list(hashes: Sequence[bytes]) -> list[str]:
    """Hashes as base64 strings."""
    return [b64(h) for h in hashes]
