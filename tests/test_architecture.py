"""The layers of docs/architecture.md: data flows one way, no module imports from a layer above its own,
and no two modules import each other (module-level imports; imports inside functions are for heavy
libraries and the CLI's lazy loading)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "src" / "reflectevo"

#: packages and modules of reflectevo, lowest layer first (docs/architecture.md)
LAYERS = [
    {"errors"},
    {"records", "registry", "runs", "progress"},
    {"verify", "prompts", "backends", "config", "options"},
    {"tasks", "formats"},
    {"training", "report"},
    {"stages"},
    {"cli", "reflectevo"},
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_imports() -> dict[str, set[str]]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("reflectevo"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("reflectevo")}
        found[name] = deps
    return found


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "reflectevo"


def test_every_part_has_a_layer():
    assert {part(m) for m in module_imports()} <= set(LEVEL)


def test_no_import_reaches_a_higher_layer():
    upward = [f"{m} imports {d}" for m, deps in module_imports().items() for d in deps
              if LEVEL[part(d)] > LEVEL[part(m)]]
    assert not upward


def test_no_import_cycles():
    graph = module_imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                return path + [dep]
            if dep in graph and dep not in state:
                cycle = visit(dep, path + [dep])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for start in graph:
        if start not in state:
            assert visit(start, [start]) is None
