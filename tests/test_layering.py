"""The import structure: no circle between files or folders, and the layers' rules.

Every project file's imports, module-level and inside functions, are read with `ast` (nothing is run).
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ["arch", "benchmarks", "dataset", "evaluate", "export", "prune", "run", "scripts", "tasks", "utils"]
REGISTRIES = ["prune/registry.py", "tasks/registry.py", "export/registry.py", "arch/registry.py"]


def _project_files() -> list[str]:
    files = ["main.py"]
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            files += [os.path.relpath(os.path.join(folder, n), ROOT) for n in names if n.endswith(".py")]
    return sorted(files)


def _module_file(module: str) -> str | None:
    path = module.replace(".", "/")
    for candidate in (path + ".py", path + "/__init__.py"):
        if os.path.isfile(os.path.join(ROOT, candidate)):
            return candidate
    return None


def _imports(file: str) -> set[str]:
    """The project files `file` imports (a `from package import submodule` counts as the submodule)."""
    tree = ast.parse(open(os.path.join(ROOT, file)).read())
    package = os.path.dirname(file).replace("/", ".")
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in parts + ([base] if base else []) if p)
            targets = [f"{base}.{a.name}" if _module_file(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for module in targets:
            target = _module_file(module)
            if target and target != file:
                found.add(target)
    return found


def _folder(file: str) -> str:
    return file.split("/")[0] if "/" in file else file


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of nodes, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


GRAPH = {f: _imports(f) for f in _project_files()}


def test_the_reader_sees_the_imports_it_must():
    """A check that can fail: the parser finds known edges, in-function ones included."""
    assert "prune/registry.py" in GRAPH["prune/budgets.py"]
    assert "tasks/registry.py" in GRAPH["main.py"] and "export/hf_folder.py" in GRAPH["main.py"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_files():
    assert _cycle(GRAPH) is None, f"import cycle: {' -> '.join(_cycle(GRAPH))}"


def test_no_import_cycle_between_folders():
    folders: dict[str, set[str]] = {}
    for file, targets in GRAPH.items():
        folders.setdefault(_folder(file), set()).update(_folder(t) for t in targets if _folder(t) != _folder(file))
    assert _cycle(folders) is None, f"folders import each other: {' -> '.join(_cycle(folders))}"


@pytest.mark.parametrize("folder, forbidden", [
    ("prune", {"dataset", "tasks", "export", "run", "evaluate", "main.py", "scripts", "benchmarks"}),
    ("utils", set(PACKAGES + ["main.py"]) - {"utils"}),
    ("arch", set(PACKAGES + ["main.py"]) - {"arch", "utils"}),
    ("dataset", {"evaluate", "prune", "tasks", "export", "run", "main.py", "scripts", "benchmarks"}),
])
def test_layers_import_only_below_them(folder, forbidden):
    bad = sorted((f, t) for f, targets in GRAPH.items() if _folder(f) == folder
                 for t in targets if _folder(t) in forbidden)
    assert not bad, f"{folder}/ imports from a layer above it: {bad}"


@pytest.mark.parametrize("registry", REGISTRIES)
def test_registries_are_leaves(registry):
    assert GRAPH[registry] == set(), f"{registry} imports {sorted(GRAPH[registry])}"


def test_no_sys_path_bootstraps():
    """Entry scripts run from the project root as `python -m scripts.NAME` / `python -m benchmarks.NAME`."""
    offenders = [f for f in _project_files() if "sys.path.insert" in open(os.path.join(ROOT, f)).read()]
    assert offenders == []
