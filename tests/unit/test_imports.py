"""The worker's modules import each other in one direction: no cycle, lazy imports included.

A subpackage (feel, operations) counts as one module here: what happens inside it is its own."""

import ast
from pathlib import Path

import servicenow_worker

PACKAGE = Path(servicenow_worker.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level(name: str) -> str:
    """servicenow_worker.feel._values -> servicenow_worker.feel"""
    return ".".join(name.split(".")[:2])


def imports_of(path: Path) -> set[str]:
    """Every servicenow_worker module `path` imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.startswith("servicenow_worker")}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = {top_level(other) for other in imports_of(path) if other in modules}
        graph.setdefault(top_level(name), set()).update(imported - {top_level(name)})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                found.append([*path[path.index(successor) :], successor])
            elif successor not in state:
                visit(successor, [*path, successor])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "servicenow_worker.app" in graph["servicenow_worker.cli"]
    assert "servicenow_worker.app" in graph["servicenow_worker.demo"]
    assert cycles(graph) == []


def test_a_cycle_is_found() -> None:
    """The search above can fail: the cycle app ⇄ demo as it was before cli.py."""
    graph = import_graph() | {"servicenow_worker.app": {"servicenow_worker.demo"}}
    assert ["servicenow_worker.app", "servicenow_worker.demo", "servicenow_worker.app"] in cycles(
        graph
    )
