"""translog: a tamper-evident audit log (RFC 6962 Merkle tree, signed checkpoints, tlog-tiles).

The package root exports only the offline, verification-side surface; it imports neither
aiohttp nor lmdb. Servers, storage and the sequencer are imported by full module path
(``translog.log.sequencer``, ``translog.storage.lmdb``, ``translog.http.app``).
"""

from translog.core.checkpoint import Checkpoint as Checkpoint
from translog.core.checkpoint import open_checkpoint as open_checkpoint
from translog.core.checkpoint import parse_checkpoint as parse_checkpoint
from translog.core.merkle import leaf_hash as leaf_hash
from translog.core.merkle import verify_consistency as verify_consistency
from translog.core.merkle import verify_inclusion as verify_inclusion
from translog.core.vkey import parse_vkey as parse_vkey
from translog.errors import ConfigError as ConfigError
from translog.errors import InconsistencyError as InconsistencyError
from translog.errors import InvalidProofError as InvalidProofError
from translog.errors import InvalidSignatureError as InvalidSignatureError
from translog.errors import MalformedError as MalformedError
from translog.errors import NotFoundError as NotFoundError
from translog.errors import TranslogError as TranslogError
from translog.errors import UnknownKeyError as UnknownKeyError
from translog.errors import VerificationError as VerificationError

__version__ = "0.1.0"

__all__ = [
    "Checkpoint",
    "ConfigError",
    "InconsistencyError",
    "InvalidProofError",
    "InvalidSignatureError",
    "MalformedError",
    "NotFoundError",
    "TranslogError",
    "UnknownKeyError",
    "VerificationError",
    "__version__",
    "leaf_hash",
    "open_checkpoint",
    "parse_checkpoint",
    "parse_vkey",
    "verify_consistency",
    "verify_inclusion",
]
