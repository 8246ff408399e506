"""The package's imports run one way: no cycle among its modules, function-level imports included.

The graph is read from the source (ast), so an import hidden inside a function counts like one at
the top. An import of a.b.c is an edge to a.b.c alone (its parent packages' __init__ files are
where Python starts, not what the importing module depends on).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bezier_kernels", "bezier_distill", "benchmarks")
EXTENSIONS = ("bezier_kernels._C",)  # compiled by setup.py: leaves of the graph


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package is its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def known_modules() -> set[str]:
    return set(module_files()) | set(EXTENSIONS)


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The project modules that module `name` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.name` style: the longest module prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    graph = {v: {w for w in targets if w in graph} for v, targets in graph.items()}
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def project_graph() -> dict[str, set[str]]:
    modules = known_modules()
    return {name: imports_of(name, path, modules) for name, path in module_files().items()}


def test_the_graph_reader_sees_relative_and_function_level_imports():
    graph = project_graph()
    assert "bezier_distill.stages" in graph["bezier_distill.cli"]                 # from . import stages
    assert "bezier_distill.config" in graph["bezier_distill.data"]                 # from .config import DataConfig
    assert "bezier_distill.errors" in graph["bezier_distill.config.loader"]       # from ..errors import ...
    assert "bezier_distill.evaluation.plots" in graph["bezier_distill.stages"]   # inside sample()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_project_modules():
    found = cycles(project_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_leaf_modules_import_nothing_of_the_pipeline():
    graph = project_graph()
    assert graph["bezier_distill.errors"] == set()
    config = {name for name in graph if name.startswith("bezier_distill.config")}
    for name in config:
        assert graph[name] <= config | {"bezier_distill.errors", "bezier_kernels"}, (name, graph[name])


def test_validating_a_config_reads_no_data_set():
    """Checking a config is pure: naming the digits does not load scikit-learn or the data module."""
    code = ("import sys; from bezier_distill.config import load_stage; "
            "load_stage('teacher', {'teacher': {'data': {'source': 'digits:0-4', 'target': 'digits:5-9'}}}); "
            "print(sorted(m for m in ('sklearn', 'bezier_distill.data', 'bezier_distill.store') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports(package):
    """Each module imports on its own (no order dependence hidden by the graph being acyclic)."""
    names = [name for name in module_files() if name.split(".")[0] == package and not name.endswith("__main__")]
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
