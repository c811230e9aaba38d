"""No import cycle between the modules of ``services/``, nor between its packages.

An ``ast`` walk of every module (imports at any depth count: in functions and under
``TYPE_CHECKING`` too, since either way one module cannot be understood without the other).
``from pkg import name`` depends on ``pkg.name`` when that is a module, else on ``pkg``, as
grimp counts it. A package is a folder directly under ``services/`` (``services/consent/``,
...); its edges are those of its modules. Top-level modules (``services/api.py``, ...) are
checked as modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Imports that close a cycle and are removed by another branch of issue 13 merged with this
# one (or left, said why). Each must still exist: the test fails once it is gone, so its entry
# goes with the fix. No other import may close a cycle.
IN_FLIGHT: dict[tuple[str, str], str] = {}


def modules(root: Path, package: str = "services") -> dict[str, Path]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _known(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level - 1
            anchor = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                anchor = anchor.rpartition(".")[0]
            base = f"{anchor}.{base}" if base else anchor
        for alias in node.names:
            yield f"{base}.{alias.name}"  # resolved to the module, or to ``base``, below


def graph(root: Path, package: str = "services") -> dict[str, set[str]]:
    """Module → the modules of ``package`` it imports."""
    known = modules(root, package)
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(node, module, is_package):
                target = _known(name, known)
                if target is not None and target != module:
                    edges[module].add(target)
    return edges


def packages(edges: dict[str, set[str]], package: str = "services") -> dict[str, set[str]]:
    """Folder directly under ``package`` → the folders its modules import."""

    def folder(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 or module in folders else None

    folders = {".".join(m.split(".")[:2]) for m in edges if m.count(".") >= 2}
    out: dict[str, set[str]] = {f: set() for f in folders}
    for module, targets in edges.items():
        here = folder(module)
        for target in targets:
            there = folder(target)
            if here and there and here != there:
                out[here].add(there)
    return out


def cycles(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(edges.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def _shown(found: Iterable[frozenset[str]]) -> list[list[str]]:
    return sorted(sorted(c) for c in found)


def test_no_import_cycle_between_modules_or_packages() -> None:
    edges = graph(ROOT)
    gone = [edge for edge in IN_FLIGHT if edge[1] not in edges.get(edge[0], set())]
    assert gone == [], "fixed: remove these from IN_FLIGHT"
    for importer, imported in IN_FLIGHT:
        edges[importer].discard(imported)
    assert _shown(cycles(edges)) == []
    assert _shown(cycles(packages(edges))) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in {"pkg/__init__.py": "", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "files",
    [
        # top-level, and in a function or under TYPE_CHECKING
        {"pkg/a.py": "import pkg.b\n", "pkg/b.py": "def f():\n    from pkg import a\n"},
        {
            "pkg/a.py": "from pkg.b import x\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pkg.c.d import y\n",
            "pkg/c/__init__.py": "",
            "pkg/c/d.py": "from .. import a\n",  # relative
        },
    ],
)
def test_a_planted_module_cycle_is_found(tmp_path: Path, files: dict[str, str]) -> None:
    edges = graph(_tree(tmp_path, files), "pkg")
    assert any({"pkg.a"} < c for c in cycles(edges))


def test_a_planted_package_cycle_is_found(tmp_path: Path) -> None:
    files = {
        "pkg/x/__init__.py": "",
        "pkg/x/one.py": "from pkg.y import two\n",
        "pkg/y/__init__.py": "",
        "pkg/y/two.py": "",
        "pkg/y/three.py": "from pkg.x.one import f\n",
    }
    edges = graph(_tree(tmp_path, files), "pkg")
    assert cycles(edges) == []  # no module cycle: one → two, three → one
    assert cycles(packages(edges, "pkg")) == [frozenset({"pkg.x", "pkg.y"})]


def test_a_module_importing_its_own_package_names_is_no_cycle(tmp_path: Path) -> None:
    # ``from pkg.sub import sibling`` in pkg/sub/mod.py depends on the sibling module only
    files = {
        "pkg/sub/__init__.py": "from pkg.sub import mod\n",
        "pkg/sub/mod.py": "from pkg.sub import tls\n",
        "pkg/sub/tls.py": "",
    }
    assert cycles(graph(_tree(tmp_path, files), "pkg")) == []
