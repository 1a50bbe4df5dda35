"""The shape of `app/`: no module imports one that imports it back, and the lower layers import at the top.

The import graph is read from the source with `ast` (nothing is imported): every `import app…` and
`from app… import name` — at the top of a module or inside a function — is an edge, `from app.pkg import name`
meaning the module `app.pkg.name` when there is one, else `app.pkg`. The implicit import of a module's parent
package is no edge, and neither are imports under `if TYPE_CHECKING:` (SQLAlchemy relationships between models).
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
#: Where no import may sit inside a function (a function-level import is how a cycle hides): anywhere.
NO_INNER_IMPORTS = ("app",)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in APP.rglob("*.py")}


def within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """The app modules one import statement imports."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [name for name in names if name in MODULES and name != module]


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every app import of `module`, TYPE_CHECKING blocks aside."""
    path = MODULES[module]
    found: list[tuple[str, int, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend(
                    (target, child.lineno, in_function) for target in targets(module, child, path.name == "__init__.py")
                )
            walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    walk(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: {target for target, _, _ in imports_of(module)} for module in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read():
    graph = import_graph()
    assert "app.services.sync" in graph["app.services.webhook_handlers"]
    assert "app.services.queries" in graph["app.services.entitlements"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_app_imports_one_that_imports_it_back():
    found = cycles(import_graph())
    assert found == [], f"import cycles among app modules: {found}"


def test_every_module_imports_at_the_top():
    inner = []
    for module, path in MODULES.items():
        if not within(module, NO_INNER_IMPORTS):
            continue
        for function in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                inner += [
                    f"{module}:{node.lineno} {ast.unparse(node)}"
                    for node in ast.walk(function)
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                ]
    assert inner == [], "imports inside functions: " + "; ".join(sorted(set(inner)))


def test_stripe_is_asked_only_through_the_gateways_named_operations():
    """Only `stripe_gateway` imports `stripe` or reaches the client; the rest call its named operations."""
    gateway_module = "app.services.stripe_gateway"
    found = []
    for module, path in MODULES.items():
        if module == gateway_module:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "stripe" for alias in node.names):
                found.append(f"{module} imports stripe")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "stripe":
                found.append(f"{module} imports from stripe")
            elif isinstance(node, ast.ImportFrom) and node.module == gateway_module:
                found += [
                    f"{module} imports {alias.name}"
                    for alias in node.names
                    if alias.name in ("gateway", "StripeGateway", "stripe_request")
                ]
    assert found == []


def test_the_emulator_keeps_its_layout():
    """`python -m stripe_emulator.layout_check`: no import cycle, no function-level import, no function over 80 lines."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "stripe_emulator.layout_check"],
        capture_output=True,
        text=True,
        cwd=APP.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
