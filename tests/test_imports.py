"""slidegrad's modules import each other without a cycle, counting imports inside functions too.

The graph is read from the source with ``ast``: every ``import`` / ``from … import`` in
``src/slidegrad/**/*.py``, at module level or inside functions and classes, absolute
(``slidegrad.x``) or relative (``.x``, ``..x``).  ``from pkg import name`` is an edge to
``pkg.name`` where that is a module, else to ``pkg``.  Imports under ``if TYPE_CHECKING:``
never run and are left out; so are dynamic ones (``importlib.import_module``), and the
implicit import of a module's parent packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

SRC = REPO / "src"
PACKAGE = "slidegrad"

Edge = tuple[str, str, str]  # importer, imported, "file:line"


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` that can run (module level, functions, classes, branches)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path = SRC, package: str = PACKAGE) -> tuple[set[str], list[Edge]]:
    """The package's modules and its import edges between them."""
    files = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")  # `import a.b.c` imports the deepest module we know
                    known = [".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules]
                    targets += known[:1]
            else:
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:
                        targets.append(f"{source}.{alias.name}")
                    elif source in modules:
                        targets.append(source)
            edges += [(name, t, f"{where}:{node.lineno}") for t in dict.fromkeys(targets) if t != name]
    return modules, edges


Cycle = tuple[list[str], list[Edge]]  # the modules that import each other, and one cycle through them


def find_cycles(modules: set[str], edges: list[Edge]) -> list[Cycle]:
    """Each group of modules that import each other (a strongly connected component, sorted) with one
    import cycle through its first module (edges: importer, imported, file:line); ``[]`` where none."""
    graph: dict[str, list[Edge]] = {m: [] for m in modules}
    for edge in edges:
        graph.setdefault(edge[0], []).append(edge)
    # Tarjan's strongly connected components, iteratively
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(graph[node]):
                work.append((node, i + 1))
                target = graph[node][i][1]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                group = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return [(sorted(group), _cycle_in(graph, group)) for group in sorted(groups, key=min)]


def _cycle_in(graph: dict[str, list[Edge]], group: set[str]) -> list[Edge]:
    """A shortest cycle through the group's first module, staying inside the group (breadth-first)."""
    start = min(group)
    came: dict[str, Edge] = {}
    queue = [start]
    for node in queue:
        for edge in graph[node]:
            target = edge[1]
            if target not in group:
                continue
            if target == start:
                cycle = [edge]
                while cycle[0][0] != start:
                    cycle.insert(0, came[cycle[0][0]])
                return cycle
            if target not in came:
                came[target] = edge
                queue.append(target)
    raise AssertionError(f"no cycle in {sorted(group)}")  # a strongly connected group always has one


def describe(cycles: list[Cycle]) -> str:
    return "\n".join(
        f"{', '.join(group)} import each other, e.g.\n"
        + "\n".join(f"  {a} -> {b}   ({where})" for a, b, where in cycle)
        for group, cycle in cycles
    )


def test_slidegrad_has_no_import_cycle():
    modules, edges = import_graph()
    assert f"{PACKAGE}.model" in modules and len(modules) > 10
    cycles = find_cycles(modules, edges)
    assert not cycles, f"{len(cycles)} import cycle(s) among slidegrad's modules:\n" + describe(cycles)


def test_the_graph_sees_function_level_and_relative_imports():
    _, edges = import_graph()
    pairs = {(a, b) for a, b, _ in edges}
    # the mask job imports SaliencyMap inside the function; the backends import the leaf module
    assert ("slidegrad.jobs.masks", "slidegrad.saliency") in pairs
    assert ("slidegrad.backends.torch_backend", "slidegrad.model_files") in pairs
    assert ("slidegrad.backends", "slidegrad.backends.torch_backend") in pairs  # inside the torch Framework's import
    assert ("slidegrad.backends.torch_backend", "slidegrad.backends.common") in pairs  # from .common import
    assert ("slidegrad.slide", "slidegrad.errors") in pairs  # absolute: from slidegrad.errors import


def test_a_cycle_is_found_and_reported(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .. import b\ndef g():\n    import pkg.a\n"
    )
    (pkg / "d.py").write_text("from .sub.c import g\n")
    _, edges = import_graph(tmp_path, "pkg")
    assert {(a, b) for a, b, _ in edges} == {
        ("pkg.a", "pkg.b"),
        ("pkg.b", "pkg.sub.c"),
        ("pkg.sub.c", "pkg.a"),
        ("pkg.d", "pkg.sub.c"),
    }
    (pkg / "e.py").write_text("import pkg.f\n")
    (pkg / "f.py").write_text("from .e import x\n")
    cycles = find_cycles(*import_graph(tmp_path, "pkg"))
    assert [group for group, _ in cycles] == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.e", "pkg.f"]]
    assert [[e[0] for e in cycle] for _, cycle in cycles] == [["pkg.a", "pkg.b", "pkg.sub.c"], ["pkg.e", "pkg.f"]]
    assert "pkg.b -> pkg.sub.c" in describe(cycles) and "b.py:2" in describe(cycles)
    (pkg / "sub" / "c.py").write_text("def g():\n    pass\n")
    (pkg / "f.py").write_text("")
    assert find_cycles(*import_graph(tmp_path, "pkg")) == []
