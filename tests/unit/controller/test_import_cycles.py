"""No import cycles through the controller: every ``import`` statement of the source tree (also
those under ``TYPE_CHECKING`` and inside functions, which a cycle hides behind) is read with
``ast``, and the strongly connected components of that graph are found.

The repo's top-level folders are sub-packages of ``tickrun`` (setup.py's ``package_dir``), which
the import-graph libraries cannot follow from the folders, hence this small walk."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
ROOTS = {
    "tickrun": "tickrun",
    "tickrun.functions": "functions",
    "tickrun.triggers": "triggers",
    "tickrun.controller": "controller",
    "tickrun.hub": "hub",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is a package's ``__init__``)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package, folder in ROOTS.items():
        base = REPO / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            if "__pycache__" in rel.parts or (folder == "tickrun" and len(rel.parts) > 1):
                continue
            is_init = rel.name == "__init__"
            parts = rel.parts[:-1] if is_init else rel.parts
            found[".".join((package, *parts))] = (path, is_init)
    return found


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module ``name`` names, or the closest enclosing one of ours."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, modules: dict[str, tuple[Path, bool]]) -> Iterator[str]:
    path, is_init = modules[module]
    package = module if is_init else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import name`: the submodule when there is one, else the package.
            targets = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != module:
                yield known


def import_cycles() -> list[list[str]]:
    """Every group of our modules that import each other (Tarjan's strongly connected
    components of more than one module)."""
    modules = _modules()
    graph = {m: sorted(set(_imports(m, modules))) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_the_walk_sees_the_controllers_imports() -> None:
    # Guards the walk itself: a resolver that found nothing would pass the cycle check.
    modules = _modules()
    assert set(_imports("tickrun.controller.reconciler", modules)) >= {
        "tickrun.controller.endpoints",
        "tickrun.controller.portgateway",
        "tickrun.functions.errors",
    }
    assert "tickrun.controller.endpoints" in set(_imports("tickrun.controller.gateway", modules))


def test_no_import_cycle_runs_through_the_controller() -> None:
    through = [c for c in import_cycles() if any(m.startswith("tickrun.controller") for m in c)]
    assert through == []
