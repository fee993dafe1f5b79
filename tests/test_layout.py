"""The package's layout: one module per verb, and imports that run one way.

The import graph is read from the source with `ast` (every `import` and
`from ... import` of a mlx_native_server module, those inside functions
included, since a lazy import is still a dependency), so these tests import
nothing heavy and name the exact line to fix.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from mlx_native_server import cli

PACKAGE = "mlx_native_server"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# The layers, top to bottom: a module may import modules of its own layer and
# of any layer below it, never one above. Layers on one line are peers that
# do not import each other. A layer is a subpackage, a top-level module
# (`__init__` is the package itself: __version__) or, where a module sits
# lower than the rest of its package, that module (the most specific wins).
LAYERS: list[tuple[str, ...]] = [
    ("__main__",),
    ("cli",),  # picks a verb
    ("commands",),  # one module per verb: flags -> settings -> the layers below
    ("server",),  # the server process: engine + HTTP + watchdog
    ("http",),  # uvicorn, the ASGI app, routes, admission, metrics
    ("api",),  # the three APIs over one streaming skeleton
    ("engine",),  # generation: policy over mlx-lm's engine
    ("service",),  # the login service (install checks the model it would serve)
    ("models",),  # getting a model: download, convert, install, the demo model
    ("upstream",),  # managing the mlx-lm install
    ("cache", "memory"),  # the prompt cache; the memory plan and the device
    ("adapter",),  # the one door to mlx-lm's internals
    ("engine.types",),  # requests, events and engine errors: what the door speaks, no mlx
    ("core", "__init__"),  # settings, paths, errors, processes, logs: stdlib only
]
LEVEL = {unit: i for i, peers in enumerate(LAYERS) for unit in peers}


@functools.cache
def module_files() -> dict[str, Path]:
    """Dotted module name -> its file, for every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, package: str, modules: set[str]) -> set[str]:
    """The package modules one import statement loads: the most specific
    module each name resolves to (`from .x import y` is x.y when y is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parent = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(parent + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in modules:  # `import a.b.C`: the module a.b
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


@functools.cache
def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported package module: line of the first such import}."""
    files = module_files()
    modules = set(files)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, package, modules) - {name}:
                    edges[target] = min(edges.get(target, node.lineno), node.lineno)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}  # "open" while on the path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def unit(module: str) -> str:
    """The layer a module belongs to: the longest name in LAYERS that it is
    or lies under; else its subpackage (or top-level module)."""
    parts = module.split(".")[1:] or ["__init__"]
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LEVEL:
            return ".".join(parts[:n])
    return parts[0]


def _where(module: str, line: int) -> str:
    return f"{module_files()[module].relative_to(ROOT.parent)}:{line}"


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_sits_in_a_layer():
    unplaced = sorted({unit(m) for m in module_files()} - set(LEVEL))
    assert not unplaced, f"put {unplaced} into LAYERS (tests/test_layout.py) at its level"


def test_imports_run_one_way_from_commands_down_to_core():
    wrong = []
    for module, edges in sorted(import_graph().items()):
        for target, line in sorted(edges.items()):
            a, b = unit(module), unit(target)
            if a != b and LEVEL[a] >= LEVEL[b]:
                how = "its peer" if LEVEL[a] == LEVEL[b] else "the higher layer"
                wrong.append(
                    f"{_where(module, line)}: {module} imports {target} "
                    f"({a} must not import {how} {b})"
                )
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_cycle_and_a_lazy_import():
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    # Function-level imports count: start imports the server only to serve.
    assert f"{PACKAGE}.server" in import_graph()[f"{PACKAGE}.commands.start"]


def test_every_verb_is_a_commands_module_with_main():
    """Read, not imported: some verbs load mlx-lm (seconds) on import."""
    for verb, (name, help_line) in cli.VERBS.items():
        path = ROOT / "commands" / f"{name}.py"
        assert path.is_file(), f"{verb}: no module commands/{name}.py"
        mains = [
            f
            for f in ast.parse(path.read_text("utf-8")).body
            if isinstance(f, ast.FunctionDef) and f.name == "main"
        ]
        assert mains, f"{verb}: commands/{name}.py has no top-level main"
        assert [a.arg for a in mains[0].args.args] == ["argv"], f"{verb}: main(argv) -> int"
        assert help_line, verb


def test_every_commands_module_is_a_verb():
    """One module per verb: a module of commands/ no verb reaches is dead
    code or a helper that wants a leading underscore."""
    verbs = {name for name, _ in cli.VERBS.values()}
    found = {p.stem for p in (ROOT / "commands").glob("*.py") if not p.stem.startswith("_")}
    assert found == verbs
