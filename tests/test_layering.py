"""The library's layering (timm-like): lower layers never import higher ones, and no import cycles.

Layers, low to high: base modules (errors, io, provenance, registry, config, schema, recipe,
session, mapfile, cli) -> data -> models -> metrics -> explain -> engine -> viz -> report ->
stages/pipeline. Imports are read from the source (module level and inside functions alike).
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dywsss"
LAYERS = {
    "errors": 0, "io": 0, "provenance": 0, "registry": 0, "config": 0, "schema": 0, "recipe": 0, "session": 0,
    "mapfile": 0, "cli": 0, "data": 1, "models": 2, "metrics": 3, "explain": 4, "engine": 5, "viz": 6,
    "report": 7, "stages": 8, "pipeline": 8, "study": 9,
}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute dywsss module names a file imports."""
    me = module_name(path).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            if target.startswith("dywsss"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("dywsss"))
    return out


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_top_level_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PKG.iterdir() if not p.name.startswith("_") and
             (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert names <= set(LAYERS), f"give these a layer: {sorted(names - set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in PKG.rglob("*.py"):
        mine = layer(module_name(path))
        for target in imports_of(path):
            theirs = layer(target)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module_name(path)} (layer {mine}) imports {target} (layer {theirs})")
    assert bad == []


def test_no_import_cycles_between_modules():
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: {t for t in imports_of(p) if t in modules and t != m} for m, p in modules.items()}
    for m in graph:  # a package's __init__ importing its own submodules is how registries fill; not a cycle
        graph[m] = {t for t in graph[m] if not (t.startswith(m + ".") and modules[m].name == "__init__.py")}
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert cycles == []
