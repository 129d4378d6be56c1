"""The package's layers: every import of a toolkit module points down (or across), never up, and never in a cycle.

Imports are read from the source (ast), function-level ones included: an import moved into a
function to dodge a cycle is still a dependency. Importing `toolkit.a.b` also runs the package
`toolkit.a` (its __init__), so that counts as an import too, unless the importer is inside that
package (then the package is already running). A new module must be given a layer here.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "toolkit"

# Lowest first. A name covers the module and, for a package, everything under it.
LAYERS = [
    ("base", ["toolkit", "toolkit.errors", "toolkit.files", "toolkit.versions", "toolkit.timing", "toolkit.paths",
              "toolkit.rpc"]),
    ("formats and runtime", ["toolkit.onnx_file", "toolkit.parity", "toolkit.reference", "toolkit.runtime", "toolkit.target"]),
    ("stages", ["toolkit.cuda", "toolkit.train", "toolkit.export", "toolkit.simplify", "toolkit.optimize", "toolkit.tvm_support",
                "toolkit.kv_cache", "toolkit.schedules", "toolkit.records", "toolkit.nan", "toolkit.fast_math", "toolkit.tune",
                "toolkit.quantize", "toolkit.engine", "toolkit.compile"]),
    ("model sources", ["toolkit.sources", "toolkit.corpus"]),
    ("tools", ["toolkit.bench", "toolkit.compare", "toolkit.inspect", "toolkit.profile", "toolkit.generate",
               "toolkit.serve", "toolkit.deploy", "toolkit.loadtest", "toolkit.runner", "toolkit.reduce"]),
    ("cli", ["toolkit.cli", "toolkit.__main__"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    names = module.split(".")
    for end in range(len(names), 0, -1):
        prefix = ".".join(names[:end])
        if prefix == "toolkit" and module != "toolkit":
            break  # the package itself is base; its submodules need a layer of their own
        for index, (_, members) in enumerate(LAYERS):
            if prefix in members:
                return index
    return None


def imports_of(module: str) -> set[str]:
    """The toolkit modules `module` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    found |= {package for name in found for package in _packages_above(name) if not _is_inside(module, package)}
    return {name for name in found if name in MODULES and name != module}


def _packages_above(name: str) -> list[str]:
    """The packages whose __init__ runs before `name` does, the top-level one (toolkit) left out."""
    parts = name.split(".")
    return [".".join(parts[:end]) for end in range(2, len(parts))]


def _is_inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if layer_of(m) is None]
    assert not missing, f"give these modules a layer in tests/test_layers.py: {missing}"


def test_imports_point_down_the_layers():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items() for target in sorted(targets)
        if layer_of(module) is not None and layer_of(target) is not None and layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_no_import_cycle():
    cycles = [sorted(component) for component in strongly_connected(GRAPH) if len(component) > 1]
    assert not cycles, f"import cycles: {cycles}"


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
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
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


@pytest.mark.parametrize("graph, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [{"a", "b", "c"}]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, cyclic):
    assert [c for c in strongly_connected(graph) if len(c) > 1] == cyclic
