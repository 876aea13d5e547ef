"""The package's layers, checked from the source: which module may import which.

Every module under src/cae is parsed with `ast` (nothing is imported), and every `import` in
it, at module level or inside a function, becomes an edge of the import graph. The rules:
core stands on nothing above it (see cae/core/__init__.py), fast only on core, experiments never
reach report, apps or the CLI, report never reaches apps, the CLI or the pipeline
(cae.reproduce), no module takes another module's private (`_name`) names, and there are no
cycles. Function-level imports count: deferring an import hides a dependency, it does not remove it.

A rule that the code breaks today lists those breaks in its ALLOWED_* set: the test fails on
any new break, and warns about an allowed one that is gone so the entry can be deleted.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "cae"


@dataclass(frozen=True)
class Edge:
    """`importer` imports `target` (a module of the package); `name` is what it takes from it."""

    importer: str
    target: str
    name: str  # the imported name, or "" for the module itself
    line: int

    def __str__(self) -> str:
        taken = f" ({self.name})" if self.name else ""
        return f"{self.importer} -> {self.target}{taken}, line {self.line}"


# ----------------------------------------------------------------------------- the graph
def module_name(path: Path) -> str:
    """'cae.core.train' for src/cae/core/train.py, 'cae.core' for src/cae/core/__init__.py."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def known_prefix(dotted: str) -> str:
    """The longest prefix of `dotted` that is a module of the package ('' if none)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in MODULES:
            return ".".join(parts[:n])
    return ""


def from_base(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def edges_of(importer: str) -> list[Edge]:
    """Every import of another package module in `importer`, at any depth of the code."""
    edges = []
    for node in ast.walk(ast.parse(MODULES[importer].read_text())):
        if isinstance(node, ast.Import):
            edges += [Edge(importer, known_prefix(a.name), "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_base(importer, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"  # `from cae.core import runs` imports a module
                if submodule in MODULES:
                    edges.append(Edge(importer, submodule, "", node.lineno))
                else:
                    edges.append(Edge(importer, known_prefix(base), alias.name, node.lineno))
    return [e for e in edges if e.target and e.target != importer]


EDGES: list[Edge] = [e for m in MODULES for e in edges_of(m)]


def private_attributes_of(importer: str) -> list[Edge]:
    """`module._name` where `module` is a name this file bound to another package module."""
    tree = ast.parse(MODULES[importer].read_text())
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom):
            base = from_base(importer, node)
            bound.update({a.asname or a.name: f"{base}.{a.name}" for a in node.names
                          if f"{base}.{a.name}" in MODULES})
    return [Edge(importer, bound[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in bound
            and _is_private(n.attr) and bound[n.value.id] != importer]


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


# ----------------------------------------------------------------------------- the layers
def layer(module: str) -> str:
    """The layer a module belongs to: its first name under `cae`; the package itself is 'api'."""
    if module == ROOT:
        return "api"  # cae/__init__.py: the public API, re-exporting core with the fast path on
    return {"errors": "base"}.get(module.split(".")[1], module.split(".")[1])


# What a layer may import (MAY_IMPORT: nothing else) or must not (MUST_NOT_IMPORT). `base`
# (cae.errors) is for everyone. The package itself ('api') counts as above core and fast: it imports
# cae.fast, so `from cae import ...` in core would pull the fast path in.
MAY_IMPORT = {
    "core": {"core", "base"},
    "fast": {"fast", "core", "base"},
}
MUST_NOT_IMPORT = {
    # reproduce is listed too: it imports report, so reaching it would reach report
    "experiments": {"report", "apps", "cli", "reproduce"},
    "report": {"apps", "cli", "reproduce"},
}

# Known breaks of a rule, as (importer, target, name), kept only until their owner fixes them:
# none when this test was written. Delete an entry when its import is gone; never add one to
# make a new import pass.
ALLOWED_LAYER_BREAKS: set[tuple[str, str, str]] = set()
ALLOWED_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()


def layer_breaks() -> list[Edge]:
    """Every import that goes against MAY_IMPORT or MUST_NOT_IMPORT."""
    breaks = []
    for e in EDGES:
        mine, theirs = layer(e.importer), layer(e.target)
        if mine in MAY_IMPORT and theirs not in MAY_IMPORT[mine]:
            breaks.append(e)
        elif theirs in MUST_NOT_IMPORT.get(mine, ()):
            breaks.append(e)
    return breaks


def private_imports() -> list[Edge]:
    """`from m import _name` and `m._name` across modules (dunders such as __version__ are public)."""
    from_imports = [e for e in EDGES if _is_private(e.name)]
    return from_imports + [e for m in MODULES for e in private_attributes_of(m)]


def _check(found: list[Edge], allowed: set[tuple[str, str, str]], rule: str) -> None:
    """Fail on a break not in `allowed`; warn about an allowed one that is no longer there."""
    keys = {(e.importer, e.target, e.name) for e in found}
    new = [str(e) for e in found if (e.importer, e.target, e.name) not in allowed]
    assert not new, f"{rule}:\n  " + "\n  ".join(new)
    for gone in sorted(allowed - keys):
        warnings.warn(f"{rule}: {gone} is allowed but no longer happens; delete it from the list", stacklevel=2)


# ----------------------------------------------------------------------------- the tests
def test_every_module_is_parsed_and_the_graph_is_not_empty() -> None:
    assert {"cae", "cae.core.train", "cae.fast", "cae.report.content", "cae.cli"} <= set(MODULES)
    assert any(e.importer == "cae.cli" for e in EDGES)
    # function-level imports count: cae.cli imports its commands inside the functions that run them
    assert any(e.importer == "cae.cli" and e.target == "cae.reproduce" for e in EDGES)


def cycles() -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted names."""
    graph = {m: sorted({e.target for e in EDGES if e.importer == m}) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for t in graph[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            group = []
            while not group or group[-1] != m:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for m in graph:
        if m not in index:
            visit(m)
    return groups


def cycle_through(group: list[str]) -> str:
    """One import cycle inside a strongly connected `group`, as 'a -> b -> ... -> a' (shortest, by BFS)."""
    start = group[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for m in frontier:
            for t in sorted({e.target for e in EDGES if e.importer == m and e.target in group}):
                if t == start:
                    path = [m]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return " -> ".join([start, *reversed(path[:-1]), start])
                if t not in came_from:
                    came_from[t] = m
                    nxt.append(t)
        frontier = nxt
    return " <-> ".join(group)


def test_no_import_cycles() -> None:
    found = [cycle_through(group) for group in cycles()]
    assert not found, "import cycles (function-level imports included):\n  " + "\n  ".join(found)


def test_layers_import_only_downwards() -> None:
    _check(layer_breaks(), ALLOWED_LAYER_BREAKS, "imports against the layers")


def test_no_private_names_imported_from_another_module() -> None:
    _check(private_imports(), ALLOWED_PRIVATE_IMPORTS, "private names imported from another module")
