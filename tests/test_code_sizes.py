"""Size limits of the package's code (issue 13): no class of 200 lines or more, no function over 40.

Measured with ``ast`` from the ``class``/``def`` line to the last line of the body,
docstring included; decorators are not counted. Pure and fast: no import of the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ray_mlops"
MAX_CLASS_LINES = 199
MAX_FUNCTION_LINES = 40


def _sizes() -> list[tuple[str, str, int]]:
    """``(kind, where, lines)`` of every class and function (methods and nested ones too)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}"
                found.append((kind, where, node.end_lineno - node.lineno + 1))
    return found


def test_the_sizes_are_measured_on_the_whole_package():
    sizes = _sizes()
    assert len([s for s in sizes if s[0] == "class"]) > 20 and len(sizes) > 500


def test_no_class_of_200_lines_or_more():
    over = [f"{where} ({lines} lines)" for kind, where, lines in _sizes() if kind == "class" and lines > MAX_CLASS_LINES]
    assert over == [], "split these classes into parts with one job each:\n" + "\n".join(over)


def test_no_function_over_40_lines():
    over = [f"{where} ({lines} lines)" for kind, where, lines in _sizes()
            if kind == "function" and lines > MAX_FUNCTION_LINES]
    assert over == [], "split these functions:\n" + "\n".join(over)
