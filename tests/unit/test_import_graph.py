"""No import circles: each package reads bottom-up, a module importing only the ones below it.

Every ``import`` counts, inside functions and ``if TYPE_CHECKING:`` blocks too, and a package
is its ``__init__``: ``from pkg import name`` is an edge to ``pkg`` (and to ``pkg.name`` when
that is a module), so an ``__init__`` that imports its submodules closes a circle with any
of them that imports the package back.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Folders scanned, each with the folder its module names start from.
ROOTS: tuple[tuple[str, str], ...] = (
    ("layers/shared/klaviyo_leads", "layers/shared"),
    ("functions", ""),
    ("devtools", ""),
    ("bench", ""),
)


def modules(repo: Path, roots: Iterable[tuple[str, str]]) -> dict[str, Path]:
    """Module name -> file, for every ``.py`` under the roots."""
    found: dict[str, Path] = {}
    for folder, base in roots:
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, package: str) -> Iterator[str]:
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        yield module
        yield from (f"{module}.{alias.name}" for alias in node.names)


def import_graph(found: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the scanned modules it imports."""
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text("utf-8"), str(path))
        graph[name] = {
            target
            for node in ast.walk(tree)
            for target in _targets(node, package)
            if target in found and target != name
        }
    return graph


def circles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles() -> None:
    found = modules(REPO, ROOTS)
    assert len(found) > 50, "the scan found too few modules: are the roots right?"
    assert circles(import_graph(found)) == []


def test_the_scan_sees_a_circle_through_a_package_init(tmp_path: Path) -> None:
    package = tmp_path / "devtools" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "devtools" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .top import run\n")
    (package / "top.py").write_text("def run() -> None:\n    from .low import helper\n")
    (package / "low.py").write_text("from . import errors\n")
    (package / "errors.py").write_text("")
    graph = import_graph(modules(tmp_path, ROOTS))
    assert circles(graph) == [["devtools.pkg", "devtools.pkg.low", "devtools.pkg.top"]]
