"""Every test that runs Snakemake carries ``@pytest.mark.workflow``, so ``-m "not workflow"`` is a fast lane.

Read from the source with ``ast``, like tests/test_imports.py.  A function *runs Snakemake* when its
body holds a command line: ``"snakemake"`` as an item of a list, tuple or call
(``[sys.executable, "-m", "snakemake", ...]``), or a shell command starting ``"snakemake "``; or
calls a function that does (``run_snakemake`` in tests/conftest.py, a module's own helper, one
imported from another test module); or, for a test or a fixture, takes a fixture that does (from its module or a conftest.py above it, also through
``@pytest.mark.usefixtures``).  A test is marked by its own decorator, its class's, or the module's
``pytestmark``.  Names only: a helper passed around as a value, or ``getattr``, is not followed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

from .conftest import REPO

TESTS = REPO / "tests"
MARK = "workflow"

Key = tuple[Path, str]  # (module file, function name)


@dataclass
class Module:
    path: Path
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)  # module-level defs
    fixtures: dict[str, str] = field(default_factory=dict)  # fixture name -> function name
    imports: dict[str, Key] = field(default_factory=dict)  # local name -> (test module, name)
    tests: list[tuple[str, ast.FunctionDef, list[ast.expr]]] = field(default_factory=list)  # id, def, class decorators
    marks: list[ast.expr] = field(default_factory=list)  # module-level pytestmark


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.insert(0, node.id)
    return ".".join(parts)


def _fixture_name(func: ast.FunctionDef) -> str | None:
    for deco in func.decorator_list:
        if _dotted(deco) in ("pytest.fixture", "fixture"):
            if isinstance(deco, ast.Call):
                for kw in deco.keywords:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        return kw.value.value
            return func.name
    return None


def _resolve(path: Path, node: ast.ImportFrom, root: Path) -> Path | None:
    """The test module file a relative ``from .x import y`` names, if it is one."""
    if not node.level:
        return None
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    target = base.joinpath(*(node.module or "").split(".")) if node.module else base / "__init__"
    file = target.with_suffix(".py")
    return file if file.is_file() and file.is_relative_to(root) else None


def read_module(path: Path, root: Path) -> Module:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module = Module(path)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            module.functions[node.name] = node
            name = _fixture_name(node)
            if name:
                module.fixtures[name] = node.name
            elif node.name.startswith("test"):
                module.tests.append((node.name, node, []))
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = _fixture_name(item)
                    if name:  # a class's functions: kept as "Class.name", a name no call can reach
                        module.functions[f"{node.name}.{item.name}"] = item
                        module.fixtures[name] = f"{node.name}.{item.name}"
                    elif item.name.startswith("test"):
                        module.functions[f"{node.name}.{item.name}"] = item
                        module.tests.append((f"{node.name}::{item.name}", item, node.decorator_list))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(path, node, root)
            if source:
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = (source, alias.name)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            value = node.value
            module.marks = list(value.elts) if isinstance(value, (ast.List, ast.Tuple)) else [value]
    return module


def _says_snakemake(func: ast.AST) -> bool:
    """A command line in ``func``: ``"snakemake"`` as an item of a list, tuple or call
    (``[sys.executable, "-m", "snakemake", ...]``), or a string that starts ``"snakemake "``."""
    for node in ast.walk(func):
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else node.args if isinstance(node, ast.Call) else []
        if any(isinstance(item, ast.Constant) and item.value == "snakemake" for item in items):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("snakemake "):
            return True
    return False


def _called_names(func: ast.AST) -> set[str]:
    return {node.func.id for node in ast.walk(func) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


def _fixtures_used(func: ast.FunctionDef) -> set[str]:
    args = func.args
    names = {a.arg for a in args.posonlyargs + args.args + args.kwonlyargs}
    for deco in func.decorator_list:
        if _dotted(deco) == "pytest.mark.usefixtures" and isinstance(deco, ast.Call):
            names |= {a.value for a in deco.args if isinstance(a, ast.Constant)}
    return names


def conftests(path: Path, root: Path) -> list[Path]:
    """The conftest.py files that apply to a test module, nearest first."""
    found, folder = [], path.parent
    while folder.is_relative_to(root):
        if (folder / "conftest.py").is_file():
            found.append(folder / "conftest.py")
        folder = folder.parent
    return found


def runners(modules: dict[Path, Module], root: Path) -> set[Key]:
    """Every (module, function) that runs Snakemake, directly or through a call or a fixture."""
    found = {(p, n) for p, m in modules.items() for n, f in m.functions.items() if _says_snakemake(f)}

    def fixture(path: Path, name: str) -> Key | None:
        for source in [path, *conftests(path, root)]:
            if source in modules and name in modules[source].fixtures:
                return source, modules[source].fixtures[name]
        return None

    def callee(path: Path, name: str) -> Key | None:
        module = modules[path]
        if name in module.functions:
            return path, name
        if name in module.imports and module.imports[name][0] in modules:
            return module.imports[name]
        return None

    changed = True
    while changed:
        changed = False
        for path, module in modules.items():
            for name, func in module.functions.items():
                if (path, name) in found:
                    continue
                used = [callee(path, n) for n in _called_names(func)]
                if _fixture_name(func) or name.startswith("test") or "." in name:
                    used += [fixture(path, n) for n in _fixtures_used(func)]
                if any(key in found for key in used if key):
                    found.add((path, name))
                    changed = True
    return found


def _is_mark(node: ast.expr) -> bool:
    return _dotted(node) in (f"pytest.mark.{MARK}", f"mark.{MARK}")


def unmarked(root: Path = TESTS) -> tuple[list[str], list[str]]:
    """(tests that run Snakemake without the mark, every test that runs Snakemake), as ``path::name``."""
    files = sorted(p for p in root.rglob("*.py") if p.name.startswith("test_") or p.name == "conftest.py")
    files = [p for p in files if p != Path(__file__)]  # this file's strings name snakemake; it runs none
    modules = {p: read_module(p, root) for p in files}
    for module in list(modules.values()):
        for source, _ in module.imports.values():
            if source not in modules:
                modules[source] = read_module(source, root)
    runs = runners(modules, root)
    missing, running = [], []
    for path, module in modules.items():
        if not path.name.startswith("test_"):
            continue
        rel = path.relative_to(root.parent) if path.is_relative_to(root.parent) else path
        for test_id, func, class_marks in module.tests:
            if (path, test_id.replace("::", ".")) not in runs:
                continue
            running.append(f"{rel}::{test_id}")
            if not any(_is_mark(d) for d in [*func.decorator_list, *class_marks, *module.marks]):
                missing.append(f"{rel}::{test_id}")
    return missing, running


def test_every_test_that_runs_snakemake_is_marked_workflow():
    missing, running = unmarked()
    assert len(running) > 30  # the scan sees them (the workflow tests, dry runs, lint, tests/tf, tests/slurm)
    assert missing == [], (
        f"{len(missing)} test(s) run Snakemake without @pytest.mark.{MARK} "
        "(the fast lane, pytest -m 'not workflow', would run them):\n" + "\n".join(missing)
    )


def test_the_mark_is_registered():
    import tomllib

    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith(f"{MARK}:") for m in markers)


def test_the_scan_follows_helpers_fixtures_and_imports(tmp_path):
    root = tmp_path / "tests"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "conftest.py").write_text(
        "import pytest, subprocess, sys\n"
        "def run_snakemake(d):\n    return subprocess.run([sys.executable, '-m', 'snakemake', '-d', d])\n"
        "def snakemake_env():\n    return {'PATH': '/x/.snakemake'}\n"
        "@pytest.fixture(scope='session')\ndef finished_run(tmp_path_factory):\n    return run_snakemake('x')\n"
    )
    (root / "test_a.py").write_text(
        "import pytest, subprocess\n"
        "from .conftest import run_snakemake, snakemake_env\n"
        "def _dry(d):\n    return run_snakemake(d)\n"
        "@pytest.fixture(name='planned')\ndef _planned():\n    return _dry('y')\n"
        "def test_direct():\n    run_snakemake('a')\n"
        "def test_helper():\n    _dry('a')\n"
        "def test_fixture(finished_run):\n    pass\n"
        "def test_named_fixture(planned):\n    pass\n"
        "@pytest.mark.usefixtures('finished_run')\ndef test_usefixtures():\n    pass\n"
        "def test_shell():\n    subprocess.run('snakemake -n', shell=True)\n"
        "def test_env_only():\n    snakemake_env()\n"
        "def test_names_it():\n    assert 'snakemake' in ['snakemake-executor-plugin-slurm']\n"
        "@pytest.mark.workflow\ndef test_marked():\n    run_snakemake('a')\n"
        "@pytest.mark.workflow\nclass TestRuns:\n    def test_in_class(self, finished_run):\n        pass\n"
        "class TestOther:\n    def test_unmarked_in_class(self):\n        _dry('b')\n"
    )
    (root / "sub" / "test_b.py").write_text(
        "import pytest\nfrom ..test_a import _dry\n"
        "pytestmark = [pytest.mark.workflow]\n"
        "def test_module_marked():\n    _dry('c')\n"
    )
    (root / "sub" / "test_c.py").write_text("from ..test_a import _dry\ndef test_imported_helper():\n    _dry('c')\n")
    missing, running = unmarked(root)
    unmarked_ids = {
        "test_direct", "test_helper", "test_fixture", "test_named_fixture", "test_usefixtures", "test_shell",
        "TestOther::test_unmarked_in_class",
    }  # fmt: skip
    assert sorted(missing) == sorted([f"tests/test_a.py::{t}" for t in unmarked_ids] + ["tests/sub/test_c.py::test_imported_helper"])
    assert set(running) == set(missing) | {
        "tests/test_a.py::test_marked", "tests/test_a.py::TestRuns::test_in_class", "tests/sub/test_b.py::test_module_marked",
    }  # fmt: skip
