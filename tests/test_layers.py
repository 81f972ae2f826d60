"""The package's shape is a test: layers point down, no import circles, no private names shared.

The import graph is read from the source (``ast``), every ``import`` and ``from … import``
anywhere in a module, function bodies included: a lazy import is still a dependency. Each rule
names every offending import when it fails. An exemption must be listed in ``EXEMPT`` with its
reason; there are none today.

Layers, lowest first (``LAYERS``). A module belongs to the longest unit that prefixes its name.
A module may import from its own unit and from any lower layer. Two different units on the same
layer are peers and may not import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import translog

PACKAGE = Path(translog.__file__).parent

#: Units by layer, lowest first. docs/ARCHITECTURE.md explains each one.
LAYERS: list[tuple[str, ...]] = [
    ("translog.errors",),
    ("translog.metrics", "translog.keyfile"),
    ("translog.core",),
    ("translog",),  # the package root: re-exports the offline surface of core
    ("translog.formats",),
    ("translog.config",),
    ("translog.storage",),
    ("translog.log",),
    ("translog.client",),
    ("translog.publish",),
    ("translog.witness",),
    ("translog.monitor",),
    ("translog.gossip",),
    ("translog.ingest",),  # listeners beside the HTTP server (syslog over TLS)
    ("translog.http",),
    ("translog.http.multiprocess",),
    ("translog.cli",),
    ("translog.__main__",),
]

#: (importer, imported) -> why the import is allowed although it breaks a rule.
EXEMPT: dict[tuple[str, str], str] = {}

#: Layers whose modules must import neither aiohttp nor lmdb (offline verification).
PURE_UNITS = ("translog.errors", "translog.core", "translog.formats", "translog.config")
IO_STACK = ("aiohttp", "lmdb")

MAX_LINES = 600
MAX_ROOT_MODULES = 8


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    names: tuple[str, ...]

    def where(self) -> str:
        return f"{self.importer}:{self.line} imports {self.imported}"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = module_files()


def resolve(importer: str, path: Path, node: ast.ImportFrom) -> str | None:
    if not node.level:
        return node.module
    base = importer.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES:
                    yield Import(name, a.name, node.lineno, ())
        elif isinstance(node, ast.ImportFrom):
            mod = resolve(name, path, node)
            if mod is None or mod not in MODULES:
                continue
            plain: list[str] = []
            for a in node.names:
                sub = f"{mod}.{a.name}"
                if sub in MODULES:
                    yield Import(name, sub, node.lineno, ())
                else:
                    plain.append(a.name)
            if plain:
                yield Import(name, mod, node.lineno, tuple(plain))


GRAPH: list[Import] = [
    imp for name, path in MODULES.items() for imp in imports_of(name, path) if imp.imported != name
]


def unit_of(module: str) -> str:
    units = [u for layer in LAYERS for u in layer if module == u or module.startswith(u + ".")]
    if not units:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")
    return max(units, key=len)


RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        unit_of(module)


def layer_violations(graph: list[Import]) -> list[str]:
    bad = []
    for imp in graph:
        if (imp.importer, imp.imported) in EXEMPT:
            continue
        a, b = unit_of(imp.importer), unit_of(imp.imported)
        if a == b:
            continue
        if RANK[b] > RANK[a]:
            bad.append(f"{imp.where()}: upward, layer {a} ({RANK[a]}) -> {b} ({RANK[b]})")
        elif RANK[b] == RANK[a]:
            bad.append(f"{imp.where()}: sideways between peers {a} and {b}")
    return bad


def test_no_module_imports_from_a_higher_layer() -> None:
    bad = layer_violations(GRAPH)
    assert not bad, f"{len(bad)} imports break the layer order:\n" + "\n".join(bad)


def cycles(graph: list[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for imp in graph:
        if (imp.importer, imp.imported) not in EXEMPT:
            edges[imp.importer].add(imp.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    found = cycles(GRAPH)
    lines = []
    for comp in found:
        members = set(comp)
        inner = [i.where() for i in GRAPH if i.importer in members and i.imported in members]
        lines.append(" <-> ".join(comp) + "\n    " + "\n    ".join(inner))
    assert not found, f"{len(found)} import circles:\n" + "\n".join(lines)


def private_imports(graph: list[Import]) -> list[str]:
    bad = []
    for imp in graph:
        for n in imp.names:
            dunder = n.startswith("__") and n.endswith("__")
            exempt = (imp.importer, f"{imp.imported}.{n}") in EXEMPT
            if n.startswith("_") and not dunder and not exempt:
                bad.append(f"{imp.where()}: private name {n}")
    return bad


def private_attribute_uses() -> list[str]:
    """``mod._name`` where ``mod`` is another translog module bound by an import."""
    bad = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        bound: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                mod = resolve(name, path, node)
                for a in node.names:
                    if mod and f"{mod}.{a.name}" in MODULES:
                        bound[a.asname or a.name] = f"{mod}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname and a.name in MODULES:
                        bound[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and bound[node.value.id] != name
            ):
                bad.append(f"{name}:{node.lineno} uses {bound[node.value.id]}.{node.attr}")
    return bad


def test_no_private_name_crosses_modules() -> None:
    bad = private_imports(GRAPH) + private_attribute_uses()
    assert not bad, f"{len(bad)} private names used from another module:\n" + "\n".join(bad)


def test_modules_are_at_most_600_lines() -> None:
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_few_modules_at_the_package_root() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the package root: {root}"


def pure_modules() -> list[str]:
    return [m for m in MODULES if unit_of(m) in PURE_UNITS]


@pytest.mark.parametrize("module", pure_modules())
def test_pure_module_imports_no_io_stack(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = [m for m in {IO_STACK!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"


def test_only_the_lmdb_backend_imports_lmdb_at_module_level() -> None:
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
        if "lmdb" in names:
            assert name.startswith("translog.storage.lmdb"), f"{name} imports lmdb at module level"


# The rules themselves must catch what they are meant to catch.


def test_rules_catch_an_upward_import_a_circle_and_a_private_name() -> None:
    up = Import("translog.core.merkle", "translog.http.app", 1, ())
    assert layer_violations([up]) == [
        "translog.core.merkle:1 imports translog.http.app: upward, layer translog.core (2) -> "
        f"translog.http ({RANK['translog.http']})"
    ]
    peer = Import("translog.metrics", "translog.keyfile", 3, ())
    assert "sideways" in layer_violations([peer])[0]
    loop = [
        Import("translog.core.merkle", "translog.core.tiles", 1, ()),
        Import("translog.core.tiles", "translog.core.note", 1, ()),
        Import("translog.core.note", "translog.core.merkle", 1, ()),
    ]
    assert cycles(loop) == [["translog.core.merkle", "translog.core.note", "translog.core.tiles"]]
    priv = Import("translog.log.fsck", "translog.core.merkle", 9, ("_secret", "__all__", "ok"))
    assert private_imports([priv]) == [
        "translog.log.fsck:9 imports translog.core.merkle: private name _secret"
    ]


def _route_registrations(tree: ast.Module) -> Iterator[str]:
    """The path strings (f-string tails) of every ``add_post(...)`` call in a module."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_post"
            and node.args
        ):
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) and arg.values:
                last = arg.values[-1]
                if isinstance(last, ast.Constant):
                    yield str(last.value)
            elif isinstance(arg, ast.Constant):
                yield str(arg.value)


def test_one_submission_path() -> None:
    """One ``POST /add`` and one ``POST /add-batch`` handler, registered in one place, and
    only the log's submission API hands entries to the sequencer."""
    routes: dict[str, list[str]] = {}
    submitters: list[str] = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for route in _route_registrations(tree):
            if route in ("/add", "/add-batch"):
                routes.setdefault(route, []).append(name)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in (
                "post_add",
                "post_add_batch",
            ):
                routes.setdefault(node.name, []).append(name)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("submit", "accept_prepared")
                and isinstance(node.func.value, ast.Attribute | ast.Name)
                and (
                    node.func.value.attr
                    if isinstance(node.func.value, ast.Attribute)
                    else node.func.value.id
                )
                in ("log", "the_log", "_log")
            ):
                submitters.append(name)
    where = "translog.http.submit"
    assert routes == {
        "/add": [where],
        "/add-batch": [where],
        "post_add": [where],
        "post_add_batch": [where],
    }
    assert set(submitters) <= {"translog.log.submission", "translog.log.sequencer"}, submitters
    assert "translog.log.submission" in submitters
