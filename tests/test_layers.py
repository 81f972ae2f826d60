"""Import-direction rules: the pure layer never pulls in aiohttp or lmdb."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import translog
from translog.cli import COMMAND_MODULES

PURE = [
    "translog",
    "translog.errors",
    "translog.config",
    "translog.merkle",
    "translog.tiles",
    "translog.note",
    "translog.checkpoint",
    "translog.signing",
    "translog.ct",
    "translog.keyfile",
    "translog.jsonfields",
    "translog.leaf",
    "translog.receipt",
    "translog.proof",
    "translog.policy",
    "translog.bundle",
    "translog.verify",
    "translog.metrics",
    "translog.fsck",
    "translog.loglist",
    "translog.monitor.config",
    "translog.monitor.evidence",
    "translog.monitor.recompute",
    "translog.monitor.rules",
    "translog.storage.base",
    "translog.storage.memory",
    "translog.events",
    "translog.events.schema",
    "translog.events.builder",
    "translog.events.presets",
    "translog.events.audit",
    "translog.events.index",
]
FORBIDDEN = ("aiohttp", "lmdb")
PACKAGE = Path(translog.__file__).parent


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_no_io_stack(module: str) -> None:
    base = PACKAGE.parent / module.replace(".", "/")
    if not (base.with_suffix(".py").exists() or (base / "__init__.py").exists()):
        pytest.fail(f"{module} is listed as pure but does not exist")
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_nothing_below_http_imports_http() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("http/", "commands/")) or rel in ("cli.py", "__main__.py"):
            continue
        if "translog." + rel.removesuffix(".py").replace("/", ".") in COMMAND_MODULES:
            continue  # command modules sit beside cli.py and may use its helpers
        bad = {m for m in _imports(path) if m.startswith("translog.http") or m == "translog.cli"}
        assert not bad, f"{rel} imports {bad}: dependencies must point down"


def test_only_the_lmdb_backend_imports_lmdb_at_module_level() -> None:
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        if "lmdb" in names:
            assert rel == "storage/lmdb.py", f"{rel} imports lmdb at module level"
