"""No function in the relay's path is longer than 60 lines (issue 13): the loop, ownership,
the pipeline's stages, the replay guard and the survivor keys read as small steps."""

from __future__ import annotations

import ast
import textwrap

from services.settings import REPO_ROOT

LIMIT = 60
BROKER = REPO_ROOT / "services" / "broker"
PATH = [
    BROKER / "relay.py",
    BROKER / "ownership.py",
    BROKER / "replay.py",
    BROKER / "survivor_keys.py",
    *sorted((BROKER / "pipeline").glob("*.py")),
]


def too_long(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    """Every function (method, nested function) longer than ``limit`` lines, with its
    length, from its ``def`` line (or first decorator) to its last line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            assert node.end_lineno is not None
            length = node.end_lineno - first + 1
            if length > limit:
                found.append((node.name, length))
    return found


def test_the_check_finds_a_long_function() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    assert too_long(f"async def f() -> None:\n{body}") == [("f", LIMIT + 1)]
    assert too_long(f"def f() -> None:\n{body}", limit=LIMIT + 1) == []
    nested = "class C:\n    def m(self) -> None:\n        def g() -> None:\n"
    found = too_long(nested + textwrap.indent(body, "        "))
    assert ("g", LIMIT + 1) in found and ("m", LIMIT + 2) in found


def test_no_function_in_the_relays_path_is_longer_than_60_lines() -> None:
    assert all(path.is_file() for path in PATH), [str(p) for p in PATH if not p.is_file()]
    long = {
        f"{path.relative_to(REPO_ROOT)}:{name}": n
        for path in PATH
        for name, n in too_long(path.read_text())
    }
    assert long == {}
