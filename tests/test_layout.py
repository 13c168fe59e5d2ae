"""The house's shape, checked: folders by purpose, each import pointing down the layers, no import circle.

The import graph counts every `import`/`from ... import` of w2s_cli in a module, at its top or inside a
function (a lazy import is still a dependency). Layers, lowest first: a module may import its own layer and
those below, never one above.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "w2s_cli"
LAYERS = [
    ("errors", "progress"),
    ("numerics",),
    ("distributed",),
    ("store",),
    ("options",),
    ("inputs",),
    ("extraction",),
    ("finetuning",),
    ("stages",),  # the pipeline's stages: what one subcommand of the chain does
    ("diagnostics",),  # intrinsic dimension, gradient features, kernel-check, finetune predictions
    ("studies",),  # run, sweep, ranking, executors, cost
    ("report",),
    ("cli",),
    ("__init__", "__main__"),
]
LEVEL = {room: k for k, rooms in enumerate(LAYERS) for room in rooms}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the w2s_cli modules it imports (a `from package import name` counts the submodule `name`
    when there is one, else the package)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "w2s_cli":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[name].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.split(".")[0] == "w2s_cli")
        graph[name].discard(name)
    return graph


def room(module: str) -> str:
    """The top-level room of a module: w2s_cli.stages.student -> stages; w2s_cli.errors -> errors."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def test_every_room_has_a_layer():
    rooms = {room(m) for m in modules()}
    assert rooms <= set(LEVEL), f"rooms without a layer: {sorted(rooms - set(LEVEL))}"


def test_no_upward_import():
    upward = [
        f"{m} -> {t}" for m, targets in import_graph().items() for t in targets if LEVEL[room(t)] > LEVEL[room(m)]
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    """Tarjan's strongly connected components of the module graph: every one is a single module."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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
                circles.append(sorted(component))

    for v in list(modules()):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_no_folder_holds_more_than_ten_modules():
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        assert count <= 10, f"{folder.relative_to(PACKAGE.parent)} holds {count} modules"


def test_every_folder_says_what_it_is_for():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(PACKAGE.parent)} has no docstring saying what the folder is for"
