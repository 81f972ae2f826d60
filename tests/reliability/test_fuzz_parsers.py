"""Hypothesis fuzzing of every parser of untrusted input.

Each parser gets arbitrary input and mutations (flipped, inserted, deleted, duplicated and
truncated bytes) of a valid sample. The property: it returns a value or raises a
``TranslogError`` subclass (which the CLI and the HTTP error table turn into a clear message
or 4xx); never any other exception. Parsers covered: signed notes, checkpoints, verifier
keys, c2sp tlog-proof files, evidence bundles, receipts, promises, NDJSON receipt files (all
through ``translog verify``'s ``verify_file`` as well), tile paths and entry bundles, leaves,
witness policies, the NDJSON and JSON batch bodies of ``/add-batch``, config files, token
files and client state files; the witness's ``add-checkpoint`` request bodies and
cosignature answers, gossip answers, misbehaviour files, witness and monitor config files, and
``translog.event/v1`` audit events. Query parameters and paths are fuzzed against the running server
in test_http_fuzz.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from tests.unit.test_bundle import BUNDLE
from translog.client.state import State
from translog.config import parse_config
from translog.core.checkpoint import open_checkpoint, parse_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.note import parse_note
from translog.core.policy import parse_policy
from translog.core.signing import NoteSigner
from translog.core.tiles import decode_bundle, parse_tile_path
from translog.core.tiles import encode_bundle as encode_tile_bundle
from translog.core.vkey import parse_vkey
from translog.errors import TranslogError
from translog.formats.batch import parse_batch
from translog.formats.bundle_json import encode_bundle, parse_bundle
from translog.formats.event_builder import build_event, encode_event
from translog.formats.event_schema import parse_event
from translog.formats.misbehaviour import parse_misbehaviour
from translog.formats.proof import parse_proof
from translog.formats.receipt import parse_promise, parse_receipt
from translog.formats.verify import verify_file
from translog.gossip.core import parse_checkpoints_answer, parse_proof_answer
from translog.log.tokens import TokenStore
from translog.monitor.config import parse_monitor_config
from translog.witness.config import parse_witness_config
from translog.witness.protocol import (
    format_add_checkpoint,
    parse_add_checkpoint,
    parse_cosignatures,
    parse_size_body,
)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests" / "vectors" / "log.json").read_text())
VKEY: str = VECTORS["vkey"]
CHECKPOINT = VECTORS["checkpoint"].encode()
PROOF = VECTORS["tlog_proof"].encode()
RECEIPT = json.dumps(VECTORS["receipt_single"]).encode()
BATCH_RECEIPT = json.dumps(VECTORS["receipt_batch"]).encode()
PROMISE = json.dumps(VECTORS["promise"]).encode()
NDJSON_RECEIPTS = RECEIPT + b"\n" + RECEIPT + b"\n"
EVIDENCE = encode_bundle(BUNDLE)
EXAMPLE_TOML = (ROOT / "config" / "example.toml").read_bytes()
POLICY = (
    f"log {VKEY} https://log.example\n"
    f"witness W1 {NoteSigner.generate('w1.example').vkey}\n"
    "group G 1 W1\nquorum G\n"
).encode()
SAMPLES = [CHECKPOINT, PROOF, RECEIPT, BATCH_RECEIPT, PROMISE, NDJSON_RECEIPTS, EVIDENCE]

_OPS = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "set"]),
    st.integers(min_value=0, max_value=1 << 20),
    st.integers(min_value=0, max_value=255),
)


def _mutate(seed: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(seed)
    for op, pos, value in ops:
        at = pos % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (value % 8)
        elif op == "set" and data:
            data[at % len(data)] = value
        elif op == "insert":
            data[at:at] = bytes([value])
        elif op == "delete":
            del data[at : at + 1 + value % 8]
        elif op == "duplicate":
            data[at:at] = data[at : at + 1 + value]
        elif op == "truncate":
            del data[at:]
    return bytes(data)


def mutated(*seeds: bytes) -> st.SearchStrategy[bytes]:
    """Mutations of the seeds, plus arbitrary bytes."""
    mutations = st.builds(_mutate, st.sampled_from(seeds), st.lists(_OPS, min_size=1, max_size=8))
    return st.one_of(mutations, st.binary(max_size=2048))


def rejects_cleanly(fn: Callable[[], Any]) -> None:
    """The property: a value or a TranslogError; anything else fails the test."""
    with contextlib.suppress(TranslogError):
        fn()


def text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


@given(mutated(CHECKPOINT))
def test_signed_notes(data: bytes) -> None:
    rejects_cleanly(lambda: parse_note(data))
    rejects_cleanly(lambda: parse_note(text(data)))


@given(mutated(CHECKPOINT))
@example(b"origin\n1\n" + b"A" * 44 + b"\n\n\xe2\x80\x94 x Zm9v\n")
def test_checkpoints(data: bytes) -> None:
    rejects_cleanly(lambda: open_checkpoint(data, parse_vkey(VKEY)))
    rejects_cleanly(lambda: parse_checkpoint(text(data)))
    rejects_cleanly(lambda: parse_checkpoint(text(data), strict_root=False))


@given(mutated(VKEY.encode()))
def test_verifier_keys(data: bytes) -> None:
    rejects_cleanly(lambda: parse_vkey(text(data)))


@given(mutated(PROOF))
def test_proof_files(data: bytes) -> None:
    rejects_cleanly(lambda: parse_proof(data))


@given(mutated(EVIDENCE))
def test_evidence_bundles(data: bytes) -> None:
    rejects_cleanly(lambda: parse_bundle(data))


@given(mutated(RECEIPT, BATCH_RECEIPT, PROMISE))
def test_receipts_and_promises(data: bytes) -> None:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return  # not JSON: the callers reject it before these parsers (see verify_file)
    rejects_cleanly(lambda: parse_receipt(obj))
    rejects_cleanly(lambda: parse_promise(obj))


@given(mutated(*SAMPLES))
def test_translog_verify_accepts_any_file(data: bytes) -> None:
    """``translog verify`` detects the kind of any file, then verifies or refuses it."""
    rejects_cleanly(lambda: verify_file(data, VKEY))


TILE_PATHS = ["tile/0/000", "tile/1/x001/234.p/17", "tile/entries/x123/456", "tile/63/000.p/1"]


@given(
    st.one_of(
        st.sampled_from(TILE_PATHS).flatmap(lambda p: mutated(p.encode()).map(text)),
        st.text(alphabet="tile/entrs.px0123456789", max_size=60),
        st.text(max_size=80),
    )
)
def test_tile_paths(path: str) -> None:
    rejects_cleanly(lambda: parse_tile_path(path))


@given(mutated(encode_tile_bundle([b"leaf one", b"", b"x" * 300])))
def test_entry_bundles_and_leaves(data: bytes) -> None:
    rejects_cleanly(lambda: decode_bundle(data))
    rejects_cleanly(lambda: decode_leaf(data))


@given(mutated(POLICY))
def test_witness_policies(data: bytes) -> None:
    rejects_cleanly(lambda: parse_policy(text(data)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
batch_entries = st.one_of(
    st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.fixed_dictionaries(
        {"payload_b64": st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())},
        optional={"idempotency_key": st.text(max_size=300), "extra": json_values},
    ),
    json_values,
)
VALID_NDJSON = b'"eA=="\n{"payload_b64": "eQ==", "idempotency_key": "k"}\n\n'
VALID_JSON = b'["eA==", {"payload_b64": "eQ=="}]'


@given(
    st.one_of(
        mutated(VALID_NDJSON, VALID_JSON),
        st.lists(batch_entries, max_size=6).map(lambda v: json.dumps(v).encode()),
        st.lists(batch_entries, max_size=6).map(
            lambda v: "\n".join(json.dumps(x) for x in v).encode()
        ),
        st.just(b"[" * 100_000 + b"]" * 100_000),
        st.just(b"[" * 100_000),
    ),
    st.sampled_from(["application/x-ndjson", "application/json", "text/plain", ""]),
)
def test_batch_bodies(body: bytes, content_type: str) -> None:
    rejects_cleanly(lambda: parse_batch(body, content_type, 5))


toml_scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1), st.text(max_size=20)
)


def _toml(sections: dict[str, dict[str, Any]]) -> str:
    out = []
    for name, values in sections.items():
        out.append(f"[{json.dumps(name)}]")
        for key, value in values.items():
            rendered = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            out.append(f"{json.dumps(key)} = {rendered}")
    return "\n".join(out) + "\n"


KNOWN = tomllib.loads(EXAMPLE_TOML.decode())


@given(
    st.one_of(
        mutated(EXAMPLE_TOML).map(text),
        st.dictionaries(
            st.sampled_from([*KNOWN, "bogus"]),
            st.dictionaries(
                st.sampled_from([k for s in KNOWN.values() for k in s] + ["nope"]), toml_scalars
            ),
        ).map(_toml),
    )
)
def test_config_files(source: str) -> None:
    rejects_cleanly(lambda: parse_config(source))


TOKENS = json.dumps(
    {"tokens": [{"name": "a", "hash": "00" * 32, "scopes": ["submit"], "created_ms": 1}]}
).encode()


@given(st.one_of(mutated(TOKENS), json_values.map(lambda v: json.dumps(v).encode())))
def test_token_files(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)

    def load_and_use() -> None:
        store = TokenStore(path)
        store.list()
        store.authenticate("tl_x", "submit")

    rejects_cleanly(load_and_use)


STATE = json.dumps(
    {"logs": {"reliability.example/log": {"size": 1, "root_hash": "A" * 43 + "="}}}
).encode()


@given(st.one_of(mutated(STATE), json_values.map(lambda v: json.dumps(v).encode())))
def test_client_state_files(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_bytes(data)
    state = State(path, parse_vkey(VKEY))
    rejects_cleanly(lambda: state.get(parse_vkey(VKEY).name))


# -- the witness, gossip, monitor and audit-event parsers -----------------------------------

ADD_CHECKPOINT = format_add_checkpoint(3, [bytes(range(32))], CHECKPOINT)
EVENT = encode_event(
    build_event(
        "user.login",
        actor=("user", "alice"),
        category="authentication",
        tenant="acme",
        service="sso",
        outcome="failure",
        reason="bad password",
        targets=[("application", "billing")],
        source_ip="192.0.2.1",
        details={"attempt": 2, "nested": {"list": [1, "two", None]}},
    )
)


@given(mutated(ADD_CHECKPOINT, b"old 0\n\n" + CHECKPOINT))
def test_witness_add_checkpoint_bodies(data: bytes) -> None:
    rejects_cleanly(lambda: parse_add_checkpoint(data))
    rejects_cleanly(lambda: parse_cosignatures(data))
    rejects_cleanly(lambda: parse_size_body(data))


@given(mutated(CHECKPOINT, ADD_CHECKPOINT))
def test_gossip_answers_and_misbehaviour_files(data: bytes) -> None:
    rejects_cleanly(lambda: parse_checkpoints_answer(data))
    rejects_cleanly(lambda: parse_proof_answer(data))
    rejects_cleanly(lambda: parse_misbehaviour(data))


@given(
    mutated(
        (ROOT / "config" / "witness.example.toml").read_bytes(),
        (ROOT / "config" / "monitor.example.toml").read_bytes(),
    )
)
def test_witness_and_monitor_config_files(data: bytes) -> None:
    rejects_cleanly(lambda: parse_witness_config(text(data), base=ROOT))
    rejects_cleanly(lambda: parse_monitor_config(text(data), base=ROOT))


@given(mutated(EVENT))
def test_audit_events(data: bytes) -> None:
    rejects_cleanly(lambda: parse_event(data))
