"""The log's side of tlog-witness: collect cosignatures for each published checkpoint.

:class:`Cosigner` sends a new checkpoint to every witness of the log's policy in parallel,
each request bounded by ``timeout``. Per witness it remembers the size that witness last
cosigned (unknown at start: it sends ``old 0``, as the spec allows, and learns the size from
the 409). A 409 names the witness's size; the checkpoint is sent again with that ``old`` and a
consistency proof from it (at most :data:`MAX_ATTEMPTS` requests per checkpoint). A 409 that
names the very size that was sent means the witness holds a *different root* for it, which the
log must never cause: it is logged as critical and not retried.

Each returned cosignature line is verified against the witness's vkey over the checkpoint
text before it is kept; unknown lines are ignored. The result is the log's note with the
verified cosignature lines appended, and whether the policy's quorum is met.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import aiohttp

from translog.core.checkpoint import parse_checkpoint
from translog.core.note import MAX_SIGNATURES, NoteSignature, parse_note
from translog.core.policy import WitnessPolicy
from translog.core.signing import CosignatureVerifier
from translog.errors import ConfigError, NetworkError, TranslogError, VerificationError
from translog.log.sequencer import Cosign, SignedCheckpoint
from translog.witness.protocol import (
    SIZE_CONTENT_TYPE,
    format_add_checkpoint,
    parse_cosignatures,
    parse_size_body,
)

log = logging.getLogger("translog.cosign")

MAX_ATTEMPTS = 3
MAX_RESPONSE = 64 * 1024

Prove = Callable[[int, int], tuple[bytes, ...]]
"""``prove(old_size, new_size)``: a consistency proof in the log's own tree."""


@dataclass
class WitnessEndpoint:
    """One witness: its policy name, add-checkpoint URL, key, and what we know of it."""

    name: str
    url: str
    verifier: CosignatureVerifier
    known_size: int | None = None
    ok: int = 0
    failed: int = 0
    last_error: str = ""


@dataclass(frozen=True)
class Cosigned:
    """The outcome for one checkpoint."""

    note: bytes
    """The log's signed note with every verified cosignature line appended."""
    cosigners: frozenset[str]
    quorum: bool
    errors: dict[str, str] = field(default_factory=dict)


class Cosigner:
    """Collects cosignatures from the witnesses of ``policy`` (each needs a URL)."""

    def __init__(self, policy: WitnessPolicy, prove: Prove, *, timeout: float = 5.0) -> None:
        missing = [n for n in policy.witnesses if n not in policy.witness_urls]
        if missing:
            raise ConfigError(
                f"witness {missing[0]!r} in the log's policy has no URL; the log must reach "
                "every witness it names (policy line: witness NAME VKEY URL)"
            )
        self.policy = policy
        self.prove = prove
        self.timeout = timeout
        self.witnesses = [
            WitnessEndpoint(n, policy.witness_urls[n].rstrip("/") + "/add-checkpoint", v)
            for n, v in policy.witnesses.items()
        ]
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def cosign(self, note: bytes) -> Cosigned:
        """Ask every witness in parallel; return the note with the cosignatures collected."""
        parsed = parse_note(note)
        size = parse_checkpoint(parsed.text).size
        results = await asyncio.gather(
            *(self._one(w, note, parsed.text, size) for w in self.witnesses),
            return_exceptions=True,
        )
        lines: list[NoteSignature] = []
        names: set[str] = set()
        errors: dict[str, str] = {}
        for w, result in zip(self.witnesses, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, TranslogError | TimeoutError):
                    raise result
                w.failed += 1
                w.last_error = str(result) or type(result).__name__
                errors[w.name] = w.last_error
                continue
            w.ok += 1
            names.add(w.name)
            lines.append(result)
        room = MAX_SIGNATURES - len(parsed.signatures)
        out = note + b"".join(sig.line.encode("utf-8") for sig in lines[:room])
        return Cosigned(out, frozenset(names), self.policy.satisfied_by(names), errors)

    async def _one(self, w: WitnessEndpoint, note: bytes, text: str, size: int) -> NoteSignature:
        for _ in range(MAX_ATTEMPTS):
            old = w.known_size if w.known_size is not None else 0
            if old > size:
                raise VerificationError(
                    f"witness {w.name} cosigned size {old}, larger than this log's {size}"
                )
            proof = self.prove(old, size) if 0 < old < size else ()
            body = format_add_checkpoint(old, proof, note)
            status, ctype, answer = await self._post(w, body)
            if status == 200:
                sig = self._verified(w, text, answer)
                w.known_size = size
                return sig
            if status == 409 and ctype == SIZE_CONTENT_TYPE:
                known = parse_size_body(answer)
                if known == old:
                    log.critical(
                        "witness %s holds a different root for size %d than this log signed",
                        w.name,
                        old,
                    )
                    raise VerificationError(
                        f"witness {w.name} cosigned another root for size {old}"
                    )
                w.known_size = known
                continue
            reason = answer[:200].decode("utf-8", "replace")
            w.known_size = None
            raise NetworkError(f"witness {w.name} answered {status}: {reason}")
        raise NetworkError(f"witness {w.name}: no cosignature after {MAX_ATTEMPTS} attempts")

    async def _post(self, w: WitnessEndpoint, body: bytes) -> tuple[int, str, bytes]:
        try:
            async with self._http().post(
                w.url, data=body, headers={"Content-Type": "text/plain"}
            ) as resp:
                answer = await resp.content.read(MAX_RESPONSE)
                return resp.status, resp.content_type, answer
        except (aiohttp.ClientError, TimeoutError) as e:
            raise NetworkError(f"witness {w.name}: {type(e).__name__}: {e}") from e

    def _verified(self, w: WitnessEndpoint, text: str, answer: bytes) -> NoteSignature:
        """The witness's cosignature from a 200 body, verified; unknown lines ignored."""
        found = None
        for sig in parse_cosignatures(answer):
            if w.verifier.matches(sig):
                w.verifier.verify(text, sig)
                found = sig
        if found is None:
            raise VerificationError(f"witness {w.name} answered without its cosignature")
        return found

    def status(self) -> dict[str, dict[str, object]]:
        """Per witness: last known size, successes, failures, last error."""
        return {
            w.name: {
                "known_size": w.known_size,
                "ok": w.ok,
                "failed": w.failed,
                "last_error": w.last_error,
            }
            for w in self.witnesses
        }


def publication_step(cosigner: Cosigner, *, require_quorum: bool) -> Cosign:
    """The :data:`translog.log.sequencer.Cosign` step for a log: cosign, and withhold without
    quorum."""

    async def cosign(signed: SignedCheckpoint) -> SignedCheckpoint | None:
        result = await cosigner.cosign(signed.note)
        if not result.quorum:
            failures = "; ".join(f"{n}: {e}" for n, e in sorted(result.errors.items()))
            if require_quorum:
                log.warning(
                    "checkpoint of size %d withheld: witness quorum not met (%s)",
                    signed.size,
                    failures or "no errors",
                )
                return None
            log.warning(
                "checkpoint of size %d published without quorum (%s)", signed.size, failures
            )
        return replace(signed, note=result.note)

    return cosign
