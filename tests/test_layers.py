"""The layer rule: imports point down the lifecycle, lazy imports included, and nothing closes a cycle.

    core -> config, templates -> data -> models -> evaluation -> tasks -> training -> spec -> runs
         -> inference, report -> optimize, deploy, trust -> verbs -> api, cli

(read right to left: a package may import its own layer's packages and any lower one). The check
walks every module's AST, so an `import` inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[set[str]] = [
    {"core"},
    {"config", "templates"},
    {"data"},
    {"models"},
    {"evaluation"},
    {"tasks"},
    {"training"},
    {"spec"},
    {"runs"},
    {"inference", "report"},
    {"optimize", "deploy", "trust"},
    {"verbs"},
    {"api", "cli", "__main__", "__init__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` under `root` by dotted name (a package's __init__ under the package's name)."""
    out = {}
    for path in (root / package).rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(path: Path, name: str, modules: dict[str, Path], package: str) -> set[str]:
    """The modules of `package` that the module `name` imports anywhere in its body (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` names the submodule when there is one, else the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import damoxing.a.b.c` where c is a name: its module
                target = target.rpartition(".")[0]
            if target.startswith(package) and target != name:
                found.add(target)
    return found


def import_graph(root: Path = SRC, package: str = "damoxing") -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {name: imports_of(path, name, modules, package) for name, path in modules.items()}


def layer_of(module: str, package: str = "damoxing") -> str:
    rest = module[len(package) + 1:] if module != package else "__init__"
    return rest.split(".")[0]


def wrong_way_imports(graph: dict[str, set[str]], package: str = "damoxing") -> list[str]:
    """'a -> b' for every import from a lower layer to a higher one (or to a package with no layer)."""
    bad = []
    for module, targets in graph.items():
        here = layer_of(module, package)
        for target in sorted(targets):
            there = layer_of(target, package)
            if here not in RANK or there not in RANK:
                bad.append(f"{module} -> {target} (no layer for '{here if here not in RANK else there}': add it to LAYERS)")
            elif RANK[there] > RANK[here]:
                bad.append(f"{module} -> {target} ({here} is below {there})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down_the_layers():
    bad = wrong_way_imports(import_graph())
    assert bad == [], "imports that point up the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_every_package_has_a_layer():
    packages = {p.name for p in (SRC / "damoxing").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in (SRC / "damoxing").glob("*.py")}
    assert (packages | modules) - set(RANK) == set()


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "damoxing" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_check_catches_a_wrong_way_import_even_a_lazy_one(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/errors.py": "",
        "data/__init__.py": "",
        "data/pipeline.py": "from damoxing.core.errors import X\n\ndef f():\n    from damoxing.models.mlp import MLP\n",
        "models/__init__.py": "",
        "models/mlp.py": "from ..data import pipeline\n",
    })
    graph = import_graph(root)
    assert graph["damoxing.models.mlp"] == {"damoxing.data.pipeline"}  # a relative import resolved
    assert wrong_way_imports(graph) == ["damoxing.data.pipeline -> damoxing.models.mlp (data is below models)"]
    assert cycles(graph) == [["damoxing.data.pipeline", "damoxing.models.mlp"]]


def test_the_check_passes_a_tree_that_points_down(tmp_path):
    root = _tree(tmp_path, {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/errors.py": "",
        "models/__init__.py": "from damoxing.models import mlp\n",
        "models/mlp.py": "import damoxing.core.errors\nfrom damoxing.core import errors\n",
    })
    graph = import_graph(root)
    assert graph["damoxing.models"] == {"damoxing.models.mlp"}
    assert graph["damoxing.models.mlp"] == {"damoxing.core.errors"}
    assert wrong_way_imports(graph) == [] and cycles(graph) == []


def test_imports_by_layer_summary():
    """Which layers each layer uses (kept as a readable picture of the house; fails only on nonsense)."""
    uses = defaultdict(set)
    for module, targets in import_graph().items():
        for target in targets:
            if layer_of(target) != layer_of(module):
                uses[layer_of(module)].add(layer_of(target))
    assert "core" not in uses  # the ground floor imports nothing of ours
