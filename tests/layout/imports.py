"""The import graph of the project's packages, read from their source (no import runs).

An edge A -> B means module A has an import statement that names module B: `import B`,
`from B import x` (and `from A_pkg import sub` names the submodule when `sub` is one).
Every import counts, those inside functions and under `if TYPE_CHECKING:` too, so a
circle cannot hide behind a deferred import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path


def modules(roots: Iterable[tuple[Path, str]]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py of each (root directory, package) (a
    package's ``__init__.py`` is the package's own name)."""
    found: dict[str, Path] = {}
    for root, package in roots:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(module: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules among `known` that `module`'s import statements name (relative imports
    resolved; ``from pkg import sub`` names ``pkg.sub`` when that is a module, else ``pkg``).
    """
    known = set(known)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    named: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                named.add(submodule if submodule in known else target)
    return {name for name in named if name in known and name != module}


def graph(roots: Iterable[tuple[Path, str]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    known = modules(roots)
    return {module: imports(module, path, known) for module, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found
