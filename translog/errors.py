"""The whole translog exception hierarchy.

Every error translog raises derives from :class:`TranslogError`, and every exception class is
defined here, grouped by the layer that raises it. Third-party exceptions are mapped once, at
the module that touches the library (``lmdb.Error`` in ``storage/lmdb_env.py``,
``InvalidSignature`` in ``core/signing.py``, aiohttp client errors in ``client/transport.py``).
The HTTP layer maps these classes to status codes in exactly one table
(``translog/http/errors.py``) and the CLI maps them to exit codes in ``cli/command.py``.

Messages are lowercase, say what failed, and include the numbers involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# -- the root and the kinds every layer uses ------------------------------------------------


class TranslogError(Exception):
    """Root of every translog error."""

    def diagnostics(self) -> str:
        """A human-readable explanation for the CLI, one or more lines."""
        return str(self)


class ConfigError(TranslogError):
    """A configuration file or setting is invalid; the message names the key."""


class MalformedError(TranslogError):
    """Input could not be parsed or decoded (note, checkpoint, proof, leaf, request body)."""


class TooLargeError(MalformedError):
    """Input exceeds a configured or format limit (payload, body, batch)."""


class NotFoundError(TranslogError):
    """An unknown log, index, key, tile or token."""


class AuthError(TranslogError):
    """Missing or invalid credentials (HTTP 401)."""


class ForbiddenError(TranslogError):
    """Valid credentials without the needed scope (HTTP 403)."""


class ConflictError(TranslogError):
    """A state conflict; for a witness, carries the size it knows (HTTP 409)."""

    def __init__(self, message: str, known_size: int | None = None) -> None:
        super().__init__(message)
        self.known_size = known_size


class PushbackError(TranslogError):
    """The pending pool or a backlog is full; retry later (HTTP 503 + Retry-After)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- verification (core): proofs, signatures, consistency -----------------------------------


class VerificationError(TranslogError):
    """Any proof or signature failure."""


class InvalidProofError(VerificationError):
    """A Merkle inclusion or consistency proof does not verify."""


class InvalidSignatureError(VerificationError):
    """A signature made by a known key does not verify."""


class UnknownKeyError(VerificationError):
    """No signature from a trusted key was found."""


class InconsistencyError(VerificationError):
    """Two signed checkpoints cannot be proven consistent; carries the evidence."""

    def __init__(
        self, message: str, older: Any = None, newer: Any = None, proof: Any = None
    ) -> None:
        super().__init__(message)
        self.older = older
        self.newer = newer
        self.proof = proof


# -- formats: the audit-event schema --------------------------------------------------------


class EventError(MalformedError):
    """An event does not follow the schema; the message names the field."""


# -- storage and the log --------------------------------------------------------------------


class StorageError(TranslogError):
    """A storage failure. The HTTP layer never echoes its message to clients."""


class StorageFullError(StorageError):
    """The disk or the configured LMDB map limit is full. Nothing was written."""


class StorageCorruptError(StorageError):
    """Stored data failed a consistency check (fsck or the startup check)."""


class SequencerFatalError(StorageError):
    """The sequencer stopped: the state after a failed commit is unknown."""


class ProblemLimitError(TranslogError):
    """fsck found ``max_problems`` problems and stops checking.

    Internal to :func:`translog.log.fsck.fsck`, which catches it and returns its report.
    """


class MergerStoppedError(TranslogError):
    """The background merger of the LMDB leaf-hash index was asked to stop (``close``).

    Internal to :class:`translog.storage.lmdb_leafidx.LMDBLeafIndex`: raised between two
    slices of a merge and caught by the merger thread, which then ends.
    """


# -- client: talking to a log over HTTP -----------------------------------------------------


class NetworkError(TranslogError):
    """A client-side transport failure."""


class TooLargeAnswerError(NetworkError):
    """An answer longer than the limit for its kind; retrying would not help."""


# -- publish: object stores, the single-writer lease, the publisher, mirrors ----------------


class ObjectStoreError(TranslogError):
    """An object store request failed (network, permissions, missing bucket)."""


class PreconditionFailedError(ObjectStoreError):
    """A conditional write lost: the object exists (create-only) or changed (replace-only)."""


class LeaseHeldError(TranslogError):
    """Another instance holds the lease."""

    def __init__(self, message: str, record: Any = None) -> None:
        """Keep the holder's record (a ``translog.publish.lease.LeaseRecord``, or None) for
        callers that wait for its expiry."""
        super().__init__(message)
        self.record = record


class LeaseLostError(TranslogError):
    """This instance no longer holds the lease: it must not write."""


class PublicationHaltedError(TranslogError):
    """The store holds data this log did not write (another writer): publication stopped."""


class TileMismatchError(TranslogError):
    """The source serves a tile that differs from the one its own verified entries give."""


# -- monitor --------------------------------------------------------------------------------


class PipelineError(NetworkError):
    """A pipelined request failed; retry it through the regular transport."""


class SplitViewError(InconsistencyError):
    """A foreign checkpoint (from a witness or another monitor) contradicts the verified view.

    ``finding`` holds both checkpoints and the proof (a ``translog.monitor.consistency.Finding``);
    ``evidence`` is the path of the evidence file written for it (also raised as an alert).
    """

    def __init__(
        self, message: str, finding: Any = None, evidence_path: Path | None = None
    ) -> None:
        super().__init__(
            message,
            older=finding.older.note if finding is not None else None,
            newer=finding.newer.note if finding is not None else None,
            proof=list(finding.proof) if finding is not None else None,
        )
        self.finding = finding
        self.evidence = evidence_path


class TilesUnusableError(TranslogError):
    """The log's tiles do not rebuild its signed root (the recomputation will say where)."""


# -- log: submission ------------------------------------------------------------------------


class RateLimitedError(PushbackError):
    """A token exceeded its submission rate (HTTP 429 + Retry-After); see
    :mod:`translog.log.submission`."""


# -- formats/ingest: syslog over TLS ----------------------------------------------------------


class SyslogFrameError(MalformedError):
    """A syslog stream broke RFC 6587 octet-counting framing (``MSG-LEN SP SYSLOG-MSG``); the
    listener closes that connection (:mod:`translog.ingest.syslog`)."""


class SyslogFrameTooLargeError(TooLargeError):
    """A syslog frame announced more than ``syslog.max_message_bytes``; the connection closes."""


class SyslogMessageError(MalformedError):
    """A message with an RFC 5424 header that breaks RFC 5424 (:mod:`translog.formats.syslog`
    then keeps it as an RFC 3164 message, with the reason)."""


class RelpFrameError(MalformedError):
    """A RELP stream broke the protocol: a malformed frame (``TXNR SP COMMAND SP DATALEN
    [SP DATA] LF``), a command out of order, or a bad ``open``; the listener closes that
    connection (:mod:`translog.ingest.relp`)."""


class RelpFrameTooLargeError(TooLargeError):
    """A RELP frame announced more data than the listener takes; the connection closes."""


# -- http: errors only the front end raises -------------------------------------------------


class UnsupportedMediaTypeError(MalformedError):
    """A request body of a content type the route does not accept (HTTP 415)."""


class RequestTimeoutError(MalformedError):
    """The request body did not arrive within ``server.body_timeout_ms`` (HTTP 408)."""
