"""The development tools (tools/) stay outside the product: no module of services/ imports them,
except the ``accord`` CLI's commands that run them (``accord bench ...``, ``accord faults``),
lazily, inside the command's function, so that importing the product never loads a tool."""

from __future__ import annotations

import ast
import subprocess
import sys

from services.settings import REPO_ROOT

SERVICES = REPO_ROOT / "services"
LAZY_ALLOWED = {SERVICES / "cli.py"}


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module] if node.level == 0 and node.module else []


def tool_imports(tree: ast.AST) -> list[tuple[int, bool]]:
    """(line, inside a function) of every import of ``tools`` or a module under it."""
    found: list[tuple[int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom) and any(
                n == "tools" or n.startswith("tools.") for n in imported(child)
            ):
                found.append((child.lineno, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def test_the_walk_finds_module_level_and_lazy_imports() -> None:
    tree = ast.parse("import tools.bench\ndef f():\n    from tools.bench import faults\n")
    assert tool_imports(tree) == [(1, False), (3, True)]
    assert tool_imports(ast.parse("import toolsmith\nfrom services import tools\n")) == []


def test_no_product_module_imports_a_tool() -> None:
    offences = []
    for path in sorted(SERVICES.rglob("*.py")):
        for line, lazy in tool_imports(ast.parse(path.read_text(), str(path))):
            if not (lazy and path in LAZY_ALLOWED):
                offences.append(f"{path.relative_to(REPO_ROOT)}:{line}")
    assert offences == []


def test_importing_the_cli_and_the_services_loads_no_tool() -> None:
    script = (
        "import sys, services.cli, services.api, services.runtime, services.sink_worker; "
        "print(sorted(m for m in sys.modules if m == 'tools' or m.startswith('tools.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
