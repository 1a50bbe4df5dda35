"""Static checks on the emulator's own layout: no import cycle, no import inside a function, no long function.

``python -m stripe_emulator.layout_check`` parses every module of the package
with ``ast`` (nothing is imported, so a cycle cannot hide behind import order)
and exits non-zero on a finding. Imports under ``if TYPE_CHECKING:`` count:
a cycle that only type checkers see is still a cycle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MAX_FUNCTION_LINES = 80
# (importer, imported) pairs allowed inside a function, with the reason.
LAZY_IMPORTS = {("", "server"): "importing the package must not import Flask"}


def module_name(path: Path) -> str:
    """Dotted name inside the package: ``api/customers.py`` -> ``api.customers``, ``api/__init__.py`` -> ``api``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (the package itself is ``""``)."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(current: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """Package-internal modules an ``import``/``from ... import`` names (relative or absolute)."""
    if node.level == 0:
        module = node.module or ""
        if not module.startswith(PACKAGE.name):
            return []
        base = module[len(PACKAGE.name) :].lstrip(".")
    else:
        pkg = current.split(".") if current else []
        if not is_package:
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    # "from . import x" may name a module x; "from .m import y" names m (and maybe m.y)
    return [base] + [".".join(filter(None, [base, a.name])) for a in node.names]


def imports(name: str, path: Path, known: set) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, inside a function?) for each package-internal import of one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for n in ast.walk(fn) if n is not fn)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            targets = _resolve(name, is_package, node)
        elif isinstance(node, ast.Import):
            targets = [
                a.name[len(PACKAGE.name) :].lstrip(".") for a in node.names if a.name.split(".")[0] == PACKAGE.name
            ]
        else:
            continue
        for target in dict.fromkeys(t for t in targets if t in known and t != name):
            yield target, node.lineno, id(node) in inside


def find_cycle(graph: dict[str, set]) -> list[str]:
    """One import cycle as a path ``[a, b, ..., a]``, or ``[]``."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


def long_functions(path: Path) -> Iterator[tuple[str, int, int]]:
    """(name, first line, length) of every function longer than MAX_FUNCTION_LINES."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1  # ast.parse sets end_lineno
            if length > MAX_FUNCTION_LINES:
                yield node.name, node.lineno, length


def _label(name: str) -> str:
    return ".".join(filter(None, [PACKAGE.name, name]))


def main() -> int:
    """Print every finding; exit status 1 if there is one."""
    mods = modules()
    graph: dict[str, set] = {name: set() for name in mods}
    problems: list[str] = []
    for name, path in mods.items():
        where = path.relative_to(PACKAGE.parent)
        for target, line, in_function in imports(name, path, set(mods)):
            if not target:  # "from . import x" also names the package itself, which only re-exports
                continue
            if in_function and (name, target) not in LAZY_IMPORTS:
                problems.append(f"{where}:{line}: import of {_label(target)} inside a function")
            if name:
                graph[name].add(target)
        for fn, line, length in long_functions(path):
            problems.append(f"{where}:{line}: {fn}() is {length} lines (max {MAX_FUNCTION_LINES})")
    cycle = find_cycle(graph)
    if cycle:
        problems.append("import cycle: " + " -> ".join(_label(m) for m in cycle))
    for problem in problems:
        print(problem)
    edges = sum(len(v) for v in graph.values())
    print(
        f"{len(mods)} modules, {edges} internal imports: "
        + (
            f"no cycle, no import inside a function, no function over {MAX_FUNCTION_LINES} lines"
            if not problems
            else f"{len(problems)} problem(s)"
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
