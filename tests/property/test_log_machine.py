"""A hypothesis state machine over Log: every step keeps the whole log verifiable."""

from __future__ import annotations

import asyncio

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from translog.core.checkpoint import open_checkpoint
from translog.core.leaf import decode_leaf
from translog.core.merkle import (
    Frontier,
    leaf_hash,
    prove_consistency,
    verify_consistency,
    verify_inclusion,
)
from translog.core.signing import NoteSigner
from translog.core.vkey import parse_vkey
from translog.errors import StorageCorruptError
from translog.log.fsck import fsck
from translog.log.sequencer import Appended, Log, LogOptions
from translog.storage.base import NewEntry, WriteBatch
from translog.storage.memory import MemoryStorage

ORIGIN = "machine.example/log"
SIGNER = NoteSigner.generate(ORIGIN)
VERIFIER = parse_vkey(SIGNER.vkey)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.storage = MemoryStorage()
        self.log = self._open()
        self.pending: list[tuple[bytes, bool, bytes | None, asyncio.Future[list[Appended]]]] = []
        self.model: list[tuple[bytes, bool]] = []  # payloads in index order
        self.keys: dict[bytes, int] = {}
        self.checkpoints: list[tuple[int, bytes]] = []

    def _open(self) -> Log:
        log = Log(self.storage, ORIGIN, SIGNER, None, LogOptions(publish_interval_ms=60_000))
        self.loop.run_until_complete(log.start())
        return log

    @rule(
        payload=st.binary(max_size=40),
        committed=st.booleans(),
        key=st.none() | st.sampled_from([b"a" * 16, b"b" * 16, b"c" * 16]),
    )
    def append(self, payload: bytes, committed: bool, key: bytes | None) -> None:
        keys = None if key is None else [key]

        async def submit() -> asyncio.Future[list[Appended]]:
            return self.log.submit([payload], committed=committed, keys=keys)

        fut = self.loop.run_until_complete(submit())
        self.pending.append((payload, committed, key, fut))

    @precondition(lambda self: self.pending)
    @rule()
    def sequence(self) -> None:
        futs = [f for *_, f in self.pending]
        self.loop.run_until_complete(asyncio.gather(*futs))
        committed_keys = set(self.keys)
        for payload, committed, key, fut in self.pending:
            result = fut.result()[0]
            if key is not None and key in self.keys:
                assert result.index == self.keys[key]
                # A key committed before this round is reported as a duplicate; a retry that
                # raced the in-flight original shares the original's receipt instead.
                assert result.duplicate or key not in committed_keys
                continue
            if result.index == len(self.model):
                self.model.append((payload, committed))
            assert self.model[result.index] == (payload, committed)
            if key is not None:
                self.keys[key] = result.index
            verify_inclusion(
                result.leaf_hash,
                result.index,
                result.checkpoint.size,
                self.log.inclusion_proof(result.index, result.checkpoint.size),
                result.checkpoint.root_hash,
            )
        self.pending.clear()

    @rule()
    def checkpoint(self) -> None:
        if self.pending:  # publishing lets the sequencer run: account for what it commits
            self.sequence()
        cp = self.loop.run_until_complete(self.log.publish())
        self.checkpoints.append((cp.size, cp.root_hash))

    @rule()
    def reopen_storage(self) -> None:
        if self.pending:
            self.sequence()
        self.loop.run_until_complete(self.log.close())
        self.log = self._open()

    @rule()
    def fork_attempt(self) -> None:
        """Writing a different leaf at an existing index must be refused by storage."""
        size = self.storage.size()
        if size == 0:
            return
        frontier = Frontier()
        leaf = b"\x01" + b"\0" * 9 + b"forged"
        nodes = frontier.append(leaf_hash(leaf))
        try:
            self.storage.append(WriteBatch(0, [NewEntry(leaf)], nodes, 0))
        except StorageCorruptError:
            return
        raise AssertionError("storage accepted a rewrite of index 0")

    @invariant()
    def check_log(self) -> None:
        if self.pending:
            # The writer thread may be committing them right now: check only the settled part.
            assert len(self.model) <= self.storage.size() <= len(self.model) + len(self.pending)
            return
        size = self.storage.size()
        entries = self.storage.get_entries(0, size)
        assert len(entries) == len(self.model) == size
        for entry, (payload, committed) in zip(entries, self.model, strict=True):
            leaf = decode_leaf(entry.leaf)
            if committed:
                assert entry.payload == payload
            else:
                assert leaf.payload == payload
        assert fsck(self.storage, VERIFIER, ORIGIN).ok
        for old, new in zip(self.checkpoints, self.checkpoints[1:], strict=False):
            if old[0]:
                proof = prove_consistency(old[0], new[0], self.storage)
                verify_consistency(old[0], new[0], old[1], new[1], proof)
        latest = self.storage.latest_checkpoint()
        if latest is not None:
            open_checkpoint(latest.note, VERIFIER, origin=ORIGIN)

    def teardown(self) -> None:
        if self.pending:
            self.sequence()
        self.loop.run_until_complete(self.log.close())
        self.loop.close()


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
