"""Tiny loader for the published test vectors the tests read (``tests/testdata``).

The vectors are vendored into the repository (``tests/testdata``, a copy of the upstream
``shared/testdata`` with a README per folder saying where each file came from), so a fresh
clone runs the suite with nothing beside it. Set ``TRANSLOG_SHARED_TESTDATA`` to read another
copy. ``tests/unit/test_testdata.py`` compares the vendored copy with ``../shared/testdata``
when that folder is present. A missing folder makes the tests FAIL with a clear message
instead of silently skipping them.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

_ENV = "TRANSLOG_SHARED_TESTDATA"
_DEFAULT = Path(__file__).resolve().parent / "testdata"
#: The upstream copy, beside the repository (optional; compared with the vendored one).
UPSTREAM = Path(__file__).resolve().parent.parent.parent / "shared" / "testdata"
SHARED = Path(os.environ[_ENV]) if os.environ.get(_ENV) else _DEFAULT


def shared_dir() -> Path:
    """Return the test-data folder, raising a clear error if it is missing."""
    if not SHARED.is_dir():
        raise FileNotFoundError(
            f"test data not found at {SHARED}: the vendored copy tests/testdata is missing "
            f"(restore it from git) or {_ENV} points to the wrong folder"
        )
    return SHARED


def load_json(relpath: str | Path) -> Any:
    """Load a JSON file given relative to the test-data folder."""
    with (shared_dir() / relpath).open(encoding="utf-8") as f:
        return json.load(f)


def b64(s: str | None) -> bytes:
    """Decode standard base64; ``None`` and ``""`` (Go's empty ``[]byte``) give ``b""``."""
    return base64.b64decode(s, validate=True) if s else b""


def probe_files(kind: str) -> list[str]:
    """List the transparency-dev probe files of ``kind`` (inclusion or consistency).

    Paths are relative to the test-data folder and sorted. An empty or missing folder raises,
    so a broken checkout cannot turn into zero parametrized tests.
    """
    root = shared_dir() / "transparency-dev-merkle" / kind
    files = sorted(p.relative_to(SHARED).as_posix() for p in root.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no {kind} probe files under {root}")
    return files
