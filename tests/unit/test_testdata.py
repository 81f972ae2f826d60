"""The vendored test vectors (tests/testdata) are complete, documented, and match upstream."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.vectors import SHARED, UPSTREAM, shared_dir


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_tests_read_the_copy_inside_the_repository() -> None:
    repo = Path(__file__).resolve().parent.parent.parent
    if "TRANSLOG_SHARED_TESTDATA" in os.environ:
        pytest.skip("TRANSLOG_SHARED_TESTDATA points the tests at another copy")
    assert shared_dir() == SHARED == repo / "tests" / "testdata"
    assert (shared_dir() / "README.md").is_file()


def test_every_vendored_folder_says_where_its_data_came_from() -> None:
    root = Path(__file__).resolve().parent.parent / "testdata"
    folders = [d for d in root.iterdir() if d.is_dir()]
    assert len(folders) >= 6, folders
    missing = [d.name for d in folders if not (d / "README.md").is_file()]
    assert not missing, f"folders without a README (provenance): {missing}"


@pytest.mark.skipif(not UPSTREAM.is_dir(), reason="no upstream ../shared/testdata beside the repo")
def test_the_vendored_copy_matches_upstream() -> None:
    root = Path(__file__).resolve().parent.parent / "testdata"
    ours, theirs = digests(root), digests(UPSTREAM)
    added = sorted(set(ours) - set(theirs))
    removed = sorted(set(theirs) - set(ours))
    changed = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])
    assert not (added or removed or changed), (
        f"tests/testdata differs from {UPSTREAM}: only here {added}, only upstream {removed}, "
        f"changed {changed}; copy the upstream folder again (cp -r ../shared/testdata tests/)"
    )
