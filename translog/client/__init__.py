"""The translog client: submit entries and read the log, verifying everything before returning.

:class:`LogClient` is asynchronous (aiohttp); :class:`SyncLogClient` wraps it for blocking
code. Both trust exactly one thing, the log's verifier key (vkey), plus an optional witness
policy, and check every answer against them:

* **Checkpoints** (``GET /checkpoint``) must carry a valid log signature (origin = the vkey's
  name) and, with a policy, meet its witness quorum.
* **Consistency.** The last verified checkpoint per origin is kept in memory, and in a JSON
  state file when ``state_path`` is given (:mod:`~translog.client.state`). Every checkpoint the
  client meets (from ``/checkpoint`` or in a receipt) is checked against it, and stored when it
  is larger (:mod:`~translog.client.consistency`): a log that rolled back or forked raises
  :class:`~translog.errors.InconsistencyError` carrying both signed notes and the proof.
  :meth:`LogClient.check_consistent` applies the same rules to a checkpoint the caller holds.
* **Proofs** are computed from tlog-tiles, or taken from the RFC 6962 ``/ct/v1`` API with
  ``use_ct_api=True``, and always verified against a verified root
  (:mod:`~translog.client.proofs`).
* **Entries** are authenticated by a range proof over their entry bundle against a verified
  checkpoint; leaves, receipts, promises and payloads are checked with
  :mod:`translog.formats.receipt`
  and :mod:`translog.core.leaf`. Verified tiles and bundles are cached (they are immutable); tiles
  that fail verification are never cached (:mod:`~translog.client.fetcher`).

Errors: HTTP answers map to the translog error classes and transport failures are
``NetworkError``, mapped in :mod:`~translog.client.transport` and only there. Malformed data
from the log is a ``VerificationError``, so a ``MalformedError`` from a submission always means
the log refused the request. Submissions always carry idempotency keys, so a retry never adds an
entry twice (:mod:`~translog.client.submissions`).

This package imports aiohttp; the package root :mod:`translog` does not import it.
"""

from translog.client.checkpoints import VerifiedCheckpoint as VerifiedCheckpoint
from translog.client.log_client import LogClient as LogClient
from translog.client.sync import SyncLogClient as SyncLogClient

__all__ = ["LogClient", "SyncLogClient", "VerifiedCheckpoint"]
