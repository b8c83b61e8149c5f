"""A method is one unit (issue 25): no method name is compared as a string outside ``methods.py`` and the
method's own module, and no function of ``methods.py`` or ``engines/`` is longer than :data:`MAX_LINES`.

Read from the source with ``ast``, as tests/test_imports.py reads imports: a comparison (``==``, ``!=``,
``in``, ``not in``) with a string literal that names a method of :data:`~slidegrad.methods.METHODS`, or
with a tuple, list or set holding one, fails the test naming its file:line.  A method's own module is the
one its declaration names (:attr:`~slidegrad.methods.Method.native`, ``"module:function"`` under
``slidegrad.engines``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from slidegrad.methods import METHODS

from .conftest import REPO

PACKAGE = REPO / "src" / "slidegrad"
MAX_LINES = 80


def own_module(name: str) -> Path:
    """The file of ``name``'s native function (``engines/<module path>.py`` or a package's ``__init__``)."""
    module = METHODS[name].native.partition(":")[0].replace(".", "/")
    path = PACKAGE / "engines" / f"{module}.py"
    return path if path.exists() else PACKAGE / "engines" / module / "__init__.py"


def _names_in(node: ast.expr) -> list[str]:
    """Method names among the string literals of ``node`` (a constant, or a tuple/list/set of them)."""
    values = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str) and v.value in METHODS]


def name_comparisons(path: Path) -> list[tuple[str, int]]:
    """``(method name, line)`` of every comparison in ``path`` against a method name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(name, node.lineno) for name in _names_in(operand)]
    return found


def test_no_method_name_is_compared_outside_its_declaration_and_module():
    allowed = {PACKAGE / "methods.py"}
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path in allowed:
            continue
        for name, line in name_comparisons(path):
            if path != own_module(name):
                offences.append(f"{path.relative_to(REPO)}:{line}: compares the method name {name!r}")
    assert not offences, "method names compared outside methods.py and the method's module:\n" + "\n".join(offences)


def test_the_check_sees_the_comparisons_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('a == "gradcam"\nif x in ("xrai", "other"): pass\nb != "vanilla"\nc == "not_a_method"\n')
    assert name_comparisons(sample) == [("gradcam", 1), ("xrai", 2), ("vanilla", 3)]


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_function_in_methods_or_engines_is_longer_than_80_lines():
    files = [PACKAGE / "methods.py", *sorted((PACKAGE / "engines").rglob("*.py"))]
    offences = [line for path in files for line in long_functions(path)]
    assert not offences, f"functions over {MAX_LINES} lines:\n" + "\n".join(offences)
